"""``amalia-edge quality``: what each quant type costs on held-out pt-PT text.

Thin: parses options, calls :func:`amalia_edge.quality.measure_quality` (which also writes
the numbers into the manifest's ``quality`` fields), prints the table on stdout. Progress
goes to stderr.
"""

from __future__ import annotations

import argparse

from amalia_edge.commands import threads_type
from amalia_edge.quality import DEFAULT_CHUNKS, FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "artifacts", metavar="ARTIFACTS", help="artifacts directory written by amalia-edge quantize"
    )
    parser.add_argument(
        "--eval",
        default=None,
        metavar="FILE",
        help="held-out pt-PT text (default: ../shared/corpus/pt_pt_eval.txt of a source checkout)",
    )
    parser.add_argument(
        "--ctx",
        type=int,
        default=None,
        metavar="N",
        help="tokens per chunk; the second half of each is scored (default: min(512, trained))",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=DEFAULT_CHUNKS,
        metavar="N",
        help="chunks to score (default: %(default)s; 0: all the text gives)",
    )
    parser.add_argument(
        "--quant",
        default=None,
        metavar="TYPES",
        help="comma list of types to measure (default: all)",
    )
    parser.add_argument(
        "--threads", type=threads_type(), default=None, metavar="N", help="llama.cpp threads"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="md", help="table format (default: %(default)s)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not store the results in manifest.json"
    )


def run(args: argparse.Namespace) -> int:
    from amalia_edge.progress import Progress
    from amalia_edge.quality import format_report, measure_quality

    bars: dict[str, Progress] = {}

    def progress(label: str, done: int, total: int) -> None:
        if label not in bars:
            bars[label] = Progress(label, unit="chunks", enabled=not getattr(args, "quiet", False))
        bars[label](done, total)
        if done == total:
            bars[label].close()

    quants = [q.strip() for q in args.quant.split(",") if q.strip()] if args.quant else None
    report = measure_quality(
        args.artifacts,
        eval_file=args.eval,
        ctx=args.ctx,
        chunks=None if args.chunks == 0 else args.chunks,
        quants=quants,
        threads=args.threads,
        write=not args.no_write,
        progress=progress,
    )
    print(format_report(report, args.format))
    return 0
