"""Benchmark runner, records and printers with a scripted model (exact, fast, no library).

The scripted model yields the runtime's real event types with real ``perf_counter`` times
(it sleeps a known time per token), so every number the runner derives can be checked
against what the script did. Tests on the real llama.cpp backend are in test_bench_llama.py.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.bench.printers import load_records, render, to_csv, to_markdown
from amalia_edge.bench.records import FIELDS, BenchRecord
from amalia_edge.bench.runner import (
    BenchConfig,
    TestSpec,
    make_tests,
    parse_test,
    percentile,
    run_bench,
)
from amalia_edge.device import DeviceInfo
from amalia_edge.errors import BackendError, BenchError
from amalia_edge.runtime.artifacts import Artifact
from amalia_edge.runtime.events import Event, Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.telemetry import Monitor
from amalia_edge.telemetry.system import SystemSampler
from tests.plugins.telemetry import KnownPowerSampler


class ScriptedModel:
    """Yields Started, PromptProcessed, TokenEvent..., Finished with known per-token delays.

    It has the attributes of :class:`amalia_edge.runtime.Model` the runner reads (a llama.cpp
    GGUF artifact, so bytes per token follow that backend's rule); it is its own session.
    """

    backend_name = "llama.cpp"
    n_ctx = 1024

    def __init__(self, prefill_per_token: float = 0.00002, itl: float = 0.002) -> None:
        self.prefill_per_token = prefill_per_token
        self.itl = itl
        self.calls: list[tuple[list[int], int]] = []
        self.interrupt_on_call: int | None = None
        self.closed = False
        self.artifact = Artifact("gguf", "TEST", Path("scripted.gguf"), size=1_000_000)

    @property
    def session(self) -> ScriptedModel:
        return self

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return [hash(w) % 1000 for w in text.split()]

    def stream(
        self, prompt: list[int], *, sampling: Any = None, max_tokens: int = 1
    ) -> Iterator[Event]:
        self.calls.append((list(prompt), max_tokens))
        if self.interrupt_on_call is not None and len(self.calls) >= self.interrupt_on_call:
            raise KeyboardInterrupt
        return self._gen(prompt, max_tokens)

    def _gen(self, prompt: list[int], max_tokens: int) -> Iterator[Event]:
        t_start = time.perf_counter()
        yield Started("scripted", "gguf:TEST", len(prompt), 1024, t_start)
        t0 = time.perf_counter()
        time.sleep(self.prefill_per_token * len(prompt))
        secs = time.perf_counter() - t0
        yield PromptProcessed(len(prompt), secs, time.perf_counter())
        toks = []
        for i in range(max_tokens):
            if i:
                time.sleep(self.itl)
            ev = TokenEvent("x", 7, i, time.perf_counter())
            toks.append(ev)
            yield ev
        yield Finished(
            "length",
            "x" * max_tokens,
            len(prompt),
            max_tokens,
            t_start,
            toks[0].t if toks else None,
            time.perf_counter(),
            secs,
        )

    def close(self) -> None:
        self.closed = True


def _monitor(power: KnownPowerSampler | None = None) -> Monitor:
    return Monitor([power or KnownPowerSampler(), SystemSampler()], interval=0.005)


def _run(
    model: ScriptedModel, tests: list[TestSpec], reps: int = 3, **kw: Any
) -> tuple[Any, list[tuple[Any, ...]]]:  # Any: tests compare Optional fields freely
    loads: list[tuple[Any, ...]] = []

    def load(
        path: Any, backend: Any = None, quant: Any = None, n_ctx: int = 0, **kw: Any
    ) -> ScriptedModel:
        loads.append((path, backend, quant, n_ctx, *kw.values()))
        return model

    monitor = kw.pop("monitor", None) or _monitor()
    cfg = BenchConfig(
        model="scripted.gguf",
        tests=tests,
        repetitions=reps,
        warmup=1,
        measure_bandwidth=False,
        **kw,
    )
    res = run_bench(cfg, load=load, monitor=monitor, device=_Dev())
    return res, loads


def _Dev() -> DeviceInfo:
    return DeviceInfo(
        is_jetson=False,
        arch="x86_64",
        cpu_model="test cpu",
        memory_bandwidth=int(204.8e9),
        memory_bandwidth_source="board table",
    )


# -- test names and counts ---------------------------------------------------------------------
def test_parse_test_names():
    assert parse_test("pp512") == TestSpec(512, 0)
    assert parse_test("tg128") == TestSpec(0, 128)
    assert parse_test("pp512+tg128") == TestSpec(512, 128)
    assert parse_test("pp512+tg128").name == "pp512+tg128"
    for bad in ("pp", "tg-1", "xx12", "pp512tg128", "pp0", "", "tg 12", "pp5+", "+tg5", "tg5+pp5"):
        with pytest.raises(BenchError):
            parse_test(bad)


def test_make_tests_like_llama_bench():
    assert [t.name for t in make_tests([512], [128])] == ["pp512", "tg128"]
    assert [t.name for t in make_tests([0], [16], ["pp8+tg4"])] == ["tg16", "pp8+tg4"]
    with pytest.raises(BenchError, match="negative"):
        make_tests([-1], [128])
    with pytest.raises(BenchError, match="no tests"):
        make_tests([0], [0])


@pytest.mark.parametrize("bad", [{"repetitions": 0}, {"warmup": -1}, {"interval": 0}])
def test_config_rejects_bad_counts(bad):
    with pytest.raises(BenchError):
        BenchConfig(model=None, **bad).validate()


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    xs = [5.0, 1.0, 9.0, 2.5, 7.0, 3.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


# -- numbers are derived from the events and self-consistent ----------------------------------
def test_tg_tokens_per_second_is_count_over_span():
    model = ScriptedModel(itl=0.002)
    res, loads = _run(model, [TestSpec(0, 8)], reps=3)
    (rec,) = res.records
    assert rec.test == "tg8" and rec.n_gen == 8 and len(rec.samples_ts) == 3
    # tgN asks for N+1 tokens so that exactly N decode steps are timed
    assert all(mt == 9 for _, mt in model.calls)
    assert len(model.calls) == 4  # 1 warm-up + 3 timed
    for ns, ts in zip(rec.samples_ns, rec.samples_ts, strict=True):
        assert ts == pytest.approx(8 / (ns / 1e9))
    assert rec.avg_ts == pytest.approx(sum(rec.samples_ts) / 3)
    # each decode step sleeps 2 ms, so the rate cannot exceed 500 tokens/s
    assert rec.avg_ts < 500
    assert rec.itl_p50_ms <= rec.itl_p90_ms <= rec.itl_p99_ms
    assert rec.itl_p50_ms >= 2.0
    assert rec.ttft_ms is not None and rec.e2e_ms > rec.ttft_ms
    assert loads == [("scripted.gguf", None, None, 32)]  # 1 + 9 + 2 rounded up to 32
    assert model.closed


def test_pp_uses_prefill_events_and_rotates_prompts():
    model = ScriptedModel(prefill_per_token=0.0001)
    res, _ = _run(model, [TestSpec(64, 0)], reps=2)
    (rec,) = res.records
    assert rec.test == "pp64"
    prompts = [p for p, _ in model.calls]
    assert all(len(p) == 64 for p in prompts)
    assert len({tuple(p) for p in prompts}) == len(prompts)  # no run can reuse a cached prefix
    assert all(mt == 1 for _, mt in model.calls)
    for ns, ts in zip(rec.samples_ns, rec.samples_ts, strict=True):
        assert ts == pytest.approx(64 / (ns / 1e9))
    assert rec.avg_ts < 64 / (64 * 0.0001)  # slept 0.1 ms per prompt token
    assert rec.itl_p50_ms is None  # one token: no inter-token latency


def test_pg_counts_prompt_and_generated_tokens():
    model = ScriptedModel()
    res, _ = _run(model, [TestSpec(16, 4)], reps=2)
    (rec,) = res.records
    assert rec.test == "pp16+tg4"
    for ns, ts in zip(rec.samples_ns, rec.samples_ts, strict=True):
        assert ts == pytest.approx(20 / (ns / 1e9))


def test_energy_is_integral_of_known_power():
    power = KnownPowerSampler({"VDD_GPU_SOC": (6.0, 3.0), "VDD_CPU_CV": (2.0, 0.0)})
    model = ScriptedModel(itl=0.004)
    res, _ = _run(model, [TestSpec(0, 16)], reps=3, monitor=_monitor(power))
    (rec,) = res.records
    assert rec.power_label == "known_sum"
    assert set(rec.rails_avg_w) == {"VDD_GPU_SOC", "VDD_CPU_CV"}
    assert rec.rails_avg_w["VDD_CPU_CV"] == pytest.approx(2.0)
    assert rec.telemetry_samples > 0
    # The runner integrated over the timed spans; recompute the exact energy of those spans.
    spans_s = [ns / 1e9 for ns in rec.samples_ns]
    tokens = 16 * 3
    assert rec.energy_j * 3 == pytest.approx(rec.joules_per_token * tokens)
    assert rec.tokens_per_joule == pytest.approx(1 / rec.joules_per_token)
    assert rec.power_avg_w == pytest.approx(rec.energy_j * 3 / sum(spans_s))
    # power ramps at 3 W/s: average lies between the known bounds of the run
    assert 8.0 < rec.power_avg_w < 8.0 + 3.0 * 10
    assert rec.power_peak_w >= rec.power_avg_w
    assert rec.rails_peak_w["VDD_GPU_SOC"] >= rec.rails_avg_w["VDD_GPU_SOC"]


def test_energy_matches_exact_integral_over_each_span(monkeypatch):
    """Capture the spans the runner integrates and compare with the analytic integral."""
    import amalia_edge.bench.runner as runner_mod

    power = KnownPowerSampler({"R": (5.0, 10.0)})
    spans: list[tuple[float, float]] = []
    real = runner_mod.timed_span

    def spy(test: TestSpec, trace: Any) -> Any:
        t = real(test, trace)
        spans.append((t.t0, t.t1))
        return t

    monkeypatch.setattr(runner_mod, "timed_span", spy)
    res, _ = _run(ScriptedModel(itl=0.003), [TestSpec(0, 12)], reps=3, monitor=_monitor(power))
    (rec,) = res.records
    assert len(spans) == 3  # warm-up runs are not timed
    exact = sum(power.exact_energy(a, b) for a, b in spans)
    assert rec.energy_j * 3 == pytest.approx(exact, rel=0.02)


def test_no_power_source_is_none_not_zero():
    mon = Monitor([SystemSampler()], interval=0.005)
    res, _ = _run(ScriptedModel(), [TestSpec(0, 4)], reps=2, monitor=mon)
    (rec,) = res.records
    assert rec.power_avg_w is None and rec.joules_per_token is None and rec.energy_j is None
    assert rec.peak_rss and rec.peak_rss > 0
    assert "known_power" not in " ".join(rec.telemetry_sources)


def test_roofline_from_bytes_per_token_and_bandwidth():
    class Art:
        quant = "Q4_K_M"
        path = "m.gguf"
        params = 9_000_000_000
        weight_bytes = 5_000_000_000
        decode_weight_bytes = 4_000_000_000
        size = 5_100_000_000
        shape = None

    model = ScriptedModel()
    model.artifact = Art()  # type: ignore[assignment]
    res, _ = _run(model, [TestSpec(0, 4)], reps=2)
    (rec,) = res.records
    assert rec.quant == "Q4_K_M" and rec.model_type == "llama 9B Q4_K_M"
    assert rec.model_size == 5_000_000_000 and rec.bytes_per_token == 4_000_000_000
    assert rec.achieved_bandwidth == pytest.approx(4e9 * rec.avg_ts)
    assert rec.roofline_fraction == pytest.approx(rec.achieved_bandwidth / 204.8e9)
    assert rec.memory_bandwidth_source == "board table"


# -- matrix, failures, interrupt ---------------------------------------------------------------
def test_matrix_backends_by_quants_and_load_error_once():
    calls: list[tuple[Any, Any]] = []

    def load(path: Any, backend: Any = None, quant: Any = None, n_ctx: int = 0) -> ScriptedModel:
        calls.append((backend, quant))
        if quant == "Q2_K":
            raise BackendError("llama.cpp could not load m-Q2_K.gguf", fix="re-run quantize")
        return ScriptedModel()

    cfg = BenchConfig(
        model="m",
        tests=[TestSpec(0, 2), TestSpec(8, 0)],
        repetitions=3,
        backends=["llama.cpp", "onnxruntime"],
        quants=["Q4_K_M", "Q2_K"],
        measure_bandwidth=False,
    )
    res = run_bench(cfg, load=load, monitor=_monitor(), device=_Dev())
    assert calls == [
        ("llama.cpp", "Q4_K_M"),
        ("llama.cpp", "Q2_K"),
        ("onnxruntime", "Q4_K_M"),
        ("onnxruntime", "Q2_K"),
    ]
    assert len(res.records) == 4  # 2 loadable combinations × 2 tests
    assert len(res.errors) == 2  # once per failed combination, not per test or repetition
    assert all("could not load" in e for e in res.errors)


def test_nothing_loads_raises_the_runtime_error():
    def load(*a: Any, **k: Any) -> Any:
        raise BackendError("no such model file x.gguf", fix="check the path")

    cfg = BenchConfig(model="x.gguf", tests=[TestSpec(0, 2)], measure_bandwidth=False)
    with pytest.raises(BenchError, match="no such model file"):
        run_bench(cfg, load=load, monitor=_monitor(), device=_Dev())


def test_generation_error_reported_once():
    class Failing(ScriptedModel):
        def _gen(self, prompt: list[int], max_tokens: int) -> Iterator[Event]:
            t = time.perf_counter()
            yield Started("scripted", "gguf:T", len(prompt), 64, t)
            yield PromptProcessed(len(prompt), 0.001, t)
            yield Finished("error", "", len(prompt), 0, t, None, t, 0.001, error="decode failed")

    cfg = BenchConfig(
        model="m", tests=[TestSpec(0, 2), TestSpec(4, 0)], repetitions=5, measure_bandwidth=False
    )
    model = Failing()
    with pytest.raises(BenchError, match="decode failed"):
        run_bench(cfg, load=lambda *a, **k: model, monitor=_monitor(), device=_Dev())
    assert len(model.calls) == 1  # stopped at the first failure


def test_ctrl_c_keeps_completed_records():
    model = ScriptedModel()
    model.interrupt_on_call = 7  # test 1: 1 warm-up + 3 timed; test 2 interrupted mid-way
    res, _ = _run(model, [TestSpec(0, 2), TestSpec(0, 3)], reps=3)
    assert res.interrupted
    assert [r.test for r in res.records] == ["tg2"]
    assert model.closed


# -- printers ----------------------------------------------------------------------------------
def _records() -> list[BenchRecord]:
    model = ScriptedModel()
    res, _ = _run(model, [TestSpec(8, 0), TestSpec(0, 4)], reps=2)
    return res.records


def test_printers_roundtrip_and_llama_bench_names():
    recs = _records()
    for fmt in ("json", "jsonl"):
        back = load_records(render(recs, fmt))
        assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]
    data = json.loads(render(recs, "json"))
    for name in (
        "model_filename",
        "model_type",
        "model_size",
        "model_n_params",
        "n_prompt",
        "n_gen",
        "test_time",
        "avg_ns",
        "stddev_ns",
        "avg_ts",
        "stddev_ts",
        "samples_ns",
        "samples_ts",
        "build_commit",
        "cpu_info",
        "gpu_info",
        "backends",
    ):
        assert name in data[0]
    rows = list(csv.DictReader(io.StringIO(to_csv(recs))))
    assert tuple(rows[0]) == FIELDS and len(rows) == 2
    assert float(rows[0]["avg_ts"]) == pytest.approx(recs[0].avg_ts)
    assert json.loads(rows[0]["samples_ns"]) == pytest.approx(recs[0].samples_ns)
    md = to_markdown(recs)
    assert md.splitlines()[0].startswith("| model | quant |")
    assert "pp8" in md and "tg4" in md and "power: none readable" not in md
    with pytest.raises(BenchError, match="unknown output format"):
        render(recs, "xml")


def test_printers_rerender_a_results_file(tmp_path, capsys):
    from amalia_edge.bench.printers import main as printers_main

    recs = _records()
    f = tmp_path / "r.json"
    f.write_text(render(recs, "json"))
    assert printers_main([str(f), "csv"]) == 0
    assert capsys.readouterr().out == to_csv(recs)
    assert printers_main([]) == 2


def test_threads_reach_the_backend_load_options():
    res, loads = _run(ScriptedModel(), [TestSpec(0, 2)], reps=1, n_threads=3)
    (opts,) = loads[0][4:]
    assert opts.n_threads == 3
    assert res.records[0].n_threads == 3


def test_bench_on_a_fake_agx_orin_reports_rails_and_conditions(fake_sysfs):
    """The whole path on a fake AGX Orin JetPack 6 sysfs: INA3221 rails, GPU clock, thermals."""
    from amalia_edge.telemetry import default_monitor

    root = fake_sysfs("agx_orin_jp6")
    res, _ = _run(
        ScriptedModel(itl=0.003),
        [TestSpec(0, 8)],
        reps=2,
        monitor=default_monitor(root=root, interval=0.005),
    )
    (rec,) = res.records
    watts = {
        "VDD_GPU_SOC": 4984 * 400 / 1e6,
        "VDD_CPU_CV": 4984 * 0 / 1e6,
        "VIN_SYS_5V0": 4976 * 507 / 1e6,
        "VDDQ_VDD2_1V8AO": 4992 * 102 / 1e6,
    }
    assert rec.power_label == "module_rails_sum"
    assert rec.rails_avg_w == pytest.approx(watts)  # constant fake rails: avg == reading
    # module_rails_sum leaves VDDQ_VDD2_1V8AO out (amalia_edge/telemetry/ina3221.py)
    assert rec.power_avg_w == pytest.approx(sum(watts.values()) - watts["VDDQ_VDD2_1V8AO"])
    assert rec.joules_per_token == pytest.approx(rec.power_avg_w * sum(rec.samples_ns) / 1e9 / 16)
    assert rec.temps_max_c["CPU-therm"] == pytest.approx(47.062)
    assert "CV0-therm" not in rec.temps_max_c
    assert rec.gpu_freq_min == 1_300_500_000 and rec.gpu_load_avg == pytest.approx(61.2)
    assert any(s.startswith("jetson_power: available") for s in rec.telemetry_sources)


# -- chart -------------------------------------------------------------------------------------
def test_chart_of_one_quant_with_long_names_keeps_every_text_inside() -> None:
    """`bench CACHE_DIR --quant F16 --plot` on this VM: a long path, a long CPU name."""
    from amalia_edge.bench.plots import build_figure

    recs = [
        BenchRecord(test=t, backend="llama.cpp", quant="F16", avg_ts=v, stddev_ts=30.0,
                    model_filename="/root/.cache/amalia-edge/demo-f89dee54417c/demo-F16.gguf",
                    cpu_info="Intel(R) Xeon(R) Processor @ 2.10GHz with a very long name",
                    test_time="2026-12-04T14:00:00+00:00", model_type="llama 5.2M F16",
                    repetitions=2, warmup=1, amalia_edge_version="0.1.0", git_commit="cdeb165")
        for t, v in (("pp128", 8069.0), ("tg128", 1353.0))
    ]  # fmt: skip
    fig = build_figure(recs, model="/root/.cache/amalia-edge/demo-f89dee54417c")
    _assert_all_text_inside(fig)
    assert fig.get_suptitle().startswith("demo-f89dee54417c (llama 5.2M) on Intel(R) Xeon(R)")


def _assert_all_text_inside(fig: Any) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text().strip()]
    assert texts
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert box.x0 - 0.5 <= ext.x0 and ext.x1 <= box.x1 + 0.5, t.get_text()
        assert box.y0 - 0.5 <= ext.y0 and ext.y1 <= box.y1 + 0.5, t.get_text()


@pytest.mark.parametrize("power", [False, True])
def test_chart_labels_aligned_nothing_clipped_title_says_what(power: bool) -> None:
    """Every text is inside the PNG, tick labels sit under their bar groups, and the title
    names the model, the device and the date (the README's `bench --plot`)."""
    from amalia_edge.bench.plots import build_figure

    recs = []
    for backend in ("llama.cpp", "onnxruntime"):
        for quant, ts in (("F16", 180.0), ("Q8_0", 260.0), ("Q4_K_M", 330.0)):
            for test in ("pp512", "tg128"):
                recs.append(
                    BenchRecord(test=test, backend=backend, quant=quant,
                                model_filename=f"art/demo-{quant}.gguf", avg_ts=ts, stddev_ts=3.0,
                                joules_per_token=0.02 if power else None,
                                model_type=f"llama 5M {quant}", cpu_info="Test CPU 9000",
                                test_time="2026-12-04T14:00:00+00:00")
                )  # fmt: skip
    fig = build_figure(recs, model="art")
    _assert_all_text_inside(fig)
    title = fig.get_suptitle()
    assert "art" in title and "Test CPU 9000" in title and "2026-12-04" in title
    assert len(fig.axes) == 2 * (2 if power else 1)
    for ax in fig.axes:
        labels = [lbl.get_text() for lbl in ax.get_xticklabels()]
        assert labels == ["F16", "Q8_0", "Q4_K_M"]
        mids = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
        centres = [(a + b) / 2 for a, b in zip(mids[::2], mids[1::2], strict=True)]  # 2 backends
        assert centres == pytest.approx(list(ax.get_xticks()))
        lo, hi = ax.get_xlim()
        assert all(lo <= p.get_x() and p.get_x() + p.get_width() <= hi for p in ax.patches)


# -- measured bandwidth is remembered per device -----------------------------------------------
def test_measured_bandwidth_is_remembered_for_doctor_and_selection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench measures the bandwidth where the board table has none; doctor then shows it
    (not "unknown until measured") and selection ranks with it instead of its 25 GB/s."""
    from amalia_edge.bench.bandwidth import memory_bandwidth
    from amalia_edge.cli import main
    from amalia_edge.device import probe
    from amalia_edge.runtime.selection import DEFAULT_BANDWIDTH, device_bandwidth

    monkeypatch.setenv("AMALIA_EDGE_CACHE_DIR", str(tmp_path))
    before = probe()
    if before.memory_bandwidth:
        pytest.skip("this machine is in the board table: nothing to measure")
    assert device_bandwidth(probe()) == (DEFAULT_BANDWIDTH, "assumed default")
    assert main(["doctor", "--json"]) in (0, 1)
    dev = json.loads(capsys.readouterr().out)["device"]
    assert dev["memory_bandwidth"] is None

    bw, source = memory_bandwidth(probe(), measure=True)
    assert bw and source and source.startswith("measured")

    assert main(["doctor", "--json"]) in (0, 1)
    dev = json.loads(capsys.readouterr().out)["device"]
    assert dev["memory_bandwidth"] == int(bw)
    assert dev["memory_bandwidth_source"].startswith("measured by amalia-edge bench on ")
    assert not any("unknown until measured" in n for n in dev["notes"])
    main(["doctor"])
    assert f"{int(bw) / 1e9:.1f} GB/s (measured by amalia-edge bench" in capsys.readouterr().out
    got, src = device_bandwidth(probe())
    assert got == int(bw) and src.startswith("measured by amalia-edge bench")
