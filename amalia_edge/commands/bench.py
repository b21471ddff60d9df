"""``amalia-edge bench [MODEL]``: tokens/s, latency percentiles, watts and joules per token.

Thin CLI over :func:`amalia_edge.bench.runner.run_bench`. Results go to stdout (or ``--out``)
in the chosen format; progress goes to stderr. Ctrl-C prints the results completed so far.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from amalia_edge.commands import add_model_argument
from amalia_edge.errors import BenchError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "-p",
        "--n-prompt",
        type=_ints,
        default=None,
        metavar="N[,N]",
        help="prompt-processing tests ppN (512, less when the model's context is shorter; 0 skips)",
    )
    parser.add_argument(
        "-n",
        "--n-gen",
        type=_ints,
        default=None,
        metavar="N[,N]",
        help="generation tests tgN (128, less when the model's context is shorter; 0 skips)",
    )
    parser.add_argument(
        "-pg",
        type=_ints,
        action="append",
        default=[],
        metavar="P,G",
        help="prompt of P tokens then G generated, one request (llama-bench -pg)",
    )
    parser.add_argument(
        "--tests",
        type=_names,
        default=[],
        metavar="NAME[,NAME]",
        help="extra tests by name: ppN, tgN, ppN+tgM (prompt then generation)",
    )
    parser.add_argument("-r", "--repetitions", type=int, default=5, help="timed runs per test (5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per test (1)")
    parser.add_argument(
        "-t", "--threads", type=int, default=None, help="CPU threads (default: the backend's)"
    )
    parser.add_argument(
        "--backend",
        type=_names,
        default=[None],
        metavar="A[,B]",
        help="backends to compare (default: automatic choice)",
    )
    parser.add_argument(
        "--quant",
        type=_names,
        default=[None],
        metavar="X[,Y]",
        help="quant types to compare, e.g. Q4_K_M,Q8_0 (default: automatic)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("md", "csv", "json", "jsonl"),
        default="md",
        help="output format (md)",
    )
    parser.add_argument("--out", default=None, metavar="FILE", help="write results to FILE")
    parser.add_argument(
        "--plot", default=None, metavar="FILE", help="also write a PNG chart (tokens/s, J/token)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.1,
        metavar="S",
        help="telemetry sampling interval in seconds (0.1)",
    )
    parser.add_argument("--ctx", type=int, default=None, help="context size (default: fits tests)")
    parser.add_argument(
        "--no-bandwidth-test",
        action="store_true",
        help="skip the memory copy test when the board table has no bandwidth",
    )


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Fail now, before a long run, if ``path`` cannot be written (tries a temp file there)."""
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"{what} {p} is a directory", fix=f"give a file name for {what}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BenchError(
            f"cannot write {what} {p}: {parent} is not a directory", fix="choose another path"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".amalia-check-", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BenchError(
            f"cannot write {what} {p}: {exc.strerror}",
            fix="choose a writable location or fix its permissions",
        ) from None
    return p


def run(args: argparse.Namespace) -> int:
    from amalia_edge.artifacts.atomic import atomic_write_text
    from amalia_edge.bench.printers import render
    from amalia_edge.bench.runner import (
        DEFAULT_N_GEN,
        DEFAULT_N_PROMPT,
        BenchConfig,
        TestSpec,
        make_tests,
        run_bench,
    )

    pg = []
    for pair in args.pg:
        if len(pair) != 2:
            raise BenchError(f"-pg takes two numbers P,G, got {pair}", fix="e.g. -pg 512,128")
        pg.append(f"pp{pair[0]}+tg{pair[1]}")
    # -p/-n not given: llama-bench's defaults, shrunk to the model's context when it is shorter.
    n_prompt = [DEFAULT_N_PROMPT] if args.n_prompt is None else args.n_prompt
    n_gen = [DEFAULT_N_GEN] if args.n_gen is None else args.n_gen
    tests = make_tests(n_prompt, n_gen, [*args.tests, *pg])
    defaults = [
        t
        for t in tests
        if (t == TestSpec(DEFAULT_N_PROMPT, 0) and args.n_prompt is None)
        or (t == TestSpec(0, DEFAULT_N_GEN) and args.n_gen is None)
    ]
    if args.ctx is not None and args.ctx <= 0:
        raise BenchError(f"--ctx must be positive, got {args.ctx}", fix="e.g. --ctx 2048")
    _check_numbers(args)
    out = check_writable(args.out, "--out") if args.out else None
    plot = check_writable(args.plot, "--plot") if args.plot else None
    model = args.model
    if model is None:
        # The demo's artifacts (converted into the user cache on first use), as everywhere.
        from amalia_edge.runtime import default_model_path

        model = str(default_model_path(progress=True))
        print(f"no MODEL given: benchmarking the demo model ({model})", file=sys.stderr)
    config = BenchConfig(
        model=model,
        tests=tests,
        repetitions=args.repetitions,
        warmup=args.warmup,
        backends=args.backend or [None],
        quants=args.quant or [None],
        interval=args.interval,
        n_ctx=args.ctx,
        n_threads=args.threads,
        measure_bandwidth=not args.no_bandwidth_test,
        default_tests=defaults,
    )
    config.validate()
    from amalia_edge.progress import Progress

    progress = Progress(enabled=not getattr(args, "quiet", False))
    try:
        result = run_bench(config, progress=progress.status)
    finally:
        progress.clear()
    if not getattr(args, "quiet", False):
        for note in result.notes:
            print(f"amalia-edge: note: {note}", file=sys.stderr)
    for err in result.errors:
        print(f"amalia-edge: error: {err}", file=sys.stderr)
    if result.records:
        text = render(result.records, args.output)
        if out is not None:
            atomic_write_text(out, text)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        if plot is not None:
            from amalia_edge.bench.plots import plot_records

            plot_records(result.records, plot, model=str(args.model or "demo model"))
            print(f"wrote {plot}", file=sys.stderr)
    if result.interrupted:
        print("amalia-edge: interrupted", file=sys.stderr)
        return 130
    return 1 if result.errors else 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Bounds the bench library does not check (issue 12): a NaN/inf interval, more threads
    than CPUs, absurd counts and contexts."""
    import math

    from amalia_edge.commands import MAX_CTX, cpu_count

    if not math.isfinite(args.interval) or args.interval > 3600:
        raise BenchError(f"--interval must be > 0 and finite, got {args.interval}", fix="e.g. 0.1")
    n = cpu_count()
    if args.threads is not None and args.threads > n:
        raise BenchError(
            f"threads must be at most the {n} CPUs of this machine, got {args.threads}",
            fix=f"use -t 1 to {n}",
        )
    if args.ctx is not None and args.ctx > MAX_CTX:
        raise BenchError(f"--ctx {args.ctx} is too large", fix=f"use at most {MAX_CTX}")
    if args.repetitions > 100_000 or args.warmup > 100_000:
        raise BenchError("-r / --warmup above 100000", fix="use fewer runs")
