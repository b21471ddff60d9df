"""The architectures amalia-edge reads, converts and runs in its reference forward pass.

Supported: **LlamaForCausalLM** (Llama 2/3, EuroLLM, AMÁLIA) and **MistralForCausalLM**
(Mistral 7B v0.1-v0.3). Both are the same decoder (RMSNorm, GQA attention with RoPE,
SwiGLU MLP), and llama.cpp converts both to its ``llama`` architecture. Anything else is
refused with the list below; adding a row here is not enough to support a new one (the GGUF
tensor map and the reference forward must agree with it too).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureSpec:
    hf_name: str  # config.json "architectures"[0]
    gguf_arch: str  # llama.cpp's general.architecture
    note: str


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.hf_name: spec
    for spec in (
        # llama.cpp convert_hf_to_gguf.py: LlamaModel is registered for "LlamaForCausalLM"
        # with model_arch = MODEL_ARCH.LLAMA ("llama").
        ArchitectureSpec("LlamaForCausalLM", "llama", "Llama 2/3, EuroLLM, AMÁLIA"),
        # Same LlamaModel class is registered for "MistralForCausalLM"; sliding_window is not
        # carried (llama.cpp's llama arch attends to the whole context).
        ArchitectureSpec("MistralForCausalLM", "llama", "Mistral 7B v0.1-v0.3"),
    )
}

# Rope scaling types (HF rope_scaling "rope_type"/"type") that llama.cpp's llama arch and the
# reference forward both implement. Source: transformers modeling_rope_utils.py
# ROPE_INIT_FUNCTIONS; llama.cpp convert_hf_to_gguf.py LlamaModel.set_gguf_parameters and
# generate_extra_tensors (llama3 -> rope_freqs tensor).
ROPE_TYPES: tuple[str, ...] = ("default", "linear", "llama3", "yarn")


def supported_architectures() -> list[str]:
    """HF ``architectures`` names that amalia-edge supports, in table order."""
    return list(ARCHITECTURES)


# HF tensor names of the Llama decoder; {i} is the layer index.
# Source: transformers models/llama/modeling_llama.py (module attribute names).
GLOBAL_TENSORS: tuple[str, ...] = ("model.embed_tokens.weight", "model.norm.weight")
LM_HEAD = "lm_head.weight"
LAYER_TENSORS: tuple[str, ...] = (
    "model.layers.{i}.input_layernorm.weight",
    "model.layers.{i}.self_attn.q_proj.weight",
    "model.layers.{i}.self_attn.k_proj.weight",
    "model.layers.{i}.self_attn.v_proj.weight",
    "model.layers.{i}.self_attn.o_proj.weight",
    "model.layers.{i}.post_attention_layernorm.weight",
    "model.layers.{i}.mlp.gate_proj.weight",
    "model.layers.{i}.mlp.up_proj.weight",
    "model.layers.{i}.mlp.down_proj.weight",
)
# Present only when config.json sets attention_bias / mlp_bias (LlamaConfig options).
OPTIONAL_LAYER_TENSORS: tuple[str, ...] = (
    "model.layers.{i}.self_attn.q_proj.bias",
    "model.layers.{i}.self_attn.k_proj.bias",
    "model.layers.{i}.self_attn.v_proj.bias",
    "model.layers.{i}.self_attn.o_proj.bias",
    "model.layers.{i}.mlp.gate_proj.bias",
    "model.layers.{i}.mlp.up_proj.bias",
    "model.layers.{i}.mlp.down_proj.bias",
)
# Tensors some exporters leave in the file that carry no weights (recomputed at load time).
IGNORED_SUFFIXES: tuple[str, ...] = (".rotary_emb.inv_freq",)
