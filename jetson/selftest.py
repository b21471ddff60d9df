"""Hardware self-test for a real Jetson: one JSON report to commit under benchmarks/.

    python jetson/selftest.py ARTIFACTS_DIR [--out FILE] [--backends A,B] [--quants X,Y]
                              [--repetitions N] [--no-bench] [--force]

Runs, through the same CLI a user runs:

1. ``amalia-edge doctor --deep --json``: device (board, L4T/JetPack, power, fingerprint),
   the checks that verify the CUDA builds initialize, and each backend's availability;
2. ``amalia-edge power --json``: nvpmodel mode, the board's modes, jetson_clocks;
3. ``amalia-edge bench ARTIFACTS --backend ... --quant ... -o json``: pp512 and tg128 for
   every backend × quant type in the artifacts' manifest (a backend that cannot load is
   reported by bench and the matrix goes on).

The report (``benchmarks/jetson-selftest-<module>-<date>.json`` by default) keeps every
command's exit status and output, so a failed step is evidence too. Nothing is changed on
the board: when it is not in its fastest power mode with clocks locked, the report says so
and the fix is printed (``sudo amalia-edge power --set MAXN --clocks on``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _cli() -> list[str]:
    exe = shutil.which("amalia-edge")
    return [exe] if exe else [sys.executable, "-m", "amalia_edge"]


def run_json(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``amalia-edge ARGS``; keep argv, exit status, parsed JSON (or raw output), seconds."""
    argv = [*_cli(), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"argv": argv, "returncode": None, "error": f"timed out after {timeout:.0f} s"}
    out: dict[str, Any] = {
        "argv": argv,
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    try:
        out["result"] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out["stdout"] = proc.stdout[-4000:]
    if proc.stderr.strip():
        out["stderr"] = proc.stderr[-4000:]
    return out


def manifest_quants(artifacts: Path) -> list[str]:
    try:
        manifest = json.loads((artifacts / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return sorted({str(a["quant"]) for a in manifest.get("artifacts", []) if a.get("quant")})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selftest.py", description=__doc__.splitlines()[0])
    p.add_argument("artifacts", type=Path, help="artifacts directory (amalia-edge quantize)")
    p.add_argument("--out", type=Path, default=None, help="report file (default: benchmarks/...)")
    p.add_argument("--backends", default="llama.cpp,onnxruntime,tensorrt")
    p.add_argument("--quants", default=None, help="default: every quant type in the manifest")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("--no-bench", action="store_true", help="doctor and power only")
    p.add_argument("--force", action="store_true", help="run on a machine that is not a Jetson")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from amalia_edge.artifacts.atomic import atomic_write_json
    from amalia_edge.device import probe

    info = probe(None)
    if not info.is_jetson and not args.force:
        print(
            "selftest.py: error: this is not a Jetson; the report is meant for a real board "
            "(pass --force to run anyway)",
            file=sys.stderr,
        )
        return 2
    report: dict[str, Any] = {
        "schema": "amalia-edge/jetson-selftest/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": info.fingerprint(),
        "board": info.board.name if info.board else info.model,
        "doctor": run_json(["doctor", "--deep", "--json"], timeout=600),
        "power": run_json(["power", "--json"], timeout=60),
    }
    power = report["power"].get("result") or {}
    if power.get("is_fastest") is False:
        report["power_warning"] = (
            f"not in the fastest mode with clocks locked ({power.get('mode')}, jetson_clocks "
            f"{power.get('jetson_clocks')}): sudo amalia-edge power --set {power.get('fastest')} "
            "--clocks on, then run the self-test again"
        )
        print(f"selftest.py: warning: {report['power_warning']}", file=sys.stderr)
    if not args.no_bench:
        quants = args.quants or ",".join(manifest_quants(args.artifacts))
        bench_args = [
            "bench",
            str(args.artifacts),
            "--backend",
            args.backends,
            "-p",
            "512",
            "-n",
            "128",
            "-r",
            str(args.repetitions),
            "-o",
            "json",
        ]
        if quants:
            bench_args += ["--quant", quants]
        report["bench"] = run_json(bench_args, timeout=3600)
    module = info.module_id or "unknown"
    out = (
        args.out or REPO / "benchmarks" / f"jetson-selftest-{module}-{report['created'][:10]}.json"
    )
    atomic_write_json(out, report)
    print(out)
    failed = [
        k
        for k in ("doctor", "power", "bench")
        if k in report and report[k].get("returncode") not in (0,)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
