"""RoPE inverse frequencies per ``rope_scaling`` type: one table for every consumer.

The numpy reference (:mod:`amalia_edge.reference`) and the ONNX exporter
(:mod:`amalia_edge.convert.onnx`) bake the same frequencies into their rotations, so they
compute them here once. The values follow transformers' ``modeling_rope_utils.py``
(``_compute_default_rope_parameters``, ``_compute_linear_scaling_rope_parameters``,
``_compute_llama3_parameters``, ``_compute_yarn_parameters``) step for step, in float64,
rounded to float32 at the end, as transformers does before its float32 matmul.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from amalia_edge.errors import CheckpointError

if TYPE_CHECKING:
    from amalia_edge.checkpoint import ModelConfig


def rope_inv_freq(config: ModelConfig) -> tuple[np.ndarray, float]:
    """``(inv_freq[head_dim // 2] float32, attention_factor)`` for ``config``.

    ``attention_factor`` multiplies cos and sin; it differs from 1.0 only for yarn.
    ``config.rope_scaling`` is as :mod:`amalia_edge.checkpoint.config` normalises it:
    ``None`` for default RoPE, else a dict with ``rope_type`` set. Any other type raises
    :class:`CheckpointError` (the config parser already refuses them).
    """
    dim = config.head_dim
    base = config.rope_theta
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv = 1.0 / (base**exponents)
    rs = config.rope_scaling
    scale = 1.0
    kind = None if rs is None else rs["rope_type"]
    if rs is None:
        pass
    elif kind == "linear":
        inv = inv / float(rs["factor"])
    elif kind == "llama3":
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old_ctx = float(rs["original_max_position_embeddings"])
        low_wl, high_wl = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wl) & (wavelen <= low_wl)
        inv = np.where(medium, smoothed, scaled)
    elif kind == "yarn":
        factor = float(rs["factor"])
        orig = float(rs.get("original_max_position_embeddings") or config.max_position_embeddings)

        def mscale(s: float, m: float = 1.0) -> float:
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

        attn = rs.get("attention_factor")
        if attn is None:
            ms, ms_all = rs.get("mscale"), rs.get("mscale_all_dim")
            attn = mscale(factor, ms) / mscale(factor, ms_all) if ms and ms_all else mscale(factor)
        scale = float(attn)
        beta_fast = float(rs.get("beta_fast") or 32)
        beta_slow = float(rs.get("beta_slow") or 1)

        def corr_dim(rot: float) -> float:
            return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
        if rs.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:  # transformers' guard against a zero-width ramp
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - lo) / (hi - lo), 0, 1)
        extrap = 1 - ramp
        pos_freqs = base**exponents
        inv = (1.0 / (factor * pos_freqs)) * (1 - extrap) + (1.0 / pos_freqs) * extrap
    else:
        raise CheckpointError(
            f"rope_scaling type {kind!r} is not supported",
            fix="use default, linear, llama3 or yarn",
        )
    return inv.astype(np.float32), scale
