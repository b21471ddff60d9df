"""On a machine with an NVIDIA GPU and TensorRT: build the demo model's engine and check it.

    python jetson/trt_check.py [--checkpoint DIR] [--artifacts DIR] [--ctx 512] [--tokens 64]

1. Makes (or reuses) an artifacts directory for the bundled demo model with an F16 GGUF (for
   the tokenizer and the llama.cpp comparison) and the fp16 + fp32 ONNX exports
   (``amalia_edge.convert.pipeline.quantize``).
2. Builds the TensorRT engine (``amalia_edge.convert.tensorrt.ensure_engine``), timing it.
3. Decodes ``--tokens`` greedy tokens from the same prompt with: native TensorRT (fp16),
   ONNX Runtime on the CPU (fp32 and fp16 graphs), ONNX Runtime on the GPU providers when the
   installed wheel has them, and llama.cpp when installed.
4. Prints one JSON object: per backend the token ids, decode tokens/s, prompt tokens/s and
   the providers that actually ran; and how many leading tokens each agrees with ONNX
   Runtime CPU fp32 (the reference). Exit status 1 if TensorRT's first 8 tokens differ from
   ONNX Runtime CPU fp16's (same graph, same precision).

FP16 engines accumulate in a different order than the CPU, so a long greedy run may diverge
after some tokens without either being wrong; the first tokens must agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Olá! Em que cidade fica a Torre de Belém? Responde numa frase."


def _run(
    model_dir: Path,
    backend: str,
    quant: str,
    ctx: int,
    tokens: int,
    gpu: bool | None,
) -> dict[str, Any]:
    from amalia_edge.errors import AmaliaEdgeError
    from amalia_edge.runtime import Message, load_model
    from amalia_edge.runtime.backend import LoadOptions
    from amalia_edge.runtime.events import Finished
    from amalia_edge.runtime.sampling import SamplingParams

    t0 = time.perf_counter()
    try:
        model = load_model(
            model_dir, backend=backend, quant=quant, n_ctx=ctx, options=LoadOptions(gpu=gpu)
        )
    except AmaliaEdgeError as exc:
        return {"error": str(exc)}
    load_s = time.perf_counter() - t0
    fin = None
    prompt = model.session.apply_chat_template([Message("user", PROMPT)])
    for ev in model.session.stream(
        prompt, sampling=SamplingParams(temperature=0.0), max_tokens=tokens
    ):
        if isinstance(ev, Finished):
            fin = ev
    assert fin is not None
    out: dict[str, Any] = {
        "load_seconds": round(load_s, 2),
        "finish": fin.reason,
        "error": fin.error,
        "tokens": list(fin.token_ids),
        "decode_tps": round(fin.decode_tps, 2),
        "prompt_tps": round(fin.prompt_tps, 2),
        "text": fin.text,
    }
    providers = getattr(model.session, "providers", None)
    if providers is not None:
        out["providers"] = list(providers)
    model.session.close()
    return out


def _agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="HF checkpoint (default: the demo model)")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts-demo-trt"))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args(argv)

    from amalia_edge.convert.pipeline import quantize
    from amalia_edge.convert.tensorrt import ensure_engine
    from amalia_edge.errors import AmaliaEdgeError

    report: dict[str, Any] = {"prompt": PROMPT, "ctx": args.ctx, "tokens": args.tokens}
    quantize(
        args.checkpoint,
        args.artifacts,
        ["F16"],
        imatrix="none",
        onnx_types=("fp16", "fp32"),
        progress=False,
    )
    from amalia_edge.artifacts.manifest import load_manifest

    trained = int(load_manifest(args.artifacts).model.get("context_length") or args.ctx)
    args.ctx = min(args.ctx, trained)  # the demo model was trained on 256 tokens
    report["ctx"] = args.ctx
    t0 = time.perf_counter()
    try:
        meta, engine = ensure_engine(
            args.artifacts, "fp16", args.ctx, report=lambda m: print(m, file=sys.stderr)
        )
    except AmaliaEdgeError as exc:  # no TensorRT / no GPU: say so, run the rest anyway
        report["engine"] = {"error": str(exc)}
    else:
        report["engine"] = {
            "path": str(engine),
            "seconds_this_call": round(time.perf_counter() - t0, 1),
            "build_seconds": round(meta.build_seconds, 1),
            "size": meta.engine_size,
            **meta.key.to_dict(),
        }
    runs = {
        "tensorrt:fp16": ("tensorrt", "fp16", None),
        "onnxruntime-cpu:fp32": ("onnxruntime", "fp32", False),
        "onnxruntime-cpu:fp16": ("onnxruntime", "fp16", False),
        "onnxruntime-gpu:fp16": ("onnxruntime", "fp16", True),
        "llama.cpp:F16": ("llama.cpp", "F16", True),
    }
    results = {
        name: _run(args.artifacts, *spec[:2], args.ctx, args.tokens, spec[2])
        for name, spec in runs.items()
    }
    ref = results["onnxruntime-cpu:fp32"].get("tokens") or []
    for r in results.values():
        if "tokens" in r:
            r["agrees_with_ort_cpu_fp32"] = _agree(r["tokens"], ref)
    report["backends"] = results
    trt_tokens = results["tensorrt:fp16"].get("tokens") or []
    cpu16 = results["onnxruntime-cpu:fp16"].get("tokens") or []
    ok = bool(trt_tokens) and _agree(trt_tokens, cpu16) >= min(8, len(cpu16))
    report["ok"] = ok
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
