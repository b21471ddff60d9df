"""``config.json`` of a Hugging Face decoder checkpoint, parsed and validated.

Defaults follow transformers' ``LlamaConfig`` (models/llama/configuration_llama.py) where a
field is absent: ``num_key_value_heads = num_attention_heads``, ``head_dim = hidden_size //
num_attention_heads``, ``rms_norm_eps = 1e-6``, ``rope_theta = 10000``,
``max_position_embeddings = 2048``, ``tie_word_embeddings = False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.checkpoint.architectures import ARCHITECTURES, ROPE_TYPES
from amalia_edge.errors import CheckpointError, UnsupportedArchitectureError
from amalia_edge.safeio import load_json_file

# Largest integer hyper-parameter: GGUF keeps them as uint32 and llama.cpp reads int32.
MAX_INT = (1 << 31) - 1
# Largest float hyper-parameter: GGUF keeps rope_theta / rms_norm_eps as float32.
MAX_FLOAT32 = 3.4e38


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama-family decoder (see module docstring for defaults).

    ``rope_scaling`` is ``None`` for plain RoPE, else a copy of config.json's dict with
    ``rope_type`` always set (HF spells it ``type`` in older files).
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    rope_scaling: dict[str, Any] | None
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def gguf_arch(self) -> str:
        return ARCHITECTURES[self.architecture].gguf_arch

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else str(self.rope_scaling["rope_type"])


def _fail(path: Path, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}", fix=fix)


def _int(raw: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = raw.get(key, default)
    if value is None:
        raise _fail(path, f"required field {key!r} is missing", "add it (see the model card)")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(path, f"{key} must be a positive integer, got {value!r}", "fix config.json")
    if value > MAX_INT:
        # GGUF stores these as uint32 (llama.cpp reads int32): 2^40 used to crash the writer.
        raise _fail(path, f"{key} is {value}, more than {MAX_INT}", "fix config.json")
    return value


def _float(raw: dict[str, Any], key: str, path: Path, default: float) -> float:
    value = raw.get(key, default)
    if value is None:
        value = default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
        or value > MAX_FLOAT32
    ):
        raise _fail(
            path, f"{key} must be a positive finite number, got {value!r}", "fix config.json"
        )
    return float(value)


def _rope_scaling(raw: dict[str, Any], path: Path) -> dict[str, Any] | None:
    rs = raw.get("rope_scaling")
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise _fail(path, f"rope_scaling must be an object, got {rs!r}", "fix config.json")
    rope_type = rs.get("rope_type", rs.get("type"))
    if rope_type not in ROPE_TYPES:
        raise _fail(
            path,
            f"rope_scaling type {rope_type!r} is not supported",
            f"use one of {', '.join(ROPE_TYPES)} (llama.cpp implements no other for Llama)",
        )
    if rope_type == "default":
        return None
    out = dict(rs)
    out["rope_type"] = rope_type
    factor = out.get("factor")
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
        or factor <= 0
    ):
        raise _fail(
            path, f"rope_scaling {rope_type} needs a positive 'factor', got {factor!r}", "fix it"
        )
    if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            v = out.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _fail(path, f"rope_scaling llama3 needs {key!r}", "fix config.json")
    return out


def parse_config(raw: Any, path: Path) -> ModelConfig:
    """Validate a parsed config.json (``path`` only names it in errors)."""
    if not isinstance(raw, dict):
        raise _fail(path, "config.json is not a JSON object", "restore the original config.json")
    archs = raw.get("architectures")
    if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
        raise _fail(
            path,
            "field 'architectures' is missing or not a list of names",
            f"set it to one of {', '.join(ARCHITECTURES)}",
        )
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {arch!r} is not supported",
            fix=f"amalia-edge converts {', '.join(ARCHITECTURES)}",
        )
    hidden = _int(raw, "hidden_size", path)
    heads = _int(raw, "num_attention_heads", path)
    kv_heads = _int(raw, "num_key_value_heads", path, heads)
    head_dim_default = hidden // heads if hidden % heads == 0 else None
    head_dim = _int(raw, "head_dim", path, head_dim_default)
    if heads % kv_heads:
        raise _fail(
            path,
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})",
            "fix config.json",
        )
    tie = raw.get("tie_word_embeddings", False)
    return ModelConfig(
        architecture=arch,
        vocab_size=_int(raw, "vocab_size", path),
        hidden_size=hidden,
        intermediate_size=_int(raw, "intermediate_size", path),
        num_hidden_layers=_int(raw, "num_hidden_layers", path),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_float(raw, "rms_norm_eps", path, 1e-6),
        rope_theta=_float(raw, "rope_theta", path, 10000.0),
        max_position_embeddings=_int(raw, "max_position_embeddings", path, 2048),
        rope_scaling=_rope_scaling(raw, path),
        tie_word_embeddings=bool(tie),
        attention_bias=bool(raw.get("attention_bias", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        raw=raw,
    )


def load_config(directory: Path) -> ModelConfig:
    """Read and validate ``directory/config.json``."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no config.json",
            fix="point to a Hugging Face model directory (with config.json and *.safetensors)",
        )
    raw = load_json_file(
        path, CheckpointError, fix="restore the original config.json (download it again)"
    )
    return parse_config(raw, path)
