#!/usr/bin/env python3
"""Regenerate the published demo-model benchmark tables from scratch, on any machine.

1. Converts the bundled demo checkpoint to GGUF (``amalia_edge.convert.pipeline.quantize``)
   in a temporary directory (or uses ``--artifacts``).
2. Runs ``amalia_edge.bench.runner.run_bench`` over the quant types (× ``--backend`` list).
3. Writes ``results/demo_bench.md``, ``.json`` and ``.png`` under ``--out``, and replaces the
   table between the ``demo-results`` markers in ``benchmarks/README.md``.

Usage::

    python3 benchmarks/run_demo_benchmarks.py                 # F16, Q8_0, Q4_K_M, llama.cpp
    python3 benchmarks/run_demo_benchmarks.py --types Q8_0 -r 3 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

START, END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def _readable(*paths: Path) -> None:
    """Give published files the usual mode (atomic writes create them 0600 via mkstemp)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o666 & ~umask)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artifacts", default=None, help="existing artifacts dir (skip conversion)")
    ap.add_argument("--types", default="F16,Q8_0,Q4_K_M", help="GGUF quant types")
    ap.add_argument("--backend", default="llama.cpp", help="comma list of backends")
    # Default: bench's pp512 / tg128, shrunk to the demo's trained context when it is shorter.
    ap.add_argument("-p", "--n-prompt", type=int, default=None)
    ap.add_argument("-n", "--n-gen", type=int, default=None)
    ap.add_argument("--pg", default="pp64+tg32", help="combined test for TTFT/ITL ('' to skip)")
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (backend default)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output directory")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    args = ap.parse_args(argv)

    from amalia_edge.artifacts.atomic import atomic_write_text
    from amalia_edge.bench.plots import plot_records
    from amalia_edge.bench.printers import to_json, to_markdown
    from amalia_edge.bench.runner import (
        DEFAULT_N_GEN,
        DEFAULT_N_PROMPT,
        BenchConfig,
        TestSpec,
        make_tests,
        run_bench,
    )

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    with tempfile.TemporaryDirectory(prefix="amalia-demo-bench-") as tmp:
        artifacts = Path(args.artifacts) if args.artifacts else Path(tmp) / "artifacts"
        if not args.artifacts:
            from amalia_edge.convert.pipeline import quantize

            print(f"converting the demo model to {', '.join(types)} ...", file=sys.stderr)
            quantize(None, artifacts, types, imatrix="none", progress=False)
        n_prompt = DEFAULT_N_PROMPT if args.n_prompt is None else args.n_prompt
        n_gen = DEFAULT_N_GEN if args.n_gen is None else args.n_gen
        defaults = [TestSpec(n_prompt, 0)] * (args.n_prompt is None)
        defaults += [TestSpec(0, n_gen)] * (args.n_gen is None)
        cfg = BenchConfig(
            model=str(artifacts),
            tests=make_tests([n_prompt], [n_gen], [args.pg] if args.pg else []),
            default_tests=defaults,
            repetitions=args.repetitions,
            backends=[b.strip() for b in args.backend.split(",") if b.strip()],
            quants=types,
            interval=args.interval,
            n_threads=args.threads,
        )
        result = run_bench(cfg, progress=lambda m: print(m, file=sys.stderr))
    for err in result.errors:
        print(f"error: {err}", file=sys.stderr)
    if not result.records:
        return 1
    out = Path(args.out)
    md = to_markdown(result.records)
    atomic_write_text(out / "demo_bench.md", md)
    atomic_write_text(out / "demo_bench.json", to_json(result.records))
    plot_records(result.records, out / "demo_bench.png", model="amalia-edge demo model")
    _readable(*(out / f"demo_bench.{ext}" for ext in ("md", "json", "png")))
    print(md)
    print(f"wrote {out / 'demo_bench.md'}, .json, .png", file=sys.stderr)
    readme = HERE / "README.md"
    if not args.no_readme and readme.exists():
        text = readme.read_text(encoding="utf-8")
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            atomic_write_text(readme, f"{head}{START}\n{md}{END}{tail}")
            _readable(readme)
            print(f"updated {readme}", file=sys.stderr)
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
