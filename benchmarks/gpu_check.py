#!/usr/bin/env python3
"""One command that checks amalia-edge on an NVIDIA GPU machine, or says there is none.

    python3 benchmarks/gpu_check.py [MODEL] [--out DIR] [--size auto|0.8b|small] [--quick]

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (default DIR: ``gpu_check/``), both
rewritten atomically after every step, so a run cut short (a timeout, a crash, Ctrl-C) still
reports everything done so far and names the step that was running. The steps:

1. ``doctor``: ``amalia-edge doctor --deep --json`` (device facts, checks, backends);
2. ``nvml``: NVML's facts (driver, CUDA, each GPU, which fields it answers) or why none;
3. ``llama_build``: llama-cpp-python's version and ``llama_supports_gpu_offload()``;
4. ``onnxruntime``: the providers an ONNX Runtime session really initialised;
5. ``model``: MODEL, or a random-weight Llama built with ``tests/factory.py`` (the bundled
   demo model's tokenizer, so it needs no corpus) and converted by amalia-edge's converter to
   F16 / Q8_0 / Q4_K_M. ``--size auto``: 0.8B parameters where there is an NVIDIA GPU, a
   45M-parameter one on a CPU-only machine (said in the report), so the CPU run ends in
   minutes;
6. ``selection``: per quant, what the runtime chooses and why (GPU offload or not);
7. ``generate``: ``amalia-edge generate`` per quant; ``check_generation``:
   ``jetson/check_generation.py MODEL`` (exit 1 on the CPU is the expected answer there);
8. ``bench``: per quant, in a child process, ``amalia-edge bench``'s pp512 / tg128
   (``amalia_edge.bench.run_bench``: tokens/s, TTFT, ITL percentiles, W, J/token from the
   telemetry monitor, NVML where there is a GPU) and the same tests by llama-cpp-python
   called directly with the parameters our backend loaded the model with, in the same child
   in A B B A blocks (ours, direct, direct, ours); ratio ours ÷ direct over the pooled
   repetitions (target >= 0.98 for decode).

Each model-running step is a child process with a timeout: a crash in a native library
(a segfault in llama.cpp, a CUDA abort) becomes that step's result, and the run goes on.
The exit status is 0 when every step that applies passed (on a CPU-only machine: the CPU path
worked and the report says "no NVIDIA GPU"), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEMO_TOKENIZER = REPO / "amalia_edge" / "data" / "demo" / "tokenizer.model"
DEFAULT_QUANTS = ("F16", "Q8_0", "Q4_K_M")
PROMPT = "Olá! Em que cidade fica a Torre de Belém?"
TERMINATED = threading.Event()  # SIGTERM seen (see _terminated)

# Random-weight Llamas built with tests/factory.py. "0.8b": 16 layers × 25.2M + embeddings and
# head 2 × 128000 × 1536 = 0.797B parameters (EuroLLM's 128k vocabulary, GQA 12/4 heads).
# "small": 4 × 2.95M + 2 × 32000 × 512 = 44.6M, for CPU-only machines.
SIZES: dict[str, dict[str, int]] = {
    "0.8b": {
        "hidden_size": 1536,
        "intermediate_size": 4096,
        "num_hidden_layers": 16,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "vocab": 128000,
    },
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab": 32000,
    },
}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tail(text: str | None, lines: int = 8) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


# -- the report -----------------------------------------------------------------------------------
class Report:
    """The results so far; :meth:`save` rewrites the JSON and the Markdown atomically."""

    def __init__(self, out: Path, argv: list[str]) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "tool": "benchmarks/gpu_check.py",
            "argv": argv,
            "started": now_iso(),
            "finished": None,
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "gpu": None,  # True / False once known
            "flash_attn_env": os.environ.get("AMALIA_EDGE_FLASH_ATTN"),
            "steps": {},
        }
        out.mkdir(parents=True, exist_ok=True)

    @property
    def steps(self) -> dict[str, Any]:
        steps: dict[str, Any] = self.data["steps"]
        return steps

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one step: marked running first (saved), then its result or its error (saved)."""
        self.steps[name] = {"status": "running", "started": now_iso()}
        self.save()
        t0 = time.perf_counter()
        try:
            result = fn()
        except KeyboardInterrupt:
            self.steps[name] = {"status": "interrupted", "seconds": time.perf_counter() - t0}
            self.save()
            raise
        except Exception as exc:  # a step's failure is its result; the next step still runs
            result = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
        if TERMINATED.is_set():
            self.steps[name] = {"status": "interrupted", "seconds": time.perf_counter() - t0}
            self.save()
            raise KeyboardInterrupt
        result.setdefault("status", "ok")
        result["seconds"] = round(time.perf_counter() - t0, 2)
        self.steps[name] = result
        self.save()
        return result

    def save(self) -> None:
        from amalia_edge.artifacts.atomic import atomic_write_text

        atomic_write_text(
            self.out / "gpu_check.json", json.dumps(self.data, indent=2, default=str) + "\n"
        )
        atomic_write_text(self.out / "gpu_check.md", render_markdown(self.data))


# -- steps ----------------------------------------------------------------------------------------
def step_doctor() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "amalia_edge", "doctor", "--deep", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=child_env(),
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"status": "fail", "returncode": proc.returncode, "stderr": tail(proc.stderr)}
    checks = report.get("checks", [])
    counts: dict[str, int] = {}
    for c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    device = report.get("device", {})
    return {
        # doctor exits 1 when a check failed: that is a finding, reported, not a crash
        "status": "ok",
        "returncode": proc.returncode,
        "counts": counts,
        "failed": [f"{c['name']}: {c['detail']}" for c in checks if c["status"] == "fail"],
        "gpus": device.get("gpus", []),
        "cpu": device.get("cpu_model"),
        "cores": device.get("cores"),
        "mem_total": device.get("mem_total"),
        "is_jetson": device.get("is_jetson"),
        "report": report,
    }


def step_nvml() -> dict[str, Any]:
    from amalia_edge.telemetry.nvml import nvml_facts

    facts = nvml_facts()
    return {"status": "ok" if facts.get("available") else "unavailable", **facts}


def step_llama_build() -> dict[str, Any]:
    try:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()
    except ImportError as exc:
        return {"status": "fail", "error": f"llama-cpp-python not importable: {exc}"}
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return {
        "version": getattr(llama_cpp, "__version__", None),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": text.strip(),
    }


ORT_PROBE = """
import json
from amalia_edge.device.checks import Probes
sess = Probes().ort_session()
print(json.dumps(None if sess is None else {
    "version": sess.version, "available": list(sess.available),
    "initialized": list(sess.initialized), "error": sess.error}))
"""


def step_onnxruntime() -> dict[str, Any]:
    """In a child: on the first H200 run (2026-12-04) creating the session crashed the whole
    check (exit 139); here a crash is this step's result."""
    r = run_child([sys.executable, "-X", "faulthandler", "-c", ORT_PROBE], timeout=120)
    lines = (r.get("stdout") or "").strip().splitlines()
    rec = {k: v for k, v in r.items() if k != "stdout"}
    if r["returncode"] != 0 or not lines:
        return {**rec, "status": "fail", "error": rec.get("signal") or rec.get("stderr")}
    sess = json.loads(lines[-1])
    if sess is None:
        return {"status": "skipped", "error": "onnxruntime is not installed"}
    return {"status": "fail" if sess["error"] else "ok", **sess}


def build_model(work: Path, size: str, quants: list[str]) -> dict[str, Any]:
    """A random-weight Llama (tests/factory.py) converted by amalia-edge to ``quants``."""
    import sentencepiece as spm

    from amalia_edge.convert.pipeline import quantize
    from tests import factory

    sp = spm.SentencePieceProcessor(model_file=str(DEMO_TOKENIZER))
    specials = [sp.id_to_piece(i) for i in range(len(factory.SPM_SPECIALS))]
    if tuple(specials) != factory.SPM_SPECIALS:
        raise RuntimeError(f"the demo tokenizer's first pieces are {specials}, not the factory's")
    dims = dict(SIZES[size])
    vocab = dims.pop("vocab")
    t0 = time.perf_counter()
    ckpt = factory.build_checkpoint(
        work / f"ckpt-{size}",
        dtype="BF16",
        tokenizer_model=str(DEMO_TOKENIZER),
        extra_vocab=vocab - int(sp.vocab_size()),
        **dims,
    )
    t_ckpt = time.perf_counter() - t0
    out = work / f"artifacts-{size}"
    t0 = time.perf_counter()
    manifest = quantize(ckpt, out, ",".join(quants), imatrix="none", progress=False)
    t_conv = time.perf_counter() - t0
    arts = [
        {"quant": a.quant, "file": a.file, "size": a.size, "params": a.params}
        for a in manifest.artifacts
        if a.kind == "gguf"
    ]
    return {
        "path": str(out),
        "built": True,
        "size": size,
        "spec": {**dims, "vocab": vocab, "dtype": "BF16"},
        "params": arts[0]["params"] if arts else None,
        "artifacts": arts,
        "checkpoint_seconds": round(t_ckpt, 2),
        "convert_seconds": round(t_conv, 2),
    }


def model_quants(path: str) -> list[str]:
    from amalia_edge.runtime.artifacts import resolve_model

    source = resolve_model(path)
    return [a.quant for a in source.usable() if a.kind == "gguf"]


def step_selection(model: str, quants: list[str], n_ctx: int) -> dict[str, Any]:
    from amalia_edge.device import probe
    from amalia_edge.runtime import registry
    from amalia_edge.runtime.model import plan

    device = probe(None)
    out: dict[str, Any] = {"n_ctx": n_ctx, "per_quant": {}}
    for q in quants:
        _, sel, _ = plan(model, quant=q, n_ctx=n_ctx, device=device)
        chosen = sel.chosen
        if chosen is None:
            out["per_quant"][q] = {"chosen": None, "table": sel.format_table()}
            continue
        details = dict(registry.get(chosen.backend).probe(device).details)
        out["per_quant"][q] = {
            "backend": chosen.backend,
            "gpu_offload": details.get("gpu_offload"),
            "why": "; ".join(chosen.reasons),
            "table": sel.format_table(),
        }
    return out


def run_child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run a child; a crash or a timeout is a result (signal name, stderr tail), not an error."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        return {"returncode": None, "timeout": timeout, "stdout": tail(out), "crashed": False}
    res: dict[str, Any] = {
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr": tail(proc.stderr),
        "wall_s": round(time.perf_counter() - t0, 2),
        "crashed": proc.returncode < 0,
    }
    if proc.returncode < 0:
        res["signal"] = signal.Signals(-proc.returncode).name
    return res


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def step_generate(model: str, quants: list[str], gpu: bool) -> dict[str, Any]:
    per: dict[str, Any] = {}
    ok = True
    for q in quants:
        r = run_child(
            [
                sys.executable,
                "-m",
                "amalia_edge",
                "generate",
                model,
                PROMPT,
                "--quant",
                q,
                "--max-tokens",
                "32",
                "--temperature",
                "0",
                "--json",
            ],
            timeout=300,
        )
        rec = {k: v for k, v in r.items() if k != "stdout"}
        lines = [ln for ln in (r.get("stdout") or "").splitlines() if ln.startswith("{")]
        if lines:
            with contextlib.suppress(json.JSONDecodeError):
                rec["record"] = json.loads(lines[-1])
        rec["passed"] = r["returncode"] == 0
        ok = ok and rec["passed"]
        per[q] = rec
    return {"status": "ok" if ok else "fail", "per_quant": per}


def step_check_generation(model: str, gpu: bool) -> dict[str, Any]:
    r = run_child(
        [sys.executable, str(REPO / "jetson" / "check_generation.py"), model], timeout=300
    )
    lines = [ln for ln in (r.get("stdout") or "").splitlines() if ln.startswith("{")]
    try:
        rec = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        rec = None
    res: dict[str, Any] = {k: v for k, v in r.items() if k != "stdout"}
    res["record"] = rec
    if r["returncode"] == 0:
        res["status"] = "ok"
    elif not gpu and r["returncode"] == 1 and rec is not None and rec.get("gpu") is False:
        res["status"] = "expected"  # it generated, on the CPU: the right answer without a GPU
    else:
        res["status"] = "fail"
    return res


def step_bench(model: str, quant: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result_file = work / f"bench-{quant}.json"
    result_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker-bench",
        str(result_file),
        model,
        "--quant",
        quant,
        "--pp",
        str(args.pp),
        "--tg",
        str(args.tg),
        "--reps",
        str(args.reps),
    ]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    r = run_child(argv, timeout=args.bench_timeout)
    res: dict[str, Any] = {k: v for k, v in r.items() if k != "stdout"}
    if result_file.is_file():
        res.update(json.loads(result_file.read_text()))
    done = res.get("blocks_done") == 4
    res["status"] = "ok" if r["returncode"] == 0 and done else "fail"
    return res


# -- the bench worker (a child process per quant) -------------------------------------------------
def prompt_text() -> str:
    try:
        from amalia_edge.bench.runner import PROMPT_TEXT

        return str(PROMPT_TEXT)
    except ImportError:  # the runner moved it: any pt-PT text of enough tokens will do
        return "A cidade de Lisboa estende-se pelas colinas junto ao estuário do Tejo. "


def summarize(values: list[float]) -> dict[str, Any]:
    return {
        "avg_ts": statistics.fmean(values),
        "stddev_ts": statistics.stdev(values) if len(values) > 1 else 0.0,
        "samples_ts": values,
    }


def direct_bench(
    path: str, params: dict[str, Any], pp: int, tg: int, reps: int, warmup: int
) -> dict[str, Any]:
    """pp / tg by llama-cpp-python itself, as the bench defines them (same prompt ids).

    ppN: ``Llama.eval`` of the N-token prompt after ``reset()`` (our backend times the same
    call inside ``Llama.generate``). tgN: ``Llama.generate`` from a one-token prompt, greedy
    with our sampler's defaults; the span runs from the first token to the (N+1)-th, each
    token detokenized as a streaming caller must. Prompts rotate per repetition like the
    bench's, so no repetition reuses the previous one's KV-cache prefix.
    """
    from amalia_edge.runtime.native import import_llama_cpp

    llama_cpp = import_llama_cpp()

    llm = llama_cpp.Llama(model_path=path, **params)
    try:
        text, need = prompt_text(), max(pp, 1) + warmup + reps + 1
        ids = list(llm.tokenize(text.encode(), add_bos=False, special=False))
        while len(ids) < need:
            text += prompt_text()
            ids = list(llm.tokenize(text.encode(), add_bos=False, special=False))
        out: dict[str, Any] = {}
        if pp:
            rates = []
            for i in range(warmup + reps):
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(ids[i : i + pp])
                dt = time.perf_counter() - t0
                if i >= warmup:
                    rates.append(pp / dt)
            out[f"pp{pp}"] = summarize(rates)
        if tg:
            rates = []
            for i in range(warmup + reps):
                stamps: list[float] = []
                gen = llm.generate(
                    ids[i : i + 1],
                    top_k=40,
                    top_p=0.95,
                    min_p=0.05,
                    temp=0.0,
                    repeat_penalty=1.0,
                    reset=True,
                )
                for tok in gen:
                    llm.detokenize([tok])
                    stamps.append(time.perf_counter())
                    if len(stamps) == tg + 1:
                        break
                gen.close()
                if i >= warmup:
                    rates.append(tg / (stamps[-1] - stamps[0]))
            out[f"tg{tg}"] = summarize(rates)
        return out
    finally:
        llm.close()


def worker_bench(result_file: Path, args: argparse.Namespace) -> int:
    """Ours (run_bench) then direct, for one quant; the file is rewritten after each side."""
    from amalia_edge.artifacts.atomic import atomic_write_text
    from amalia_edge.bench import BenchConfig, make_tests, run_bench
    from amalia_edge.runtime import load_model
    from amalia_edge.runtime.artifacts import resolve_model

    out: dict[str, Any] = {"quant": args.quant}

    def save() -> None:
        atomic_write_text(result_file, json.dumps(out, indent=2, default=str))

    captured: list[dict[str, Any]] = []

    def load(*a: Any, **kw: Any) -> Any:
        model = load_model(*a, **kw)
        params = getattr(getattr(model, "session", None), "params", None)
        if isinstance(params, dict):
            captured.append(dict(params))
        return model

    cfg = BenchConfig(
        model=args.model,
        tests=make_tests([args.pp] if args.pp else [0], [args.tg] if args.tg else [0]),
        repetitions=args.reps,
        warmup=1,
        backends=["llama.cpp"],
        quants=[args.quant],
        measure_bandwidth=False,
        n_threads=args.threads,
    )
    # A B B A: ours, direct, direct, ours, so drift (clocks, heat, other load) hits both
    # sides alike; the ratio pools every timed repetition of each side.
    ours_ts: dict[str, list[float]] = {}
    direct_ts: dict[str, list[float]] = {}
    for block, side in enumerate(("ours", "direct", "direct", "ours")):
        if side == "ours":
            res = run_bench(cfg, load=load)
            if block == 0:  # the first block's records as the bench made them
                out["ours"] = {r.test: dataclasses.asdict(r) for r in res.records}
                out["ours_errors"] = res.errors
                out["params"] = captured[0] if captured else None
            for r in res.records:
                ours_ts.setdefault(r.test, []).extend(r.samples_ts)
        else:
            if not captured:
                out["direct_error"] = "the backend's load parameters were not available"
                save()
                return 1
            art = next(a for a in resolve_model(args.model).usable() if a.quant == args.quant)
            d = direct_bench(str(art.path), captured[0], args.pp, args.tg, args.reps, 1)
            out.setdefault("direct", d)
            for test, v in d.items():
                direct_ts.setdefault(test, []).extend(v["samples_ts"])
        out["pooled"] = {
            test: {
                "ours_avg_ts": statistics.fmean(ours_ts[test]),
                "direct_avg_ts": statistics.fmean(direct_ts[test]),
                "ratio": statistics.fmean(ours_ts[test]) / statistics.fmean(direct_ts[test]),
                "ours_samples_ts": ours_ts[test],
                "direct_samples_ts": direct_ts[test],
            }
            for test in ours_ts
            if direct_ts.get(test)
        }
        out["blocks_done"] = block + 1
        save()
    return 0


# -- Markdown ---------------------------------------------------------------------------------
ITL_KEYS = ("itl_p50_ms", "itl_p90_ms", "itl_p99_ms")


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def render_markdown(data: dict[str, Any]) -> str:
    s = data["steps"]
    gpu = data.get("gpu")
    lines = [f"# amalia-edge GPU check — {data['host']}", ""]
    verdict = {True: "NVIDIA GPU present", False: "no NVIDIA GPU: the CPU path was checked"}
    lines.append(
        f"{data['started']} → {data.get('finished') or 'unfinished (see running step)'}; "
        f"Python {data['python']}; {verdict.get(gpu, 'GPU not determined yet')}."
    )
    if data.get("note"):
        lines += ["", f"_{data['note']}_"]
    lines += ["", "## Machine", "", "| | |", "| --- | --- |"]
    nv = s.get("nvml") or {}
    if nv.get("available"):
        for g in nv.get("gpus", []):
            now = g.get("now") or {}
            lines.append(
                f"| GPU {g['index']} | {g.get('name')}, CUDA cc {g.get('cuda_cc')}, "
                f"{_f((g.get('memory_total') or 0) / 2**30)} GiB, power limit "
                f"{_f(g.get('power_limit_w'), '{:.0f}')} W, idle {_f(now.get('power_w'))} W |"
            )
        lines.append(
            f"| driver / CUDA | {nv.get('driver')} / {nv.get('cuda_driver')}; J/token from "
            f"{'the energy counter' if nv.get('energy_counter') else '∫P dt'} |"
        )
    elif nv:
        lines.append(f"| GPU | no NVIDIA GPU: {nv.get('reason') or nv.get('error')} |")
    doc = s.get("doctor") or {}
    if doc.get("cpu"):
        lines.append(f"| CPU | {doc['cpu']} × {doc.get('cores')} |")
    lb = s.get("llama_build") or {}
    if lb:
        lines.append(
            f"| llama-cpp-python | {lb.get('version')}, llama_supports_gpu_offload = "
            f"{lb.get('gpu_offload')} |"
        )
    if data.get("flash_attn_env"):
        lines.append(f"| flash attention | AMALIA_EDGE_FLASH_ATTN={data['flash_attn_env']} |")
    ort = s.get("onnxruntime") or {}
    if ort:
        lines.append(
            f"| ONNX Runtime | {ort.get('version')}, initialised: "
            f"{', '.join(ort.get('initialized') or []) or ort.get('error')} |"
        )
    if doc.get("counts"):
        counts = ", ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
        lines.append(f"| doctor --deep | {counts} |")
        lines += [f"| doctor fail | {f} |" for f in doc.get("failed", [])]
    m = s.get("model") or {}
    if m.get("path"):
        lines += ["", "## Model", ""]
        if m.get("built"):
            spec = m["spec"]
            lines.append(
                f"Random-weight Llama built with `tests/factory.py` ({m['size']}: "
                f"{_f((m.get('params') or 0) / 1e9, '{:.3f}')}B parameters, "
                f"{spec['num_hidden_layers']} layers, hidden {spec['hidden_size']}, vocabulary "
                f"{spec['vocab']}, BF16), converted by amalia-edge in "
                f"{_f(m.get('convert_seconds'))} s: "
                + ", ".join(f"{a['quant']} {a['size'] / 2**20:.0f} MiB" for a in m["artifacts"])
                + "."
            )
        else:
            lines.append(f"MODEL {m['path']}: {', '.join(m.get('quants', []))}.")
        if m.get("size_note"):
            lines.append(f"_{m['size_note']}_")
    sel = s.get("selection") or {}
    gen = (s.get("generate") or {}).get("per_quant", {})
    if sel.get("per_quant"):
        lines += [
            "",
            "## Selection and generation",
            "",
            "| quant | chosen | GPU offload | why | generate |",
            "| --- | --- | --- | --- | --- |",
        ]
        for q, r in sel["per_quant"].items():
            g = gen.get(q) or {}
            rec = g.get("record") or {}
            gtxt = (
                f"ok, {rec.get('completion_tokens', '?')} tokens"
                if g.get("passed")
                else (f"crashed ({g.get('signal')})" if g.get("crashed") else "failed")
                if g
                else "–"
            )
            lines.append(
                f"| {q} | {r.get('backend')} | {r.get('gpu_offload')} | {r.get('why')} | {gtxt} |"
            )
    cg = s.get("check_generation") or {}
    if cg:
        rec = cg.get("record") or {}
        lines += [
            "",
            f"`jetson/check_generation.py`: **{cg.get('status')}** (exit {cg.get('returncode')}"
            + (f", {cg.get('signal')}" if cg.get("signal") else "")
            + f"; backend {rec.get('backend')}, GPU {rec.get('gpu')}, context {rec.get('n_ctx')})",
        ]
    benches = {k[len("bench ") :]: v for k, v in s.items() if k.startswith("bench ")}
    if benches:
        lines += [
            "",
            "## Bench: amalia-edge vs llama-cpp-python called directly (same run)",
            "",
            "| quant | test | ours tok/s | direct tok/s | ours ÷ direct | TTFT ms | "
            "ITL p50 / p90 / p99 ms | W | J/token | power source | offload |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |",
        ]
        for q, b in benches.items():
            ours = b.get("ours") or {}
            if not ours:
                why = f"crashed ({b.get('signal')})" if b.get("crashed") else b.get("status")
                lines.append(f"| {q} | – | {why} | | | | | | | | |")
                continue
            for test, r in ours.items():
                pooled = (b.get("pooled") or {}).get(test) or {}
                ratio = pooled.get("ratio")
                itl = " / ".join(_f(r.get(k), "{:.2f}") for k in ITL_KEYS)
                lines.append(
                    f"| {q} | {test} | {_f(pooled.get('ours_avg_ts'))} | "
                    f"{_f(pooled.get('direct_avg_ts'))} | {_f(ratio, '{:.3f}')} | "
                    f"{_f(r.get('ttft_ms'))} | "
                    f"{itl} | {_f(r.get('power_avg_w'))} | "
                    f"{_f(r.get('joules_per_token'), '{:.4f}')} | {r.get('power_label') or '–'} "
                    f"| {r.get('backends') or '–'} ngl {r.get('n_gpu_layers')} |"
                )
    lines += ["", "## Steps", "", "| step | status | seconds |", "| --- | --- | ---: |"]
    for name, r in s.items():
        lines.append(f"| {name} | {r.get('status')} | {_f(r.get('seconds'))} |")
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("model", nargs="?", help="artifacts dir or .gguf (default: build one)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check"), help="report directory")
    ap.add_argument("--work", type=Path, default=None, help="where to build the model (tmp)")
    ap.add_argument(
        "--size",
        choices=["auto", *SIZES],
        default="auto",
        help="model to build: 0.8b with an NVIDIA GPU, small (45M) without (auto)",
    )
    ap.add_argument("--quants", default=",".join(DEFAULT_QUANTS), help="types to convert/bench")
    ap.add_argument("--pp", type=int, default=512, help="prompt tokens of the pp test (512)")
    ap.add_argument("--tg", type=int, default=128, help="decode steps of the tg test (128)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per test (3)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (physical cores)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CPU smoke run: small model, pp128 / tg32, 2 reps, 1 thread",
    )
    ap.add_argument("--bench-timeout", type=float, default=240.0, help="per quant, seconds")
    ap.add_argument("--quant", help=argparse.SUPPRESS)
    ap.add_argument("--worker-bench", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.pp, args.tg, args.reps = "small", 128, 32, 2
        args.threads = args.threads or 1  # a shared CPU: one thread is far less noisy
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker_bench is not None:
        return worker_bench(args.worker_bench, args)
    report = Report(args.out, argv)
    signal.signal(signal.SIGTERM, _terminated)  # `timeout` ends us: report, then exit
    quants = [q.strip().upper() for q in args.quants.split(",") if q.strip()]
    try:
        report.run("doctor", step_doctor)
        nv = report.run("nvml", step_nvml)
        doctor_gpus = [g for g in report.steps["doctor"].get("gpus", []) if not g.get("unified")]
        report.data["gpu"] = bool(nv.get("available") and nv.get("gpus")) or bool(doctor_gpus)
        gpu: bool = report.data["gpu"]
        report.run("llama_build", step_llama_build)
        report.run("onnxruntime", step_onnxruntime)
        size = args.size if args.size != "auto" else ("0.8b" if gpu else "small")
        tmp = None
        if args.model:
            model = str(Path(args.model).resolve())
            m = report.run("model", lambda: {"path": model, "built": False})
        else:
            if args.work is None:
                tmp = tempfile.TemporaryDirectory(prefix="gpu_check-")
                work = Path(tmp.name)
            else:
                work = args.work
                work.mkdir(parents=True, exist_ok=True)
            m = report.run("model", lambda: build_model(work, size, quants))
            if args.size == "auto" and not gpu:
                m["size_note"] = (
                    "no NVIDIA GPU: a 45M-parameter model instead of 0.8B, so the CPU run ends "
                    "in minutes (--size 0.8b to insist)"
                )
            model = m.get("path", "")
        if not model or m.get("status") == "fail":
            return finish(report, 1)
        have = model_quants(model)
        m["quants"] = have
        quants = [q for q in quants if q in have] or have
        report.save()
        work_dir = Path(model).parent if Path(model).is_file() else Path(model)
        n_ctx = -(-(max(args.pp, 1) + args.tg + 2) // 32) * 32
        report.run("selection", lambda: step_selection(model, quants, n_ctx))
        report.run("generate", lambda: step_generate(model, quants, gpu))
        report.run("check_generation", lambda: step_check_generation(model, gpu))
        bench_dir = Path(tempfile.mkdtemp(prefix="gpu_check_bench-", dir=work_dir))
        for q in quants:
            report.run(f"bench {q}", lambda q=q: step_bench(model, q, args, bench_dir))
        if tmp is not None:
            tmp.cleanup()
    except KeyboardInterrupt:
        report.data["note"] = "interrupted (Ctrl-C or a timeout's SIGTERM)"
        return finish(report, 130)
    return finish(report, 0 if passed(report.data, gpu) else 1)


def _terminated(signum: int, frame: Any) -> None:
    # subprocess.run kills its child on the way out; Report.run marks the step interrupted.
    # The flag too: raised inside a ctypes callback (llama.cpp's log hook), the exception
    # would be printed and dropped, so Report.run checks the flag after every step.
    TERMINATED.set()
    raise KeyboardInterrupt


def passed(data: dict[str, Any], gpu: bool) -> bool:
    """Every step that applies passed; with a GPU also: offload chosen and built with CUDA."""
    s = data["steps"]
    ok = all(r.get("status") in ("ok", "expected", "unavailable", "skipped") for r in s.values())
    if gpu:
        ok = ok and bool((s.get("llama_build") or {}).get("gpu_offload"))
        sel = (s.get("selection") or {}).get("per_quant", {})
        ok = ok and all(r.get("gpu_offload") for r in sel.values())
    return ok


def finish(report: Report, code: int) -> int:
    report.data["finished"] = now_iso()
    report.data["exit_status"] = code
    report.save()
    print(report.out / "gpu_check.md")
    print((report.out / "gpu_check.md").read_text())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
