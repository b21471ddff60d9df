"""Conversion speed and memory: a ~0.6B-parameter BF16 checkpoint → F16 GGUF.

Targets (issue 2): peak RSS below 1 GB plus the largest tensor, and wall time within 2× of
copying the same bytes on the same disk. Everything is measured in this one run:

* the checkpoint is generated into a temporary directory (``--dir``, default under /tmp) with
  ``tests/factory.py`` (random BF16 weights, EuroLLM-like 128k vocabulary);
* baseline: copying the safetensors bytes to a new file on the same disk (read + write + fsync),
  in a child process;
* amalia-edge: :func:`amalia_edge.convert.gguf.write_gguf` to F16 in a child process, whose
  peak RSS is its own ``VmHWM`` (read inside the child; see ``_common.HWM`` for why not
  ``ru_maxrss``); an idle child that only imports the same modules gives the interpreter's
  own share;
* optionally llama.cpp's ``convert_hf_to_gguf.py --outtype f16`` (``--llama-convert PATH``;
  it needs torch and transformers and is not shipped by the ``gguf`` pip package), in a
  child process measured the same way.

The source files are in the page cache for every contender (they were just written), so the
comparison is CPU + write bandwidth, not cold reads.

Run: ``python3 benchmarks/convert_speed.py [--layers 22] [--keep] [--llama-convert PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HWM, build_checkpoint, copy_seconds, run_child, work_child

# argv: checkpoint dir, output file, "run" | "idle".
CONVERT_CHILD = work_child(
    """
from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.convert.gguf import write_gguf
import gguf, numpy
""",
    "write_gguf(open_checkpoint(sys.argv[1]), sys.argv[2], 'F16')",
)


def _llama_convert(script: Path, src: Path, dst: Path) -> tuple[float, int] | str:
    """Time llama.cpp's converter in a child; peak RSS is the child's own VmHWM.

    Not :func:`_common.run_child`: a failure here (no torch, an old script) is reported in
    the results instead of ending the benchmark."""
    env = dict(os.environ)
    extra = os.environ.get("LLAMA_CONVERT_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = extra + os.pathsep + env.get("PYTHONPATH", "")
    argv = [str(script), str(src), "--outtype", "f16", "--outfile", str(dst)]
    code = (
        HWM + "import runpy, sys, time\n"
        "t = time.perf_counter()\n"
        f"sys.argv = {argv!r}\n"
        f"sys.path.insert(0, {str(script.parent)!r})\n"  # its conversion/ package
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "print(time.perf_counter() - t, hwm())\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
        )
    except OSError as exc:
        return f"could not run: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {tail}"
    inner, rss = proc.stdout.split()[-2:]
    return float(inner), int(rss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to generate (default: a temp dir in /tmp)")
    ap.add_argument("--layers", type=int, default=22, help="decoder layers (22 ≈ 0.6B params)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument(
        "--llama-convert",
        default=None,
        metavar="PATH",
        help="llama.cpp's convert_hf_to_gguf.py, to compare against",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="amalia-bench-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    ckpt_dir = root / "ckpt"
    try:
        t = time.perf_counter()
        build_checkpoint(ckpt_dir, args.layers)
        gen_s = time.perf_counter() - t
        st = ckpt_dir / "model.safetensors"
        from amalia_edge.checkpoint import open_checkpoint

        ckpt = open_checkpoint(ckpt_dir)
        params, largest, src_bytes = ckpt.param_count, ckpt.largest_tensor_nbytes, st.stat().st_size

        copy_s = copy_seconds(st, root)
        idle_rss = run_child(CONVERT_CHILD, str(ckpt_dir), str(root / "x.gguf"), "idle").peak_rss
        conv = run_child(CONVERT_CHILD, str(ckpt_dir), str(root / "out-F16.gguf"), "run")
        conv_s, conv_rss, conv_wall = conv.seconds, conv.peak_rss, conv.wall_s
        out_bytes = (root / "out-F16.gguf").stat().st_size
        (root / "out-F16.gguf").unlink()

        res: dict[str, object] = {
            "params": params,
            "source_bytes": src_bytes,
            "largest_tensor_bytes": largest,
            "generate_s": round(gen_s, 2),
            "copy_s": round(copy_s, 3),
            "convert_s": round(conv_s, 3),
            "convert_wall_s": round(conv_wall, 3),
            "time_ratio_vs_copy": round(conv_s / copy_s, 2),
            "peak_rss_bytes": conv_rss,
            "interpreter_rss_bytes": idle_rss,
            "rss_budget_bytes": (1 << 30) + largest,
            "rss_within_budget": conv_rss < (1 << 30) + largest,
            "time_within_2x_copy": conv_s <= 2 * copy_s,
            "output_bytes": out_bytes,
        }
        if args.llama_convert:
            got = _llama_convert(Path(args.llama_convert), ckpt_dir, root / "llama-F16.gguf")
            if isinstance(got, tuple):
                res["llama_convert_s"] = round(got[0], 3)
                res["llama_convert_peak_rss_bytes"] = got[1]
                res["llama_convert_time_ratio_vs_copy"] = round(got[0] / copy_s, 2)
                (root / "llama-F16.gguf").unlink(missing_ok=True)
            else:
                res["llama_convert"] = got
        else:
            res["llama_convert"] = (
                "not run: the gguf pip package does not ship convert_hf_to_gguf.py; pass "
                "--llama-convert PATH (needs torch and transformers)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    gib = 1 << 30
    print(
        f"checkpoint: {params / 1e9:.3f}B params, BF16, {src_bytes / gib:.2f} GiB, "
        f"largest tensor {largest / 2**20:.0f} MiB (generated in {gen_s:.1f} s)"
    )
    print(f"copy same bytes:        {copy_s:7.2f} s")
    print(
        f"amalia-edge → F16:      {conv_s:7.2f} s   ratio {conv_s / copy_s:.2f}× copy "
        f"(target ≤ 2×: {'met' if conv_s <= 2 * copy_s else 'NOT met'})"
    )
    print(
        f"amalia-edge peak RSS:   {conv_rss / 2**20:7.0f} MiB (interpreter + imports alone: "
        f"{idle_rss / 2**20:.0f} MiB; budget 1 GiB + largest tensor = "
        f"{((1 << 30) + largest) / 2**20:.0f} MiB: "
        f"{'met' if conv_rss < (1 << 30) + largest else 'NOT met'})"
    )
    if "llama_convert_s" in res:
        print(
            f"llama.cpp convert_hf_to_gguf.py → F16: {res['llama_convert_s']:.2f} s "
            f"({res['llama_convert_time_ratio_vs_copy']}× copy), peak RSS "
            f"{float(str(res['llama_convert_peak_rss_bytes'])) / 2**20:.0f} MiB"
        )
    else:
        print(f"llama.cpp convert_hf_to_gguf.py: {res['llama_convert']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
