"""``amalia-edge build-engine ARTIFACTS``: build (or find) the TensorRT engine on this device.

Builds from the artifacts directory's ONNX export of the chosen precision, with an
optimization profile for ``--ctx`` tokens, and caches it under ``ARTIFACTS/engines/``. An
engine already cached for this GPU, TensorRT version, ONNX file, precision and a profile at
least as large is reused unless ``--force``; a stale one is rebuilt and the reason printed.
Progress goes to stderr; the engine's path (or ``--json`` record) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from amalia_edge.convert.tensorrt import DEFAULT_MAX_PREFILL, ensure_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "artifacts", metavar="ARTIFACTS", help="artifacts directory (manifest.json)"
    )
    parser.add_argument(
        "--ctx", type=int, default=2048, help="largest context the engine must hold (default: 2048)"
    )
    parser.add_argument(
        "--precision",
        default="fp16",
        choices=("fp16", "int8", "fp32", "int4"),
        help="which ONNX export to build from (default: fp16; int4 is unverified on TensorRT 10.3)",
    )
    parser.add_argument(
        "--max-prefill",
        type=int,
        default=DEFAULT_MAX_PREFILL,
        help=f"prompt tokens per engine call (default: {DEFAULT_MAX_PREFILL})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached one fits")
    parser.add_argument("--json", action="store_true", help="print the engine record as JSON")


def run(args: argparse.Namespace) -> int:
    def report(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    meta, path = ensure_engine(
        args.artifacts,
        args.precision,
        args.ctx,
        force=args.force,
        max_prefill=args.max_prefill,
        report=report,
    )
    if args.json:
        print(json.dumps({"engine": str(path), **meta.to_dict()}, indent=2))
    else:
        print(path)
    return 0
