"""The benchmark on the real llama.cpp backend with real GGUF files made by our converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amalia_edge.bench.printers import load_records, render
from amalia_edge.bench.records import BenchRecord
from amalia_edge.bench.runner import BenchConfig, make_tests, run_bench
from amalia_edge.cli import main
from amalia_edge.telemetry import Monitor
from amalia_edge.telemetry.system import SystemSampler
from tests.plugins.models import HAVE_LLAMA_CPP
from tests.plugins.telemetry import KnownPowerSampler

pytestmark = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")


def _check_consistent(rec: BenchRecord, reps: int) -> None:
    assert len(rec.samples_ns) == len(rec.samples_ts) == reps
    # pp: prompt tokens; tg: decode steps; pp+tg: both (see amalia_edge.bench.runner)
    tokens = rec.n_prompt + rec.n_gen
    for ns, ts in zip(rec.samples_ns, rec.samples_ts, strict=True):
        assert ts == pytest.approx(tokens / (ns / 1e9), rel=1e-9)
    assert rec.avg_ts and rec.avg_ts > 0 and rec.stddev_ts is not None
    assert rec.ttft_ms and rec.e2e_ms and rec.e2e_ms >= rec.ttft_ms
    if rec.itl_p50_ms is not None:
        assert 0 < rec.itl_p50_ms <= rec.itl_p90_ms <= rec.itl_p99_ms  # type: ignore[operator]
    assert rec.model_size and rec.model_n_params and rec.bytes_per_token
    assert rec.backend in ("llama.cpp", "onnxruntime") and rec.amalia_edge_version
    assert rec.peak_rss and rec.peak_rss > 0


@pytest.mark.slow
def test_bench_tiny_gguf_matrix_records_complete(tiny_artifacts: Path) -> None:
    power = KnownPowerSampler({"VDD_GPU_SOC": (5.0, 1.0), "VDD_CPU_CV": (1.5, 0.0)})
    mon = Monitor([power, SystemSampler()], interval=0.01)
    cfg = BenchConfig(
        model=str(tiny_artifacts),
        tests=make_tests([32], [16], ["pp16+tg8"]),
        repetitions=3,
        backends=["llama.cpp"],
        quants=["F16", "Q8_0"],
        measure_bandwidth=False,
    )
    res = run_bench(cfg, monitor=mon)
    assert not res.errors and not res.interrupted
    assert [(r.quant, r.test) for r in res.records] == [
        (q, t) for q in ("F16", "Q8_0") for t in ("pp32", "tg16", "pp16+tg8")
    ]
    for rec in res.records:
        _check_consistent(rec, 3)
        # energy = ∫ power dt of the known source over the timed spans
        assert rec.power_label == "known_sum"
        assert rec.joules_per_token and rec.tokens_per_joule
        assert rec.tokens_per_joule == pytest.approx(1 / rec.joules_per_token)
        assert 6.5 <= rec.power_avg_w <= 6.5 + 1.0 * 120  # type: ignore[operator]
    q8 = next(r for r in res.records if r.quant == "Q8_0")
    f16 = next(r for r in res.records if r.quant == "F16")
    assert q8.model_size < f16.model_size  # type: ignore[operator]


@pytest.mark.slow  # includes the memory copy test
def test_bench_cli_on_tiny_gguf(
    tiny_gguf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.jsonl"
    rc = main(
        [
            "bench",
            str(tiny_gguf["Q8_0"]),
            "-p",
            "16",
            "-n",
            "8",
            "-r",
            "2",
            "-o",
            "jsonl",
            "--out",
            str(out),
            "--interval",
            "0.05",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    recs = load_records(out.read_text())
    assert [r.test for r in recs] == ["pp16", "tg8"]
    for rec in recs:
        _check_consistent(rec, 2)
        assert rec.memory_bandwidth and rec.memory_bandwidth_source
        assert rec.telemetry_sources
    tg = recs[1]
    assert tg.achieved_bandwidth and tg.memory_bandwidth
    assert tg.roofline_fraction == pytest.approx(tg.achieved_bandwidth / tg.memory_bandwidth)
    md = render(recs, "md")
    assert "| tg8 |" in md
    json.loads(render(recs, "json"))


def test_bench_missing_quant_is_one_error(
    tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "bench",
            str(tiny_artifacts),
            "--quant",
            "IQ1_S",
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "3",
            "--no-bandwidth-test",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("amalia-edge: error:") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_bench_matrix_llama_cpp_and_onnxruntime(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Two real backends in one call: llama.cpp on GGUF and ONNX Runtime on the ONNX export."""
    from amalia_edge.convert.pipeline import quantize

    out = tmp_path / "a"
    quantize(
        tiny_checkpoint,
        out,
        ["Q8_0"],
        imatrix="none",
        onnx_types=["fp32"],
        threads=2,
        progress=False,
    )
    cfg = BenchConfig(
        model=str(out),
        tests=make_tests([16], [8]),
        repetitions=2,
        backends=["llama.cpp", "onnxruntime"],
        n_threads=1,
        measure_bandwidth=False,
    )
    res = run_bench(cfg)
    assert not res.errors
    assert [(r.backend, r.quant, r.test) for r in res.records] == [
        ("llama.cpp", "Q8_0", "pp16"),
        ("llama.cpp", "Q8_0", "tg8"),
        ("onnxruntime", "fp32", "pp16"),
        ("onnxruntime", "fp32", "tg8"),
    ]
    for rec in res.records:
        _check_consistent(rec, 2)
    onnx = res.records[2]
    onnx_bytes = sum(p.stat().st_size for p in out.glob("model-fp32.onnx*"))
    assert onnx.model_size == onnx_bytes  # graph + external weights, not the graph alone


@pytest.fixture(scope="module")
def short_ctx_gguf(make_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real GGUF whose model was trained on a 128-token context."""
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.gguf import write_gguf

    ckpt = make_checkpoint(max_position_embeddings=128)
    path = tmp_path_factory.mktemp("short-ctx") / "short-F16.gguf"
    write_gguf(open_checkpoint(ckpt), path, "f16")
    return path


def test_bench_default_tests_fit_the_models_context(
    short_ctx_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `bench MODEL` on a short-context model: the defaults shrink, and say so."""
    from amalia_edge.bench.runner import DEFAULT_N_GEN, DEFAULT_N_PROMPT, TestSpec, fit_test
    from amalia_edge.runtime import resolve_model

    (art,) = resolve_model(short_ctx_gguf).usable()
    ctx = art.shape.n_ctx_train  # type: ignore[union-attr]
    want = [fit_test(TestSpec(DEFAULT_N_PROMPT, 0), ctx), fit_test(TestSpec(0, DEFAULT_N_GEN), ctx)]
    argv = ["bench", str(short_ctx_gguf), "-r", "1", "--warmup", "0", "-t", "1",
            "--no-bandwidth-test", "--interval", "0.05"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert [f"| {t.name} |" in out for t in want] == [True, True], out
    note = f"fitted to the model's {ctx}-token context: {want[0].name}, {want[1].name}"
    assert note in err and note in out  # progress line and the table's footnote
    assert main([*argv, "-o", "json"]) == 0
    recs = load_records(capsys.readouterr().out)
    assert [r.test for r in recs] == [t.name for t in want]
    assert all(r.n_ctx <= ctx for r in recs)


@pytest.mark.parametrize(
    ("extra", "hint"),
    [
        (["-p", "{ctx}", "-n", "0"], "use -p {room} or less"),
        (["-n", "{ctx}", "-p", "0"], "use -n {room_tg} or less"),
        (["-p", "8", "-n", "0", "-pg", "{ctx},8"], "keep P + G at most {room}"),
        (["-p", "{half}", "-n", "0", "--ctx", "32"], "use --ctx {half_need} or more"),
    ],
)
def test_bench_own_counts_that_do_not_fit_get_one_right_hint(
    short_ctx_gguf: Path, capsys: pytest.CaptureFixture[str], extra: list[str], hint: str
) -> None:
    from amalia_edge.runtime import resolve_model

    (art,) = resolve_model(short_ctx_gguf).usable()
    ctx = art.shape.n_ctx_train  # type: ignore[union-attr]
    sub = {"ctx": ctx, "room": ctx - 2, "room_tg": ctx - 3, "half": ctx // 2,
           "half_need": ctx // 2 + 2}  # fmt: skip
    argv = ["bench", str(short_ctx_gguf), "-r", "1", "--no-bandwidth-test"]
    rc = main([*argv, *(x.format(**sub) for x in extra)])
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amalia-edge: error: "), err
    assert hint.format(**sub) in lines[0]
