#!/usr/bin/env python3
"""Which way of loading a GGUF crashes this machine: a matrix of small child processes.

    python3 benchmarks/gpu_crash_probe.py MODEL.gguf [--out DIR] [--timeout 40]

On the H200 of 2026-12-04, llama-cpp-python's ``Llama`` called directly generated on the GPU,
and so did amalia-edge's ``load_model`` with onnxruntime imported first, while
``amalia-edge generate`` with onnxruntime hidden and ``amalia-edge serve`` (which loads the
model on a thread, with NVML telemetry running) died with SIGSEGV while loading the model.
Each probe below changes one thing from a probe that worked, each in its own interpreter
with Python's faulthandler on, so the first probe that crashes names the cause. Writes
``DIR/gpu_crash_probe.json`` and ``.md`` after every probe (a cut-short run still reports).
Exit status 0 when every probe ran, 1 when any crashed or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Common preamble: the model path, a way to hide a module, and the load under test.
PRE = """
import os, sys, threading, time
G = {gguf!r}
def hide(name):
    import importlib.abc, importlib.machinery
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname == name or fullname.startswith(name + "."):
                raise ImportError(f"{{name}} hidden by gpu_crash_probe")
    sys.meta_path.insert(0, Hide())
"""

HIGH = """
import llama_cpp
m = llama_cpp.Llama(model_path=G, n_gpu_layers=-1, flash_attn={flash}, n_ctx=512,
                    verbose={verbose}{extra})
out = m.create_completion("Olá", max_tokens=4, temperature=0)
print("OK", out["usage"])
"""

LOW = """
import llama_cpp as L
L.llama_backend_init()
mp = L.llama_model_default_params(); mp.n_gpu_layers = -1
box = []
def load():
    box.append(L.llama_model_load_from_file(G.encode(), mp))
{runner}
print("OK", bool(box and box[0]))
"""

NVML_THREAD = """
import pynvml
pynvml.nvmlInit(); _h = pynvml.nvmlDeviceGetHandleByIndex(0)
def _poll():
    while True:
        pynvml.nvmlDeviceGetPowerUsage(_h); pynvml.nvmlDeviceGetTotalEnergyConsumption(_h)
        time.sleep(0.005)
threading.Thread(target=_poll, daemon=True).start()
"""

OURS = """
from amalia_edge.runtime import LoadOptions, load_model
m = load_model(G, n_ctx=512, options=LoadOptions(flash_attn={flash}))
r = m.generate("Olá", max_tokens=4)
print("OK", r.completion_tokens)
"""


def probes(gguf: str) -> list[tuple[str, str, list[str] | None]]:
    """(name, python code, or None and a CLI argv) — each differs from a neighbour in one thing."""
    f = "False"
    in_thread = "t = threading.Thread(target=load); t.start(); t.join()"
    return [
        ("high-level, verbose", HIGH.format(flash=f, verbose=True, extra=""), None),
        ("high-level, quiet", HIGH.format(flash=f, verbose=False, extra=""), None),
        (
            "high-level, quiet, our thread/batch params",
            HIGH.format(
                flash=f,
                verbose=False,
                extra=", n_batch=512, n_ubatch=512, n_threads=8, n_threads_batch=8, "
                "type_k=1, type_v=1, use_mmap=True",
            ),
            None,
        ),
        (
            "high-level + NVML polling thread",
            NVML_THREAD + HIGH.format(flash=f, verbose=True, extra=""),
            None,
        ),
        (
            "high-level after psutil + uvloop",
            "import psutil\ntry:\n    import uvloop\nexcept ImportError:\n    pass\n"
            + HIGH.format(flash=f, verbose=True, extra=""),
            None,
        ),
        ("low-level load, main thread", LOW.format(runner="load()"), None),
        ("low-level load, Python thread", LOW.format(runner=in_thread), None),
        ("low-level load, thread + NVML", NVML_THREAD + LOW.format(runner=in_thread), None),
        (
            "amalia-edge load_model, onnxruntime first",
            "import onnxruntime\n" + OURS.format(flash=f),
            None,
        ),
        (
            "amalia-edge load_model, onnxruntime hidden",
            "hide('onnxruntime')\n" + OURS.format(flash=f),
            None,
        ),
        ("amalia-edge load_model (as shipped)", OURS.format(flash=f), None),
        (
            "amalia-edge generate (CLI)",
            "",
            [
                "-m",
                "amalia_edge",
                "-v",
                "generate",
                gguf,
                "Olá",
                "--max-tokens",
                "4",
                "--temperature",
                "0",
            ],
        ),
    ]


def run_probe(code: str, argv: list[str] | None, gguf: str, timeout: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONFAULTHANDLER": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = [sys.executable, *(argv or ["-c", PRE.format(gguf=gguf) + code])]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout}
    out = {
        "returncode": p.returncode,
        "seconds": round(time.perf_counter() - t0, 2),
        "stdout_tail": p.stdout.strip().splitlines()[-2:],
        "stderr_tail": p.stderr.strip().splitlines()[-14:],
    }
    if p.returncode < 0:
        import signal

        out["status"] = f"crashed ({signal.Signals(-p.returncode).name})"
    else:
        out["status"] = "ok" if p.returncode == 0 else f"exit {p.returncode}"
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# gpu_crash_probe — {results['model']}",
        "",
        "| probe | result | seconds |",
        "| --- | --- | ---: |",
    ]
    for name, r in results["probes"].items():
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '')} |")
    for name, r in results["probes"].items():
        if r["status"] != "ok":
            lines += ["", f"## {name}", "", "```", *r.get("stderr_tail", []), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a .gguf file")
    ap.add_argument("--out", type=Path, default=Path("gpu_crash_probe"))
    ap.add_argument("--timeout", type=float, default=40.0, help="per probe, seconds")
    args = ap.parse_args()
    gguf = str(Path(args.model).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"model": gguf, "probes": {}}
    for name, code, argv in probes(gguf):
        results["probes"][name] = run_probe(code, argv, gguf, args.timeout)
        print(f"{name}: {results['probes'][name]['status']}", flush=True)
        for suffix, text in (
            ("json", json.dumps(results, indent=1)),
            ("md", markdown(results)),
        ):
            tmp = args.out / f".gpu_crash_probe.{suffix}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(args.out / f"gpu_crash_probe.{suffix}")
    return 0 if all(r["status"] == "ok" for r in results["probes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
