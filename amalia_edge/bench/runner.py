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
ones. Default tests (``default_tests``) shrink to fit the model's training context; a test
the user asked for that cannot fit is one error naming the option to change. A model that
cannot load is reported once (its error, no traceback) and the matrix moves on; Ctrl-C
stops the run and returns the records completed so far.
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
from typing import TYPE_CHECKING, Any

from amalia_edge import __version__
from amalia_edge.bench.bandwidth import memory_bandwidth
from amalia_edge.bench.env import backend_version, git_commit, library_versions, size_label
from amalia_edge.bench.records import BenchRecord
from amalia_edge.errors import AmaliaEdgeError, BenchError
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.runtime.sampling import SamplingParams
from amalia_edge.telemetry import (
    Monitor,
    Snapshot,
    default_monitor,
    integrate,
    interpolate,
    power_series,
)

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo
    from amalia_edge.runtime.model import Model

log = logging.getLogger(__name__)

# llama-bench's default tests (pp512, tg128).
DEFAULT_N_PROMPT = 512
DEFAULT_N_GEN = 128

# Greedy decoding that ignores end-of-sequence, so every run generates the same count.
BENCH_SAMPLING = SamplingParams(temperature=0.0, seed=0, ignore_eos=True)

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
    def n_ctx_needed(self) -> int:
        """Context a run needs: the prompt (at least one token), the generated tokens, the
        extra token a tgN run decodes (see the module docstring) and one spare."""
        return max(self.n_prompt, 1) + self.n_gen + 2

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


def fit_test(test: TestSpec, n_ctx: int) -> TestSpec:
    """``test`` with its token counts halved until it fits ``n_ctx`` (default tests on a
    model trained on a short context: pp512 becomes pp128 on a 256-token model)."""
    p, g = test.n_prompt, test.n_gen
    while TestSpec(p, g).n_ctx_needed > n_ctx and (p > 1 or g > 1):
        p, g = p // 2, g // 2
    return TestSpec(p, g)


def check_fits(
    tests: Sequence[TestSpec], n_ctx: int, model_ctx: int | None, ctx_asked: bool
) -> None:
    """One BenchError with the right hint when a test the user asked for does not fit.

    ``n_ctx``: the context the run will have (``--ctx`` when ``ctx_asked``, else the model's
    ``model_ctx``). The hint names what can change: ``--ctx`` while the model holds more,
    otherwise the test's own ``-p``/``-n`` count.
    """
    for t in tests:
        need = t.n_ctx_needed
        if need <= n_ctx:
            continue
        if ctx_asked and (model_ctx is None or need <= model_ctx):
            raise BenchError(
                f"test {t.name} needs a {need}-token context but --ctx is {n_ctx}",
                fix=f"use --ctx {need} or more"
                + (f" (the model holds {model_ctx})" if model_ctx else ""),
            )
        room = n_ctx - 2  # what prompt + generated tokens may use
        if t.kind == "pp":
            fix = f"use -p {room} or less"
        elif t.kind == "tg":
            fix = f"use -n {room - 1} or less"
        else:
            fix = f"keep P + G at most {room} in ppP+tgG / -pg P,G"
        where = "--ctx" if ctx_asked else "the model's context"
        raise BenchError(
            f"test {t.name} needs a {need}-token context but {where} holds {n_ctx} tokens",
            fix=fix,
        )


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
    # Tests that are defaults, not asked for: those that exceed the model's context shrink
    # instead of failing (see fit_test); the record notes say so.
    default_tests: Sequence[TestSpec] = ()

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
    notes: list[str] = field(default_factory=list)  # e.g. default tests fitted to the context


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


class Runner:
    """Runs a :class:`BenchConfig`. Split out of :func:`run_bench` so tests can inject parts."""

    def __init__(
        self,
        config: BenchConfig,
        *,
        progress: Callable[[str], None] | None = None,
        on_record: Callable[[BenchRecord], None] | None = None,
        load: Callable[..., Model] | None = None,
        device: DeviceInfo | None = None,
        monitor: Monitor | None = None,
        model_ctx: int | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.progress = progress or (lambda _msg: None)
        self.on_record = on_record or (lambda _r: None)
        self._load = load
        self.device = device
        self.monitor = monitor
        # The model's training context (None: read from MODEL's artifacts, or unknown).
        self.model_ctx = model_ctx
        self.tests = list(config.tests)
        self.notes: list[str] = []
        self._prompt_cache: list[int] | None = None

    # -- setup -------------------------------------------------------------------------------
    def _probe(self) -> DeviceInfo | None:
        if self.device is None:
            try:
                from amalia_edge.device import probe

                self.device = probe()
            except Exception as exc:  # probing is context for the record, never fatal
                log.warning("device probe failed: %s", exc)
        return self.device

    def _loader(self) -> Callable[..., Model]:
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

    def _model_ctx(self) -> int | None:
        """The shortest training context among MODEL's artifacts (None when unreadable: the
        load then reports why)."""
        if self.model_ctx is None and self._load is None and self.config.model is not None:
            from amalia_edge.runtime.artifacts import resolve_model

            try:
                source = resolve_model(self.config.model)
            except AmaliaEdgeError:
                return None
            trained = [a.shape.n_ctx_train for a in source.usable() if a.shape]
            self.model_ctx = min((n for n in trained if n > 0), default=None)
        return self.model_ctx

    def fit(self) -> None:
        """Fit the tests to the context: shrink default tests, or one error with the hint."""
        cfg, model_ctx = self.config, self._model_ctx()
        limit = cfg.n_ctx or model_ctx
        if limit is None:
            return
        if cfg.default_tests and not cfg.n_ctx:
            fitted = [fit_test(t, limit) if t in cfg.default_tests else t for t in self.tests]
            changed = [(a, b) for a, b in zip(self.tests, fitted, strict=True) if a != b]
            if changed:
                was = ", ".join(a.name for a, _ in changed)
                now = ", ".join(b.name for _, b in changed)
                self.notes.append(
                    f"default test {was} fitted to the model's {limit}-token context: {now}"
                )
                self.tests = list(dict.fromkeys(fitted))
        check_fits(self.tests, limit, model_ctx, ctx_asked=bool(cfg.n_ctx))

    def n_ctx(self) -> int:
        if self.config.n_ctx:
            return self.config.n_ctx
        # Just enough for the largest test, rounded up a little but never past the model's
        # training context (selection rejects a longer one).
        need = max(t.n_ctx_needed for t in self.tests)
        ctx = -(-need // 32) * 32
        return min(ctx, self.model_ctx) if self.model_ctx else ctx

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> BenchResult:
        cfg = self.config
        res = BenchResult()
        self.fit()  # a test that cannot fit fails now, before any measurement
        res.notes = self.notes
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

    def _environment(
        self, device: DeviceInfo | None, bw: float | None, bw_source: str | None
    ) -> dict[str, Any]:
        commit = git_commit()
        env: dict[str, Any] = {
            "memory_bandwidth": bw,
            "memory_bandwidth_source": bw_source,
            "library_versions": library_versions(),
            "amalia_edge_version": __version__,
            "git_commit": commit,
            "build_commit": commit,
        }
        if device is not None:
            env.update(
                board=device.board.name if device.board else None,
                l4t=device.l4t_release,
                jetpack=device.jetpack,
                power_mode=device.power_mode,
                jetson_clocks=device.jetson_clocks,
                cpu_info=device.cpu_model,
                gpu_info=device.gpus[0].name if device.gpus else None,
                device_fingerprint=device.fingerprint(),
            )
        return env

    def _combination(
        self,
        load: Callable[..., Model],
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
        self._prompt_cache = None
        try:
            for test in self.tests:
                try:
                    rec = self._test(model, test, quant, env, mon, t_load)
                except AmaliaEdgeError as exc:  # generation failed: report once, go on
                    res.errors.append(f"{label} {test.name}: {exc}")
                    self.progress(f"{label} {test.name}: {exc}")
                    return
                res.records.append(rec)
                self.on_record(rec)
        finally:
            model.close()

    def _prompt(self, model: Model, n: int, rotation: int) -> list[int]:
        if self._prompt_cache is None or len(self._prompt_cache) < n + rotation + 1:
            tokenize = model.session.tokenize
            text, ids = PROMPT_TEXT, tokenize(PROMPT_TEXT, add_bos=False, special=False)
            if not ids:
                raise BenchError("the tokenizer returned no tokens", fix="check the model file")
            while len(ids) < n + rotation + 1:
                text += PROMPT_TEXT
                ids = tokenize(text, add_bos=False, special=False)
            self._prompt_cache = ids
        return self._prompt_cache[rotation : rotation + max(n, 1)]

    def _test(
        self,
        model: Model,
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
                f"{model.backend_name} {quant or ''} {test.name} {what}".replace("  ", " ")
            )
            prompt = self._prompt(model, test.n_prompt, i)
            trace = consume(model.stream(prompt, sampling=BENCH_SAMPLING, max_tokens=max_tokens))
            if i >= cfg.warmup:
                timed.append(timed_span(test, trace))
        # Power is integrated over the timed spans: wait until a sample lies past the last one.
        self._wait_for_sample_after(mon, timed[-1].trace.finished.t_end)
        return self._record(model, test, quant, env, mon, timed, test_time, t_load)

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
        model: Model,
        test: TestSpec,
        quant: str | None,
        env: dict[str, Any],
        mon: Monitor,
        timed: list[Timed],
        test_time: str,
        t_load: float,
    ) -> BenchRecord:
        cfg = self.config
        art = model.artifact
        ns = [t.seconds * 1e9 for t in timed]
        ts = [t.n_tokens / t.seconds if t.seconds > 0 else 0.0 for t in timed]
        rec = BenchRecord(
            test=test.name,
            backend=model.backend_name,
            quant=art.quant or quant,
            model_filename=str(art.path),
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
            backend_version=backend_version(model.backend_name),
            telemetry_interval_s=mon.interval,
            **{k: v for k, v in env.items() if k in BenchRecord.__dataclass_fields__},
        )
        rec.notes.extend(self.notes)
        params = art.params
        arch = art.shape.architecture if art.shape else "llama"
        rec.model_size = art.weight_bytes or art.size
        rec.model_n_params = params
        rec.model_type = " ".join(
            x for x in (arch, size_label(params) if params else None, rec.quant) if x
        )
        # The one rule for bytes read per decode step: the backend's, as selection uses it.
        from amalia_edge.runtime import registry

        rec.bytes_per_token = registry.get(model.backend_name).decode_bytes_per_token(
            art, model.n_ctx
        )
        _load_params(rec, model)
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


def _load_params(rec: BenchRecord, model: Model) -> None:
    """llama-bench's build/run parameters: the llama.cpp session's load parameters."""
    if model.backend_name != "llama.cpp":
        return
    from amalia_edge.runtime.backends.llamacpp import KV_CACHE_GGML_TYPES, LlamaCppSession

    session = model.session
    if not isinstance(session, LlamaCppSession):
        return
    rec.backends = "CUDA" if session.gpu else "CPU"
    params = session.params
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
    load: Callable[..., Model] | None = None,
    device: DeviceInfo | None = None,
    monitor: Monitor | None = None,
    model_ctx: int | None = None,
) -> BenchResult:
    """Run the benchmark matrix; see the module docstring. Raises BenchError if nothing ran,
    or before running when a test cannot fit the context (:func:`check_fits`)."""
    return Runner(
        config,
        progress=progress,
        on_record=on_record,
        load=load,
        device=device,
        monitor=monitor,
        model_ctx=model_ctx,
    ).run()
