#!/usr/bin/env python3
"""What does the telemetry sampler cost? Decode tokens/s with vs without it, same run.

Loads one model once, then alternates rounds of generation without and with the default
monitor (``default_monitor(interval=0.1)``: INA3221/tegrastats, RAPL, psutil + sysfs)
running in its background thread: A B B A A B ... (the ABBA order cancels slow drift such
as thermal throttling). Tokens/s is the runtime's own ``Finished.decode_tps`` (derived from
the events). Prints the per-condition medians and the ratio; the target is a cost < 1 %.

On a busy machine the A/B ratio is dominated by other processes, so the script also
measures the sampler's own CPU cost directly, which noise cannot fake: process CPU time
while the monitor runs and the main thread sleeps (= the sampler thread's CPU), as a share
of one core, and the mean time of one sampling tick.

Usage::

    python3 benchmarks/telemetry_overhead.py MODEL.gguf [--rounds 10] [--tokens 64]
    python3 benchmarks/telemetry_overhead.py --demo      # converts the demo model to Q8_0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sampler_cpu_cost(interval: float, seconds: float = 5.0) -> tuple[float, float, int]:
    """(CPU share of one core, mean ms per tick, ticks) of the default monitor, measured idle."""
    import time

    from amalia_edge.telemetry import default_monitor

    c0 = time.process_time()
    time.sleep(seconds)
    idle = time.process_time() - c0  # the process's own background CPU, subtracted below
    mon = default_monitor(interval=interval)
    mon.start()
    c0, w0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n = len(mon.stop())
    share = max(0.0, cpu - idle) / wall
    mon2 = default_monitor(interval=interval)
    mon2.start()
    t0 = time.perf_counter()
    for _ in range(200):
        mon2.sample_once()
    per_tick = (time.perf_counter() - t0) / 200
    mon2.stop()
    return share, per_tick * 1e3, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--demo", action="store_true", help="convert and use the demo model (Q8_0)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds per condition")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per round")
    ap.add_argument("--interval", type=float, default=0.1, help="sampler interval (default 0.1)")
    ap.add_argument("--backend", default=None)
    ap.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (backend default)")
    args = ap.parse_args(argv)
    if not args.model and not args.demo:
        ap.error("give MODEL or --demo")

    from amalia_edge.bench.runner import PROMPT_TEXT
    from amalia_edge.runtime import load_model
    from amalia_edge.runtime.events import Finished
    from amalia_edge.runtime.sampling import SamplingParams
    from amalia_edge.telemetry import default_monitor

    with tempfile.TemporaryDirectory(prefix="amalia-overhead-") as tmp:
        model_path = args.model
        if args.demo:
            from amalia_edge.convert.pipeline import quantize

            quantize(None, Path(tmp) / "a", ["Q8_0"], imatrix="none", progress=False)
            model_path = str(Path(tmp) / "a")
        from amalia_edge.runtime.backend import LoadOptions

        options = LoadOptions(n_threads=args.threads) if args.threads else None
        # n_ctx=None: 512, or the model's own context when smaller (the demo's is 256).
        model = load_model(model_path, backend=args.backend, n_ctx=None, options=options)
        greedy = SamplingParams(temperature=0.0, ignore_eos=True)  # every round decodes --tokens
        prompt = model.session.tokenize(PROMPT_TEXT, add_bos=False, special=False)[:32]

        def decode_tps(k: int) -> float:
            ids = prompt[k % len(prompt) :] + prompt[: k % len(prompt)]
            fin = None
            for ev in model.stream(ids, sampling=greedy, max_tokens=args.tokens):
                if isinstance(ev, Finished):
                    fin = ev
            assert fin is not None
            return fin.decode_tps

        decode_tps(0)  # warm-up
        without: list[float] = []
        with_mon: list[float] = []
        sources: list[str] = []
        order = [c for i in range(args.rounds) for c in (("A", "B") if i % 2 == 0 else ("B", "A"))]
        for k, cond in enumerate(order, 1):
            if cond == "A":
                without.append(decode_tps(k))
            else:
                mon = default_monitor(interval=args.interval)
                sources = [str(s) for s in mon.start()]
                try:
                    with_mon.append(decode_tps(k))
                finally:
                    n = len(mon.stop())
                print(f"  round {k}: {n} samples", file=sys.stderr)
        model.close()

    share, tick_ms, ticks = sampler_cpu_cost(args.interval)
    a, b = statistics.median(without), statistics.median(with_mon)
    spread = statistics.pstdev(without) / statistics.fmean(without)
    print(
        f"model: {model_path}  backend: {model.backend_name}  threads: {args.threads or 'default'}"
        f"  tokens/round: {args.tokens}"
    )
    print(f"sampler interval: {args.interval} s; sources: {'; '.join(sources)}")
    print(f"decode tokens/s without sampler: median {a:.2f} (n={len(without)}, cv {spread:.1%})")
    print(f"decode tokens/s with sampler:    median {b:.2f} (n={len(with_mon)})")
    # Paired: each round's with/without runs are adjacent in time and share the background load.
    pairs = sorted(w / o for w, o in zip(with_mon, without, strict=True) if o > 0)
    q1, med, q3 = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    print(f"ratio of medians with/without: {b / a:.4f}  (cost {100 * (1 - b / a):+.2f} %)")
    print(
        f"paired ratio per round: median {med:.4f} (IQR {q1:.4f}-{q3:.4f}); "
        f"cost {100 * (1 - med):+.2f} %; target < 1 %"
    )
    print(
        f"sampler CPU: {100 * share:.3f} % of one core over {ticks} ticks; "
        f"{tick_ms:.3f} ms per tick (at {args.interval} s: {tick_ms / 10 / args.interval:.3f} %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
