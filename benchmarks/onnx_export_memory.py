"""ONNX export memory and time: a ~0.6B-parameter BF16 checkpoint → ONNX (fp16 by default).

Target (issue 7): export memory stays bounded — peak RSS below 1 GiB plus twice the largest
checkpoint tensor (one tensor is read whole to be transposed, plus its converted chunks),
whatever the model size. Everything is measured in this one run:

* the checkpoint is generated with ``tests/factory.py`` (random BF16 weights, EuroLLM-like
  128k vocabulary; the same spec as ``benchmarks/convert_speed.py``);
* an idle child process that only imports the same modules gives the interpreter's share;
* :func:`amalia_edge.convert.onnx.write_onnx` runs in a child process whose peak RSS is its
  own ``VmHWM`` (read inside the child; see ``_common.HWM`` for why not ``ru_maxrss``); the
  baseline for time is copying the safetensors bytes on the same disk.

Run: ``python3 benchmarks/onnx_export_memory.py [--layers 22] [--precision fp16] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from _common import build_checkpoint, copy_seconds, run_child, work_child

# argv: checkpoint dir, output dir, precision | "idle".
EXPORT_CHILD = work_child(
    """
from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.convert.onnx import write_onnx
import numpy, onnx
""",
    "write_onnx(open_checkpoint(sys.argv[1]), sys.argv[2], sys.argv[3])",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to generate (default: a temp dir in /tmp)")
    ap.add_argument("--layers", type=int, default=22, help="decoder layers (22 ≈ 0.6B params)")
    ap.add_argument("--precision", default="fp16", help="fp32 | fp16 | int8 | int4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="amalia-onnx-bench-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    ckpt_dir = root / "ckpt"
    try:
        build_checkpoint(ckpt_dir, args.layers)
        from amalia_edge.checkpoint import open_checkpoint

        ckpt = open_checkpoint(ckpt_dir)
        params, largest = ckpt.param_count, ckpt.largest_tensor_nbytes
        src = ckpt_dir / "model.safetensors"
        copy_s = copy_seconds(src, root)
        idle_rss = run_child(EXPORT_CHILD, str(ckpt_dir), str(root / "out"), "idle").peak_rss
        export = run_child(EXPORT_CHILD, str(ckpt_dir), str(root / "out"), args.precision)
        export_s, rss = export.seconds, export.peak_rss
        out_bytes = sum(p.stat().st_size for p in (root / "out").iterdir())
        budget = (1 << 30) + 2 * largest
        res = {
            "params": params,
            "source_bytes": src.stat().st_size,
            "largest_tensor_bytes": largest,
            "precision": args.precision,
            "output_bytes": out_bytes,
            "export_s": round(export_s, 2),
            "copy_s": round(copy_s, 2),
            "time_ratio_vs_copy": round(export_s / copy_s, 2),
            "peak_rss_bytes": rss,
            "interpreter_rss_bytes": idle_rss,
            "rss_budget_bytes": budget,
            "rss_within_budget": rss < budget,
            "rss_over_source_ratio": round(rss / src.stat().st_size, 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    mib = 1 << 20
    print(
        f"checkpoint: {params / 1e9:.3f}B params BF16, {res['source_bytes'] / mib:.0f} MiB, "
        f"largest tensor {largest / mib:.0f} MiB"
    )
    print(
        f"export {args.precision}: {export_s:.1f} s ({res['time_ratio_vs_copy']}× a plain copy "
        f"of the source), output {out_bytes / mib:.0f} MiB"
    )
    print(
        f"peak RSS {rss / mib:.0f} MiB (interpreter + imports {idle_rss / mib:.0f} MiB); budget "
        f"1 GiB + 2 × largest tensor = {budget / mib:.0f} MiB: "
        f"{'met' if res['rss_within_budget'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
