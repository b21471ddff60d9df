"""Hugging Face tensor names → GGUF tensor names, one table per architecture.

The GGUF names are the ones llama.cpp's loader looks up (``src/llama-arch.cpp``,
``LLM_TENSOR_NAMES``) and that ``convert_hf_to_gguf.py`` writes through
``gguf-py/gguf/tensor_mapping.py``. Only the names these architectures actually use are here,
so an unexpected tensor in a checkpoint is an error rather than a silent skip.

``{bid}`` stands for the block (layer) number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from amalia_edge.errors import ConversionError, UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    """How one Hugging Face architecture is written to GGUF."""

    hf_architectures: tuple[str, ...]
    gguf_arch: str
    # HF stores Q/K rows in "rotate half" order; llama.cpp's llama graph expects the original
    # interleaved (GPT-J) order, so convert_hf_to_gguf.py LlamaModel.permute() undoes it.
    permute_qk: bool
    names: dict[str, str]
    # HF tensors that carry no weights llama.cpp needs (convert_hf_to_gguf.py skips them).
    skip: tuple[str, ...] = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")
    _compiled: list[tuple[re.Pattern[str], str]] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        for hf, gg in self.names.items():
            pattern = re.escape(hf).replace(re.escape("{bid}"), r"(?P<bid>\d+)")
            self._compiled.append((re.compile(pattern + r"\Z"), gg))


_LLAMA_NAMES: dict[str, str] = {
    # gguf-py tensor_mapping.py MODEL_TENSOR.TOKEN_EMBD: "model.embed_tokens"
    "model.embed_tokens.weight": "token_embd.weight",
    # MODEL_TENSOR.OUTPUT_NORM: "model.norm"
    "model.norm.weight": "output_norm.weight",
    # MODEL_TENSOR.OUTPUT: "lm_head" (absent when tie_word_embeddings: llama.cpp reuses token_embd)
    "lm_head.weight": "output.weight",
    # MODEL_TENSOR.ATTN_NORM: "model.layers.{bid}.input_layernorm"
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    # MODEL_TENSOR.ATTN_Q / ATTN_K / ATTN_V / ATTN_OUT: "model.layers.{bid}.self_attn.*_proj"
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    # MODEL_TENSOR.FFN_NORM: "model.layers.{bid}.post_attention_layernorm"
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    # MODEL_TENSOR.FFN_GATE / FFN_UP / FFN_DOWN: "model.layers.{bid}.mlp.*_proj"
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
    # Optional biases (LlamaConfig attention_bias / mlp_bias); llama.cpp's llama graph loads
    # them as optional tensors (llama-model.cpp LLM_ARCH_LLAMA: bq, bk, bv, bo, ffn_*_b).
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
    "model.layers.{bid}.self_attn.o_proj.bias": "blk.{bid}.attn_output.bias",
    "model.layers.{bid}.mlp.gate_proj.bias": "blk.{bid}.ffn_gate.bias",
    "model.layers.{bid}.mlp.up_proj.bias": "blk.{bid}.ffn_up.bias",
    "model.layers.{bid}.mlp.down_proj.bias": "blk.{bid}.ffn_down.bias",
}

ARCHITECTURES: tuple[ArchSpec, ...] = (
    # convert_hf_to_gguf.py LlamaModel registers LlamaForCausalLM and MistralForCausalLM
    # (EuroLLM and AMÁLIA are LlamaForCausalLM), model_arch = MODEL_ARCH.LLAMA, undo_permute.
    # amalia_edge.checkpoint.architectures lists the same two (the reader refuses others).
    ArchSpec(("LlamaForCausalLM", "MistralForCausalLM"), "llama", True, _LLAMA_NAMES),
)

# The GGUF name of llama3-style rope scaling factors (llama-arch.cpp LLM_TENSOR_ROPE_FREQS).
ROPE_FREQS = "rope_freqs.weight"


def spec_for(hf_architecture: str) -> ArchSpec:
    """The spec for an HF ``architectures[0]``; raises naming the supported ones."""
    for spec in ARCHITECTURES:
        if hf_architecture in spec.hf_architectures:
            return spec
    supported = ", ".join(a for s in ARCHITECTURES for a in s.hf_architectures)
    raise UnsupportedArchitectureError(
        f"architecture {hf_architecture!r} cannot be written to GGUF by amalia-edge",
        fix=f"use a checkpoint of a supported architecture ({supported})",
    )


def gguf_name(spec: ArchSpec, hf_name: str) -> str | None:
    """The GGUF name for ``hf_name``; None for tensors llama.cpp does not use.

    Raises :class:`ConversionError` for a tensor the table does not know, rather than
    writing a file llama.cpp would reject or silently dropping weights.
    """
    if hf_name.endswith(spec.skip):
        return None
    for pattern, target in spec._compiled:
        m = pattern.match(hf_name)
        if m:
            bid = m.groupdict().get("bid")
            return target.replace("{bid}", bid) if bid is not None else target
    raise ConversionError(
        f"tensor {hf_name!r} has no GGUF name for architecture {spec.gguf_arch!r}",
        fix="check that the checkpoint is a plain "
        + "/".join(spec.hf_architectures)
        + " (no adapters or extra heads)",
    )
