"""``amalia-edge quantize``: Hugging Face checkpoint → GGUF files (+ ONNX) and a manifest.

Thin: parses options, calls :func:`amalia_edge.convert.pipeline.run_quantize`, prints the
result (a table, or the manifest as JSON with ``--json``). Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from amalia_edge.artifacts.quant_types import DEFAULT_TYPES, QUANT_TYPES
from amalia_edge.commands import threads_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        default=None,
        metavar="SOURCE",
        help="checkpoint directory, or a repo id in the local Hugging Face cache (offline; "
        "honours HF_HOME); omitted: the bundled demo model",
    )
    parser.add_argument(
        "--out", default="artifacts", metavar="DIR", help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--gguf",
        default=None,
        metavar="TYPES",
        help="comma list of GGUF types, case-insensitive (default: "
        f"{','.join(t.lower() for t in DEFAULT_TYPES)}; 'none' for ONNX only); valid: "
        f"{', '.join(QUANT_TYPES)}",
    )
    parser.add_argument(
        "--imatrix",
        default="auto",
        metavar="FILE|auto|none",
        help="importance matrix (llama.cpp GGUF imatrix format); 'auto' makes one from pt-PT "
        "calibration text when a quantized type is asked for; 'none' quantizes without one "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="calibration text for --imatrix auto (default: the bundled pt-PT text)",
    )
    parser.add_argument(
        "--onnx",
        default="",
        metavar="TYPES",
        help="also export ONNX at these precisions (comma list, e.g. fp16,int4)",
    )
    parser.add_argument(
        "--threads",
        type=threads_type(0),
        default=None,
        metavar="N",
        help="quantizer threads (default: all)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild everything, even files that are current"
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    from amalia_edge.convert.pipeline import run_quantize

    result = run_quantize(
        source=args.source,
        out=args.out,
        gguf_types=args.gguf,
        imatrix=args.imatrix,
        calibration=args.calibration,
        onnx_types=[p for p in args.onnx.split(",") if p.strip()],
        threads=args.threads,
        force=args.force,
        progress=not getattr(args, "quiet", False),
    )
    manifest = result.manifest
    if args.json:
        json.dump(manifest.to_dict(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    built = set(result.built)
    rows = []
    for a in manifest.artifacts:
        key = a.quant if a.kind == "gguf" else f"{a.kind}:{a.quant}"
        status = "built" if key in built else ("reused" if key in result.reused else "kept")
        bpw = f"{a.bpw:.2f}" if a.bpw is not None else "-"
        rows.append((a.kind, a.quant, _size(a.size), bpw, status, a.file))
    head = ("kind", "quant", "size", "bpw", "status", "file")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"manifest: {result.out_dir / 'manifest.json'}")
    return 0
