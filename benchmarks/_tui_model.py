"""A random-weight Llama GGUF of a chosen size, for benchmarks that need a realistic decode speed.

The bundled demo model decodes at 1,000+ tokens/s on a CPU, so any per-reply cost (layout,
mounting widgets) dominates a TUI-vs-headless comparison made with it. A 9B model on the Orin
decodes at about 5-20 tokens/s; a ~100-300M parameter model on one CPU thread here lands in the
tens of tokens/s, which makes the per-token cost of the UI visible at the right scale.

The checkpoint comes from ``tests/factory.py`` (random BF16 weights, the factory's 1536-piece
SentencePiece tokenizer, ChatML template), shaped like a narrow EuroLLM layer (hidden 1024,
FFN 2816, 16 heads, 4 KV heads); the layer count is chosen to reach the requested size. It is
converted once with :func:`amalia_edge.convert.pipeline.quantize` (no imatrix) and cached.
Random weights emit end-of-generation tokens at random, so benchmarks using it should sample
with ``ignore_eos=True`` to decode a fixed token count.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path("/tmp/amalia-bench-synthetic")

HIDDEN = 1024
FFN = 2816  # 11 x 256: llama.cpp's k-quants need rows that are multiples of 256
HEADS = 16
KV_HEADS = 4
TOKENIZER_VOCAB = 1536


def layer_params() -> int:
    """Parameters of one layer: attention (GQA), SwiGLU MLP, two RMSNorm weights."""
    head_dim = HIDDEN // HEADS
    attn = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV_HEADS * head_dim
    return attn + 3 * HIDDEN * FFN + 2 * HIDDEN


def parse_params(text: str) -> int:
    """``"150M"`` -> 150_000_000; ``"0.3B"`` -> 300_000_000; plain integers accepted."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbB]?)\s*", text)
    if not m:
        raise ValueError(f"bad parameter count {text!r}: write e.g. 150M or 0.2B")
    scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def layers_for(params: int) -> int:
    """Layer count whose total (layers + embedding + head) is nearest ``params``, at least 1."""
    embed = 2 * TOKENIZER_VOCAB * HIDDEN  # untied embedding and output head (vocab ~1536)
    return max(1, round((params - embed) / layer_params()))


def synthetic_gguf(params: str, quant: str = "q8_0", cache: Path = CACHE) -> Path:
    """Path of the GGUF for ``params`` (e.g. ``"150M"``) at ``quant``; built on first use.

    Cached under ``cache/<layers>L-<quant>/``; the BF16 checkpoint is deleted after conversion
    (only the GGUF is reused). Takes a minute or two the first time on two cores.
    """
    layers = layers_for(parse_params(params))
    out = cache / f"{layers}L-{quant.lower()}"
    name_file = out / "gguf.path"
    if name_file.is_file():
        path = Path(name_file.read_text(encoding="utf-8").strip())
        if path.is_file():
            return path
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from amalia_edge.convert.pipeline import quantize
    from tests import factory

    ckpt = cache / f"{layers}L-ckpt"
    shutil.rmtree(ckpt, ignore_errors=True)
    factory.build_checkpoint(
        ckpt,
        dtype="BF16",
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tokenizer_vocab=TOKENIZER_VOCAB,
    )
    manifest = quantize(
        source=ckpt, out=out, gguf_types=(quant,), imatrix="none", threads=1, progress=False
    )
    entry = manifest.find("gguf", quant)
    if entry is None:
        raise RuntimeError(f"quantize wrote no {quant} GGUF into {out}")
    shutil.rmtree(ckpt, ignore_errors=True)
    path = out / entry.file
    name_file.write_text(f"{path}\n", encoding="utf-8")
    return path


def describe(params: str) -> str:
    """One line: the shape and the parameter count the spec gives."""
    layers = layers_for(parse_params(params))
    total = layers * layer_params() + 2 * TOKENIZER_VOCAB * HIDDEN + HIDDEN
    return (
        f"random-weight Llama, {layers} layers x hidden {HIDDEN}, FFN {FFN}, "
        f"{HEADS}/{KV_HEADS} heads, vocab ~{TOKENIZER_VOCAB}: {total / 1e6:.0f}M params"
    )
