"""The benchmark runner: tests × repetitions over a matrix of backends × quant types.

Every timing is derived from the runtime's event stream (``Started``, ``PromptProcessed``,
``TokenEvent``, ``Finished``; see :mod:`amalia_edge.runtime.events`), never measured a
second time; power comes from one :class:`~amalia_edge.telemetry.Monitor` running through
the whole benchmark, integrated over each run's timed span.

Tests are named like llama-bench's:

``ppN``
    prefill an N-token prompt; tokens/s = ``PromptProcessed.n_tokens / .seconds``.
``tgN``
    generate N tokens after a one-token prompt; the timed span runs from the first generated
    token to the (N+1)-th, i.e. exactly N decode steps (the first token comes from prefill
    logits, so it is generated but not timed); tokens/s = N / span.
``ppP+tgN``
    llama-bench's ``-pg``: a P-token prompt then N tokens; tokens/s = (P + N) / request time
    (``Started`` to the last token). TTFT and inter-token latency are most telling here.

Each (backend, quant, test) runs ``warmup`` untimed repetitions, then ``repetitions`` timed
ones. A model that cannot load is reported once (its error, no traceback) and the matrix
moves on; Ctrl-C stops the run and returns the records completed so far.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from amalia_edge import __version__
from amalia_edge.bench.bandwidth import memory_bandwidth
from amalia_edge.bench.env import backend_version, git_commit, library_versions, size_label
from amalia_edge.bench.records import BenchRecord
from amalia_edge.errors import AmaliaEdgeError, BenchError
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.telemetry import (
    Monitor,
    Snapshot,
    default_monitor,
    integrate,
    interpolate,
    power_series,
)

log = logging.getLogger(__name__)

# European-Portuguese filler the prompts are cut from (only its token count matters; real
# text keeps the tokenizer on its usual path). Rotated per repetition so no run can reuse
# the previous run's cached prefix.
PROMPT_TEXT = (
    "A cidade de Lisboa estende-se pelas colinas junto ao estuário do Tejo. Nos bairros "
    "antigos, as ruas estreitas sobem entre casas de azulejo, e o elétrico amarelo percorre "
    "as calçadas desde o início do século passado. Ao fim da tarde, a luz dourada reflete-se "
    "no rio e os miradouros enchem-se de gente que conversa, lê o jornal ou simplesmente "
    "observa os barcos que atravessam para a outra margem. "
)

_TEST_RE = re.compile(r"^(?:pp(\d+)(?:\+tg(\d+))?|tg(\d+))$")


@dataclass(frozen=True)
class TestSpec:
    """One test: ``n_prompt`` prompt tokens and ``n_gen`` generated tokens (llama-bench)."""

    __test__ = False  # not a pytest test class, despite the name

    n_prompt: int
    n_gen: int

    @property
    def kind(self) -> str:
        if self.n_prompt and self.n_gen:
            return "pg"
        return "pp" if self.n_prompt else "tg"

    @property
    def name(self) -> str:
        if self.kind == "pg":
            return f"pp{self.n_prompt}+tg{self.n_gen}"
        return f"pp{self.n_prompt}" if self.kind == "pp" else f"tg{self.n_gen}"


def parse_test(name: str) -> TestSpec:
    """``pp512`` / ``tg128`` / ``pp512+tg128`` -> TestSpec; anything else is a BenchError."""
    m = _TEST_RE.match(name.strip())
    if m is None:
        raise BenchError(
            f"unknown test {name!r}",
            fix="name tests like llama-bench: ppN (prompt), tgN (generation) or ppN+tgM",
        )
    p, g = int(m.group(1) or 0), int(m.group(2) or m.group(3) or 0)
    if p == 0 and g == 0:
        raise BenchError(f"test {name!r} has no tokens", fix="use a count above 0")
    return TestSpec(p, g)


def make_tests(
    n_prompt: Sequence[int] = (512,), n_gen: Sequence[int] = (128,), names: Sequence[str] = ()
) -> list[TestSpec]:
    """Tests from llama-bench style counts (0 skips that kind) plus explicit names."""
    for n in (*n_prompt, *n_gen):
        if n < 0:
            raise BenchError(f"negative token count {n}", fix="use -p/-n values >= 0")
    tests = [TestSpec(p, 0) for p in n_prompt if p > 0]
    tests += [TestSpec(0, g) for g in n_gen if g > 0]
    tests += [parse_test(x) for x in names]
    out: list[TestSpec] = []
    for t in tests:
        if t not in out:
            out.append(t)
    if not out:
        raise BenchError("no tests to run", fix="give -p N and/or -n N above 0, or --tests")
    return out


@dataclass
class BenchConfig:
    """What to benchmark. ``backends`` / ``quants``: ``None`` entries let the runtime choose."""

    model: str | None
    tests: list[TestSpec] = field(default_factory=lambda: make_tests())
    repetitions: int = 5
    warmup: int = 1
    backends: Sequence[str | None] = (None,)
    quants: Sequence[str | None] = (None,)
    interval: float = 0.1  # telemetry sampling interval, seconds
    n_ctx: int | None = None  # None: enough for the largest test
    n_threads: int | None = None
    measure_bandwidth: bool = True  # copy test when the device has no table value

    def validate(self) -> None:
        if self.repetitions < 1:
            raise BenchError(f"repetitions must be >= 1, got {self.repetitions}", fix="use -r 1+")
        if self.warmup < 0:
            raise BenchError(f"warm-up runs must be >= 0, got {self.warmup}", fix="use 0 or more")
        if self.n_threads is not None and self.n_threads < 1:
            raise BenchError(f"threads must be >= 1, got {self.n_threads}", fix="e.g. -t 4")
        if not self.interval > 0:
            raise BenchError(f"--interval must be > 0, got {self.interval}", fix="e.g. 0.1")
        if not self.tests:
            raise BenchError("no tests to run", fix="give -p/-n or --tests")


@dataclass
class BenchResult:
    records: list[BenchRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per combination that failed
    interrupted: bool = False
    sources: list[str] = field(default_factory=list)


@dataclass
class RunTrace:
    """The events of one request, as the stream yielded them."""

    started: Started
    prompt: PromptProcessed
    tokens: list[TokenEvent]
    finished: Finished


@dataclass
class Timed:
    """What one timed repetition contributes: its span, token count and latencies."""

    t0: float
    t1: float
    n_tokens: int
    trace: RunTrace

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def consume(stream: Any) -> RunTrace:
    """Collect one request's events; a generation error becomes a BenchError (once)."""
    started = prompt = finished = None
    tokens: list[TokenEvent] = []
    for ev in stream:
        if isinstance(ev, Started):
            started = ev
        elif isinstance(ev, PromptProcessed):
            prompt = ev
        elif isinstance(ev, TokenEvent):
            tokens.append(ev)
        elif isinstance(ev, Finished):
            finished = ev
    if finished is not None and finished.reason == "error":
        raise BenchError(f"generation failed: {finished.error}", fix="see the backend's message")
    if started is None or prompt is None or finished is None:
        raise BenchError("the backend's event stream was incomplete", fix="report this as a bug")
    return RunTrace(started, prompt, tokens, finished)


def timed_span(test: TestSpec, trace: RunTrace) -> Timed:
    """The timed span and token count of a run, per the test kinds in the module docstring."""
    pp, toks = trace.prompt, trace.tokens
    if test.kind == "pp":
        return Timed(pp.t - pp.seconds, pp.t, pp.n_tokens, trace)
    if test.kind == "tg":
        if len(toks) < 2:
            raise BenchError(
                f"{test.name}: the model stopped after {len(toks)} token(s)",
                fix="the benchmark ignores end-of-sequence; check the backend honours it",
            )
        return Timed(toks[0].t, toks[-1].t, len(toks) - 1, trace)
    end = toks[-1].t if toks else trace.finished.t_end
    return Timed(trace.started.t, end, pp.n_tokens + len(toks), trace)


class _Session:
    """The few things the runner needs from a loaded model, whatever its wrapper looks like."""

    def __init__(self, model: Any) -> None:
        self.model = model
        sel = getattr(model, "selection", None)
        chosen = getattr(sel, "chosen", None)
        self.artifact = getattr(model, "artifact", None) or getattr(chosen, "artifact", None)
        self.backend_name = (
            getattr(model, "backend_name", None)
            or getattr(getattr(model, "backend", None), "name", None)
            or getattr(chosen, "backend", None)
            or "?"
        )
        if not isinstance(self.backend_name, str):
            self.backend_name = getattr(self.backend_name, "name", str(self.backend_name))
        self.session = getattr(model, "session", model)

    def tokenize(self, text: str) -> list[int]:
        fn = getattr(self.model, "tokenize", None) or self.session.tokenize
        return list(fn(text, add_bos=False, special=False))

    def stream(self, prompt_ids: list[int], max_tokens: int) -> Any:
        from amalia_edge.runtime.sampling import SamplingParams

        sampling = _greedy(SamplingParams)
        return self.model.stream(prompt_ids, sampling=sampling, max_tokens=max_tokens)

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if close is not None:
            close()


def _greedy(cls: Any) -> Any:
    """Greedy decoding that ignores end-of-sequence, so every run generates the same count."""
    kwargs: dict[str, Any] = {"temperature": 0.0}
    fields = getattr(cls, "__dataclass_fields__", {})
    if "ignore_eos" in fields:
        kwargs["ignore_eos"] = True
    if "seed" in fields:
        kwargs["seed"] = 0
    return cls(**{k: v for k, v in kwargs.items() if not fields or k in fields})


class Runner:
    """Runs a :class:`BenchConfig`. Split out of :func:`run_bench` so tests can inject parts."""

    def __init__(
        self,
        config: BenchConfig,
        *,
        progress: Callable[[str], None] | None = None,
        on_record: Callable[[BenchRecord], None] | None = None,
        load: Callable[..., Any] | None = None,
        device: Any | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.progress = progress or (lambda _msg: None)
        self.on_record = on_record or (lambda _r: None)
        self._load = load
        self.device = device
        self.monitor = monitor
        self._prompt_cache: list[int] | None = None

    # -- setup -------------------------------------------------------------------------------
    def _probe(self) -> Any:
        if self.device is None:
            try:
                from amalia_edge.device import probe

                self.device = probe()
            except Exception as exc:  # probing is context for the record, never fatal
                log.warning("device probe failed: %s", exc)
        return self.device

    def _loader(self) -> Callable[..., Any]:
        if self._load is None:
            if self.config.model is None:
                raise BenchError(
                    "no MODEL given",
                    fix="pass an artifacts directory or .gguf file; make the demo's with "
                    "`amalia-edge quantize --out artifacts` and run `amalia-edge bench artifacts`",
                )
            from amalia_edge.runtime import load_model

            self._load = load_model
        return self._load

    def n_ctx(self) -> int:
        if self.config.n_ctx:
            return self.config.n_ctx
        # Just enough for the largest test (prompt + generated + 1 for tgN's extra token),
        # rounded up a little: a larger context could exceed the model's trained one.
        need = max(max(t.n_prompt, 1) + t.n_gen + 2 for t in self.config.tests)
        return -(-need // 32) * 32

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> BenchResult:
        cfg = self.config
        res = BenchResult()
        load = self._loader()  # fails now (no MODEL) rather than after the bandwidth test
        device = self._probe()
        self.progress("measuring memory bandwidth" if cfg.measure_bandwidth else "")
        bw, bw_source = memory_bandwidth(device, measure=cfg.measure_bandwidth)
        env = self._environment(device, bw, bw_source)
        mon = self.monitor or default_monitor(interval=cfg.interval)
        sources = mon.start()
        res.sources = [str(s) for s in sources]
        env["telemetry_sources"] = res.sources
        try:
            for backend in cfg.backends:
                for quant in cfg.quants:
                    self._combination(load, backend, quant, env, mon, res)
        except KeyboardInterrupt:
            res.interrupted = True
            self.progress("interrupted: keeping the results completed so far")
        finally:
            mon.stop()
        if not res.records and res.errors and not res.interrupted:
            # Nothing ran at all: the (first) runtime error is the answer, once.
            raise BenchError(res.errors[0])
        return res

    def _environment(self, device: Any, bw: float | None, bw_source: str | None) -> dict[str, Any]:
        board = getattr(device, "board", None)
        gpus = getattr(device, "gpus", None) or []
        commit = git_commit()
        fp = getattr(device, "fingerprint", None)
        return {
            "board": getattr(board, "name", None),
            "l4t": getattr(device, "l4t_release", None),
            "jetpack": getattr(device, "jetpack", None),
            "power_mode": getattr(device, "power_mode", None),
            "jetson_clocks": getattr(device, "jetson_clocks", None),
            "cpu_info": getattr(device, "cpu_model", None),
            "gpu_info": getattr(gpus[0], "name", None) if gpus else None,
            "memory_bandwidth": bw,
            "memory_bandwidth_source": bw_source,
            "library_versions": library_versions(),
            "amalia_edge_version": __version__,
            "git_commit": commit,
            "build_commit": commit,
            "device_fingerprint": fp() if callable(fp) else None,
        }

    def _combination(
        self,
        load: Callable[..., Any],
        backend: str | None,
        quant: str | None,
        env: dict[str, Any],
        mon: Monitor,
        res: BenchResult,
    ) -> None:
        label = f"{backend or 'auto'} × {quant or 'auto'}"
        self.progress(f"loading {self.config.model or 'demo model'} ({label})")
        t_load = time.perf_counter()
        try:
            kwargs: dict[str, Any] = {}
            if self.config.n_threads:
                from amalia_edge.runtime.backend import LoadOptions

                kwargs["options"] = LoadOptions(n_threads=self.config.n_threads)
            model = load(
                self.config.model, backend=backend, quant=quant, n_ctx=self.n_ctx(), **kwargs
            )
        except AmaliaEdgeError as exc:
            res.errors.append(f"{label}: {exc}")
            self.progress(f"{label}: cannot load: {exc}")
            return
        sess = _Session(model)
        self._prompt_cache = None
        try:
            for test in self.config.tests:
                try:
                    rec = self._test(sess, test, quant, env, mon, t_load)
                except AmaliaEdgeError as exc:  # generation failed: report once, go on
                    res.errors.append(f"{label} {test.name}: {exc}")
                    self.progress(f"{label} {test.name}: {exc}")
                    return
                res.records.append(rec)
                self.on_record(rec)
        finally:
            sess.close()

    def _prompt(self, sess: _Session, n: int, rotation: int) -> list[int]:
        if self._prompt_cache is None or len(self._prompt_cache) < n + rotation + 1:
            text, ids = PROMPT_TEXT, sess.tokenize(PROMPT_TEXT)
            if not ids:
                raise BenchError("the tokenizer returned no tokens", fix="check the model file")
            while len(ids) < n + rotation + 1:
                text += PROMPT_TEXT
                ids = sess.tokenize(text)
            self._prompt_cache = ids
        return self._prompt_cache[rotation : rotation + max(n, 1)]

    def _test(
        self,
        sess: _Session,
        test: TestSpec,
        quant: str | None,
        env: dict[str, Any],
        mon: Monitor,
        t_load: float,
    ) -> BenchRecord:
        cfg = self.config
        test_time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        timed: list[Timed] = []
        total = cfg.warmup + cfg.repetitions
        max_tokens = test.n_gen + 1 if test.kind == "tg" else max(test.n_gen, 1)
        for i in range(total):
            what = "warm-up" if i < cfg.warmup else f"{i - cfg.warmup + 1}/{cfg.repetitions}"
            self.progress(
                f"{sess.backend_name} {quant or ''} {test.name} {what}".replace("  ", " ")
            )
            trace = consume(sess.stream(self._prompt(sess, test.n_prompt, i), max_tokens))
            if i >= cfg.warmup:
                timed.append(timed_span(test, trace))
        # Power is integrated over the timed spans: wait until a sample lies past the last one.
        self._wait_for_sample_after(mon, timed[-1].trace.finished.t_end)
        return self._record(sess, test, quant, env, mon, timed, test_time, t_load)

    def _wait_for_sample_after(self, mon: Monitor, t: float) -> None:
        deadline = time.perf_counter() + 3 * mon.interval + 1.0
        while time.perf_counter() < deadline:
            snap = mon.latest()
            if snap is None or snap.t >= t:
                return
            time.sleep(mon.interval / 4)

    # -- the record --------------------------------------------------------------------------
    def _record(
        self,
        sess: _Session,
        test: TestSpec,
        quant: str | None,
        env: dict[str, Any],
        mon: Monitor,
        timed: list[Timed],
        test_time: str,
        t_load: float,
    ) -> BenchRecord:
        cfg = self.config
        art = sess.artifact
        ns = [t.seconds * 1e9 for t in timed]
        ts = [t.n_tokens / t.seconds if t.seconds > 0 else 0.0 for t in timed]
        rec = BenchRecord(
            test=test.name,
            backend=sess.backend_name,
            quant=getattr(art, "quant", None) or quant,
            model_filename=str(getattr(art, "path", "") or cfg.model or ""),
            n_prompt=test.n_prompt,
            n_gen=test.n_gen,
            n_ctx=timed[0].trace.started.n_ctx,
            n_threads=cfg.n_threads,
            repetitions=cfg.repetitions,
            warmup=cfg.warmup,
            test_time=test_time,
            avg_ns=statistics.fmean(ns),
            stddev_ns=statistics.stdev(ns) if len(ns) > 1 else 0.0,
            avg_ts=statistics.fmean(ts),
            stddev_ts=statistics.stdev(ts) if len(ts) > 1 else 0.0,
            samples_ns=ns,
            samples_ts=ts,
            backend_version=backend_version(sess.backend_name),
            telemetry_interval_s=mon.interval,
            **{k: v for k, v in env.items() if k in BenchRecord.__dataclass_fields__},
        )
        if art is not None:
            params = getattr(art, "params", None)
            shape = getattr(art, "shape", None)
            arch = getattr(shape, "architecture", None) or "llama"
            rec.model_size = _weight_bytes(art)
            rec.model_n_params = params
            rec.model_type = " ".join(
                x for x in (arch, size_label(params) if params else None, rec.quant) if x
            )
            rec.bytes_per_token = getattr(art, "decode_weight_bytes", None) or rec.model_size
        _load_params(rec, sess)
        # Latency, from the events.
        ttfts = [t.trace.finished.ttft for t in timed if t.trace.finished.ttft is not None]
        rec.ttft_ms = statistics.fmean(ttfts) * 1e3 if ttfts else None
        rec.e2e_ms = (
            statistics.fmean(t.trace.finished.t_end - t.trace.finished.t_start for t in timed) * 1e3
        )
        itl = [
            (b.t - a.t) * 1e3
            for t in timed
            for a, b in zip(t.trace.tokens, t.trace.tokens[1:], strict=False)
        ]
        if itl and test.kind != "pp":
            rec.itl_p50_ms, rec.itl_p90_ms, rec.itl_p99_ms = (
                percentile(itl, q) for q in (50, 90, 99)
            )
        # Power and energy over the timed spans.
        samples = mon.samples
        self._power(rec, samples, timed)
        _conditions(rec, samples, timed[0].t0 - mon.interval, timed[-1].t1 + mon.interval)
        rss = [s.rss for s in samples if s.rss is not None and t_load <= s.t]
        rec.peak_rss = max(rss) if rss else None
        # Roofline: weights read per decode step × decode steps per second.
        if test.kind == "tg" and rec.bytes_per_token and rec.avg_ts:
            rec.achieved_bandwidth = rec.bytes_per_token * rec.avg_ts
            if rec.memory_bandwidth:
                rec.roofline_fraction = rec.achieved_bandwidth / rec.memory_bandwidth
        early = [t.trace.finished.reason for t in timed if t.trace.finished.reason != "length"]
        if early:
            rec.notes.append(f"{len(early)} run(s) ended early ({', '.join(sorted(set(early)))})")
        return rec

    @staticmethod
    def _power(rec: BenchRecord, samples: list[Snapshot], timed: list[Timed]) -> None:
        spans = [(t.t0, t.t1) for t in timed]
        rec.telemetry_samples = sum(1 for s in samples for a, b in spans if a <= s.t <= b)
        total_pts = power_series(samples)
        seconds = sum(b - a for a, b in spans)
        tokens = sum(t.n_tokens for t in timed)
        if len(total_pts) >= 2 and seconds > 0:
            parts = [integrate(total_pts, a, b) for a, b in spans]
            if all(p is not None for p in parts):
                energy = sum(p for p in parts if p is not None)
                rec.energy_j = energy / len(timed)
                rec.power_avg_w = energy / seconds
                rec.power_peak_w = _peak(total_pts, spans)
                if tokens:
                    rec.joules_per_token = energy / tokens
                    rec.tokens_per_joule = tokens / energy if energy > 0 else None
                rec.power_label = next(
                    (s.power_label for s in samples if s.power_label is not None), None
                )
        rails = sorted({name for s in samples for name in s.rails})
        for rail in rails:
            pts = power_series(samples, rail)
            if len(pts) < 2 or seconds <= 0:
                continue
            parts = [integrate(pts, a, b) for a, b in spans]
            if all(p is not None for p in parts):
                rec.rails_avg_w[rail] = sum(p for p in parts if p is not None) / seconds
                rec.rails_peak_w[rail] = _peak(pts, spans)


def _weight_bytes(art: Any) -> int | None:
    """Bytes of weights: the runtime's figure, but never less than an ONNX graph's files.

    An ONNX graph keeps its weights beside it in ``<file>.data`` (convert.onnx file names);
    a manifest size that counts only the graph would make the roofline meaningless.
    """
    wb = getattr(art, "weight_bytes", None) or getattr(art, "size", None)
    path = getattr(art, "path", None)
    if path is not None:
        from pathlib import Path

        p = Path(path)
        data = p.with_name(p.name + ".data")
        if p.suffix == ".onnx" and p.is_file() and data.is_file():
            files = p.stat().st_size + data.stat().st_size
            wb = max(int(wb or 0), files)
    return None if wb is None else int(wb)


def _conditions(rec: BenchRecord, samples: list[Snapshot], t0: float, t1: float) -> None:
    """Temperatures, GPU load/clock and CPU load over [t0, t1] (None where not measured)."""
    sel = [s for s in samples if t0 <= s.t <= t1]
    for s in sel:
        for zone, deg in s.temps.items():
            rec.temps_max_c[zone] = max(deg, rec.temps_max_c.get(zone, deg))
    loads = [s.gpu_load for s in sel if s.gpu_load is not None]
    freqs = [s.gpu_freq for s in sel if s.gpu_freq is not None]
    cpus = [s.cpu_percent for s in sel if s.cpu_percent is not None]
    rec.gpu_load_avg = statistics.fmean(loads) if loads else None
    rec.gpu_freq_min = min(freqs) if freqs else None
    rec.cpu_percent_avg = statistics.fmean(cpus) if cpus else None


def _load_params(rec: BenchRecord, sess: _Session) -> None:
    """llama-bench's build/run parameters, where the backend session exposes them."""
    params = getattr(sess.session, "params", None)
    gpu = getattr(sess.session, "gpu", None)
    if gpu is not None:
        rec.backends = "CUDA" if gpu else "CPU"
    if not isinstance(params, dict):
        return
    kv_names: dict[int, str] = {}
    if sess.backend_name == "llama.cpp":
        from amalia_edge.runtime.backends.llamacpp import KV_CACHE_GGML_TYPES

        kv_names = {v: k for k, v in KV_CACHE_GGML_TYPES.items()}
    rec.n_batch = params.get("n_batch")
    rec.n_threads = params.get("n_threads", rec.n_threads)
    rec.n_gpu_layers = params.get("n_gpu_layers")
    rec.flash_attn = params.get("flash_attn")
    rec.use_mmap = params.get("use_mmap")
    for key in ("type_k", "type_v"):
        v = params.get(key)
        setattr(rec, key, kv_names.get(v, str(v)) if isinstance(v, int) else v)


def _peak(points: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float:
    """Highest sampled value inside the spans, or at their edges (interpolated)."""
    vals = [v for t, v in points for a, b in spans if a <= t <= b]
    vals += [interpolate(points, x) for a, b in spans for x in (a, b)]
    return max(vals)


def run_bench(
    config: BenchConfig,
    *,
    progress: Callable[[str], None] | None = None,
    on_record: Callable[[BenchRecord], None] | None = None,
    load: Callable[..., Any] | None = None,
    device: Any | None = None,
    monitor: Monitor | None = None,
) -> BenchResult:
    """Run the benchmark matrix; see the module docstring. Raises BenchError if nothing ran."""
    return Runner(
        config, progress=progress, on_record=on_record, load=load, device=device, monitor=monitor
    ).run()
