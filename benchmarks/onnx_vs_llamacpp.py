"""Decode speed: ONNX Runtime (CPU) vs llama.cpp (CPU) at the same precision, same model, same run.

Both run FP32 weights (llama.cpp's F32 GGUF, the fp32 ONNX export) made from one checkpoint
by ``amalia_edge.convert.pipeline.quantize``, greedy, from the same prompt token ids, with the
same thread count. Decode tokens/s comes from each backend's own event stream
(``Finished.decode_tps``: tokens after the first / time from first to last). Prints both, their
ratio (ONNX Runtime / llama.cpp), and how many of the greedy tokens agree.

Run: ``python3 benchmarks/onnx_vs_llamacpp.py [--checkpoint DIR] [--tokens 64] [--repeat 3]``
(default checkpoint: the bundled demo model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "A Torre de Belém fica em Lisboa, junto ao rio Tejo, e"


def run_backend(
    art_dir: Path,
    backend: str,
    quant: str,
    ids: list[int],
    tokens: int,
    threads: int,
    repeat: int,
    n_ctx: int,
) -> dict[str, Any]:
    from amalia_edge.runtime import registry
    from amalia_edge.runtime.artifacts import resolve_model
    from amalia_edge.runtime.backend import LoadOptions
    from amalia_edge.runtime.events import Finished
    from amalia_edge.runtime.sampling import SamplingParams

    source = resolve_model(art_dir)
    art = next(a for a in source.usable() if a.quant.upper() == quant.upper())
    sess = registry.get(backend).load(art, n_ctx, LoadOptions(n_threads=threads, gpu=False))
    tps, prompt_tps, out_ids = [], [], []
    try:
        for _ in range(repeat):
            fin = None
            for ev in sess.stream(ids, sampling=SamplingParams(temperature=0.0), max_tokens=tokens):
                if isinstance(ev, Finished):
                    fin = ev
            assert fin is not None and fin.reason in ("length", "stop"), fin
            tps.append(fin.decode_tps)
            prompt_tps.append(fin.prompt_tps)
            out_ids = list(fin.token_ids)
    finally:
        sess.close()
    return {
        "decode_tps_mean": statistics.mean(tps),
        "decode_tps_median": statistics.median(tps),
        "decode_tps_stdev": statistics.stdev(tps) if len(tps) > 1 else 0.0,
        "decode_tps_samples": tps,
        "prompt_tps_mean": statistics.mean(prompt_tps),
        "tokens": out_ids,
        "providers": getattr(sess, "providers", None),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="HF checkpoint dir (default: demo model)")
    ap.add_argument("--artifacts", default=None, help="reuse/keep artifacts here")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from amalia_edge.convert.pipeline import quantize
    from amalia_edge.runtime import registry
    from amalia_edge.runtime.artifacts import resolve_model
    from amalia_edge.runtime.backend import LoadOptions

    art_dir = Path(args.artifacts or tempfile.mkdtemp(prefix="amalia-ort-bench-"))
    quantize(
        args.checkpoint,
        art_dir,
        ["F32"],
        imatrix="none",
        onnx_types=("fp32",),
        threads=args.threads,
        progress=False,
    )
    from amalia_edge.artifacts.manifest import load_manifest

    # 512, or less for a model trained on a shorter context (the demo model: 256)
    n_ctx = min(512, int(load_manifest(art_dir).model.get("context_length") or 512))
    gguf = next(a for a in resolve_model(art_dir).usable() if a.kind == "gguf")
    tok_sess = registry.get("llama.cpp").load(gguf, n_ctx, LoadOptions(gpu=False))
    ids = tok_sess.tokenize(PROMPT, add_bos=True)
    tok_sess.close()
    res = {
        "prompt_tokens": len(ids),
        "generated_tokens": args.tokens,
        "threads": args.threads,
        "llama.cpp F32": run_backend(
            art_dir, "llama.cpp", "F32", ids, args.tokens, args.threads, args.repeat, n_ctx
        ),
        "onnxruntime fp32": run_backend(
            art_dir, "onnxruntime", "fp32", ids, args.tokens, args.threads, args.repeat, n_ctx
        ),
    }
    a, b = res["llama.cpp F32"], res["onnxruntime fp32"]
    same = 0
    for x, y in zip(a["tokens"], b["tokens"], strict=False):
        if x != y:
            break
        same += 1
    # medians: on a shared machine one run can be slowed 5x by other load; the median is
    # what a typical run got, the samples are all printed
    res["ratio_ort_over_llamacpp"] = b["decode_tps_median"] / a["decode_tps_median"]
    res["greedy_tokens_identical_prefix"] = same
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"prompt {len(ids)} tokens, {args.tokens} greedy tokens, {args.threads} threads, "
        f"{args.repeat} runs each (CPU, FP32 weights)"
    )
    for name in ("llama.cpp F32", "onnxruntime fp32"):
        r = res[name]
        print(
            f"  {name:<18} decode median {r['decode_tps_median']:8.1f} "
            f"(mean {r['decode_tps_mean']:.1f} ± {r['decode_tps_stdev']:.1f}) "
            f"tok/s   prompt {r['prompt_tps_mean']:8.1f} tok/s"
        )
    print(f"  ratio onnxruntime / llama.cpp (medians): {res['ratio_ort_over_llamacpp']:.2f}")
    print(f"  identical greedy tokens: {same} of {args.tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
