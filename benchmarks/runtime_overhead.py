#!/usr/bin/env python3
"""What does amalia-edge's runtime layer cost? Decode tokens/s through ``load_model().stream``
vs llama-cpp-python called directly, same GGUF, same threads, same process.

Both sides load their own ``llama_cpp.Llama`` with the same parameters (context, batch,
threads, GPU layers) and decode greedily from the same prompt token ids; repetitions are
interleaved A B B A A B ... so drift (thermal throttling, other load) hits both equally.
Decode tokens/s is (n - 1) / (time of token n - time of token 1) on both sides: for
amalia-edge it is ``Finished.decode_tps`` (stamped by the runtime as each token is produced);
for the direct side the same stamps are taken in the ``Llama.generate`` loop. Also printed:
tokens per CPU second of the process (``time.process_time``), which is what our layer adds
to and which a busy shared machine disturbs less than wall-clock time (use ``--threads 1``
there). Prints medians and the ratios amalia-edge / direct (target >= 0.98: our layer costs
under 2 %). Finally the layer's own cost per token, measured with llama.cpp's token loop
replaced by canned token ids (no noise from llama.cpp at all), as a share of a decode step.
The direct side detokenizes each token, as any caller that streams text must.

Then the start-up cost of the CLI: wall time of ``amalia-edge --help`` and ``amalia-edge
doctor`` in fresh processes (median of 5; target < 0.5 s: heavy libraries are imported lazily).

Usage::

    python3 benchmarks/runtime_overhead.py MODEL.gguf [--threads 4] [--tokens 128] [--reps 6]
    python3 benchmarks/runtime_overhead.py            # builds a tiny test model first
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = "A cidade de Lisboa fica na margem norte do rio Tejo e"


def _tiny_model(tmp: Path) -> Path:
    """A small random-weight Llama in F16 via amalia-edge's converter (tests/factory.py)."""
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.gguf import write_gguf
    from tests import factory

    ckpt_dir = factory.build_checkpoint(
        tmp / "ckpt", hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4,
    )  # fmt: skip
    out = tmp / "tiny-F16.gguf"
    write_gguf(open_checkpoint(ckpt_dir), out, "f16")
    return out


def _direct_run(llm: Any, ids: list[int], n: int) -> tuple[int, float, float]:
    """(tokens, wall decode tokens/s, tokens per CPU second) calling llama-cpp-python."""
    from amalia_edge.runtime.native import import_llama_cpp

    llama_cpp = import_llama_cpp()

    vocab = llm._model.vocab
    stamps: list[float] = []
    c0 = time.process_time()
    for tok in llm.generate(ids, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        llm.detokenize([tok])  # a streaming caller needs each token's text too
        stamps.append(time.perf_counter())
        if len(stamps) == n:
            break
    cpu = time.process_time() - c0
    k = len(stamps)
    return k, (k - 1) / (stamps[-1] - stamps[0]) if k > 1 else 0.0, k / cpu


def _ours_run(model: Any, ids: list[int], n: int) -> tuple[int, float, float]:
    """The same through amalia-edge's event stream (every event built and consumed)."""
    from amalia_edge.runtime import SamplingParams

    c0 = time.process_time()
    fin = model.generate(ids, sampling=SamplingParams.greedy_params(), max_tokens=n)
    cpu = time.process_time() - c0
    return fin.completion_tokens, fin.decode_tps, fin.completion_tokens / cpu


def _layer_cost(model: Any, ids: list[int], n: int = 1500) -> float:
    """Seconds per token spent in amalia-edge's own code: the backend's ``Llama.generate`` is
    replaced by a generator of precomputed token ids (no llama.cpp work at all), so what is
    left is the decode loop and the event stream (EventBuilder, UTF-8, end-of-generation check).
    Best of 3 runs: token pieces are cached after their first use, as in a long chat."""
    from amalia_edge.runtime import SamplingParams

    session = model.session
    llm = session.llama
    real = llm.generate
    vocab = [t for t in range(200, 1000)]

    def canned(tokens: Any, **_: Any) -> Any:
        for i in range(n):
            yield vocab[i % len(vocab)]

    llm.generate = canned
    try:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fin = model.generate(
                ids, sampling=SamplingParams(temperature=0.0, ignore_eos=True), max_tokens=n
            )
            best = min(best, (time.perf_counter() - t0) / fin.completion_tokens)
        return best
    finally:
        llm.generate = real


def _wall(cmd: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", help="a .gguf file (default: build a tiny one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--skip-cli", action="store_true", help="skip the --help / doctor timings")
    args = ap.parse_args(argv)

    from amalia_edge.runtime import LoadOptions, load_model
    from amalia_edge.runtime.native import import_llama_cpp

    llama_cpp = import_llama_cpp()  # after onnxruntime, as amalia-edge loads it

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else _tiny_model(Path(tmp))
        opts = LoadOptions(n_threads=args.threads)
        model = load_model(path, backend="llama.cpp", n_ctx=args.ctx, options=opts)
        params = dict(model.session.params)  # type: ignore[attr-defined]
        direct = llama_cpp.Llama(model_path=str(path), **params)
        ids = model.session.prompt_ids(PROMPT)
        print(
            f"model: {path.name} ({model.artifact.quant}), threads {args.threads}, GPU layers "
            f"{params['n_gpu_layers']}, {args.tokens} tokens × {args.reps} reps"
        )
        _ours_run(model, ids, 8)  # warm-up both
        _direct_run(direct, ids, 8)
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "direct": []}
        for r in range(args.reps):
            order = ("ours", "direct") if r % 4 in (0, 3) else ("direct", "ours")
            for side in order:
                fn = _ours_run if side == "ours" else _direct_run
                n, tps, cpu_tps = fn(model if side == "ours" else direct, ids, args.tokens)
                runs[side].append((tps, cpu_tps))
                print(
                    f"  rep {r} {side:6s} {n:4d} tokens {tps:8.2f} tok/s  {cpu_tps:8.2f} tok/CPU-s"
                )
        for col, label in ((0, "wall-clock decode tok/s"), (1, "tokens per CPU second")):
            mo = statistics.median(x[col] for x in runs["ours"])
            mb = statistics.median(x[col] for x in runs["direct"])
            ratios = [a[col] / b[col] for a, b in zip(runs["ours"], runs["direct"], strict=True)]
            mean, sd = statistics.mean(ratios), statistics.pstdev(ratios)
            print(
                f"{label}, median: amalia-edge {mo:.2f}, llama-cpp-python {mb:.2f}; ratio "
                f"{mo / mb:.4f} (per rep: mean {mean:.4f} ± {sd:.4f}); target >= 0.98"
            )
        cost = _layer_cost(model, ids[:8])
        step = 1.0 / statistics.median(x[0] for x in runs["direct"])
        print(
            f"amalia-edge layer cost: {cost * 1e6:.1f} µs/token (llama.cpp replaced by canned "
            f"tokens) = {cost / step:.2%} of a direct decode step of {step * 1e3:.2f} ms here"
        )
        model.close()
        direct.close()

    if not args.skip_cli:
        exe = [sys.executable, "-m", "amalia_edge"]
        bare = _wall([sys.executable, "-c", "pass"])
        print(f"`python3 -c pass` (interpreter start-up, for reference): {bare:.3f} s")
        print(f"`amalia-edge --help`: {_wall([*exe, '--help']):.3f} s (median of 5; target < 0.5)")
        print(f"`amalia-edge doctor`: {_wall([*exe, 'doctor']):.3f} s (median of 5; target < 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
