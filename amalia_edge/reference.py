"""An independent numpy forward pass of a Llama-family safetensors checkpoint.

The yardstick that GGUF, ONNX and imatrix outputs are checked against: it reads the Hugging
Face weights directly (no conversion code shared with the writers but the RoPE frequency
table, see below) and follows transformers' ``LlamaForCausalLM`` semantics, in float32:

* RMSNorm ``x / sqrt(mean(x^2) + eps) * w``;
* attention with grouped KV heads (head ``h`` uses KV head ``h // (heads / kv_heads)``),
  scale ``1/sqrt(head_dim)``, causal mask, optional q/k/v/o biases;
* RoPE in HF's "rotate half" layout (the first and second half of each head are the pair),
  inverse frequencies per ``rope_scaling`` type as transformers' ``modeling_rope_utils``
  computes them: default, ``linear`` (frequencies / factor), ``llama3`` (wavelength bands),
  ``yarn`` (ramped interpolation plus the attention factor applied to cos and sin). That one
  table lives in :mod:`amalia_edge.rope` and the ONNX exporter uses it too, so agreement
  between the two does not check it: ``tests/test_reference.py`` checks it against closed-form
  values, and against transformers itself where that is installed;
* SwiGLU MLP ``down(silu(gate(x)) * up(x))``;
* final norm and ``lm_head`` (the embedding when tied or when lm_head is absent).

Memory: one layer's weights are read, used and dropped at a time; the embedding is read only
for the rows needed and the output head in row blocks, so peak memory is about one layer plus
the activations, never the whole model. Mistral's ``sliding_window`` is not applied (llama.cpp's
``llama`` arch does not apply it either).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from amalia_edge.rope import rope_inv_freq

if TYPE_CHECKING:
    from amalia_edge.checkpoint import Checkpoint

MatmulHook = Callable[[str, np.ndarray], None]

# Rows of the output head read per block (bounded memory for 128k-token vocabularies).
HEAD_BLOCK_ROWS = 8192


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x.astype(np.float32) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps)) * w).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [heads, T, head_dim]; cos/sin [T, head_dim] (rotate-half layout)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(np.float32)


class ReferenceModel:
    """Forward pass of ``ckpt`` in float32 numpy (see module docstring for the semantics)."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self.config = ckpt.config
        self.inv_freq, self.rope_scale = rope_inv_freq(self.config)
        self.head_name = (
            "lm_head.weight"
            if "lm_head.weight" in ckpt.tensor_infos
            else "model.embed_tokens.weight"
        )

    def _w(self, name: str) -> np.ndarray:
        return self.ckpt.read(name, "float32")

    def _load_layer(self, i: int) -> dict[str, np.ndarray]:
        """Every tensor of layer ``i`` as float32, keyed by the name after ``layers.{i}.``."""
        prefix = f"model.layers.{i}."
        return {
            n[len(prefix) :]: self._w(n) for n in self.ckpt.tensor_infos if n.startswith(prefix)
        }

    @staticmethod
    def _linear(
        x: np.ndarray, w: dict[str, np.ndarray], key: str, name: str, hook: MatmulHook | None
    ) -> np.ndarray:
        if hook is not None:
            hook(name, x)
        y = x @ w[key + ".weight"].T
        if key + ".bias" in w:
            y = y + w[key + ".bias"]
        return y.astype(np.float32)

    def _layer(
        self,
        i: int,
        w: dict[str, np.ndarray],
        x: np.ndarray,
        cos: np.ndarray,
        sin: np.ndarray,
        hook: MatmulHook | None,
    ) -> np.ndarray:
        c = self.config
        p = f"model.layers.{i}."
        t = x.shape[0]
        hd, nh, nkv = c.head_dim, c.num_attention_heads, c.num_key_value_heads

        h = rms_norm(x, w["input_layernorm.weight"], c.rms_norm_eps)
        q, k, v = (
            self._linear(h, w, f"self_attn.{n}_proj", p + f"self_attn.{n}_proj.weight", hook)
            for n in "qkv"
        )
        q = apply_rope(q.reshape(t, nh, hd).transpose(1, 0, 2), cos, sin)
        k = apply_rope(k.reshape(t, nkv, hd).transpose(1, 0, 2), cos, sin)
        v = v.reshape(t, nkv, hd).transpose(1, 0, 2)

        kv_of_head = np.arange(nh) // (nh // nkv)  # grouped-query attention
        scores = np.einsum("htd,hsd->hts", q, k[kv_of_head]) / np.float32(math.sqrt(hd))
        mask = np.triu(np.ones((t, t), dtype=bool), k=1)
        scores = np.where(mask, np.float32(-np.inf), scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = np.einsum("hts,hsd->htd", probs.astype(np.float32), v[kv_of_head])
        attn = attn.transpose(1, 0, 2).reshape(t, nh * hd).astype(np.float32)
        x = x + self._linear(attn, w, "self_attn.o_proj", p + "self_attn.o_proj.weight", hook)

        h = rms_norm(x, w["post_attention_layernorm.weight"], c.rms_norm_eps)
        gate = self._linear(h, w, "mlp.gate_proj", p + "mlp.gate_proj.weight", hook)
        up = self._linear(h, w, "mlp.up_proj", p + "mlp.up_proj.weight", hook)
        act = (silu(gate) * up).astype(np.float32)
        down = self._linear(act, w, "mlp.down_proj", p + "mlp.down_proj.weight", hook)
        return (x + down).astype(np.float32)

    def _check_ids(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("token_ids is empty")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        return ids

    def hidden_states_many(
        self,
        sequences: Sequence[Sequence[int] | np.ndarray],
        on_matmul: MatmulHook | None = None,
    ) -> list[np.ndarray]:
        """Final-normed hidden states [T_i, hidden] of each sequence (independent, causal).

        Layers are the outer loop: each layer's weights are read once for all sequences.
        """
        c = self.config
        seqs = [self._check_ids(s) for s in sequences]
        xs = [self.ckpt.read_rows("model.embed_tokens.weight", ids) for ids in seqs]
        rope = []
        for ids in seqs:
            pos = np.arange(ids.size, dtype=np.float32)
            freqs = np.outer(pos, self.inv_freq).astype(np.float32)
            emb = np.concatenate([freqs, freqs], axis=-1)
            scale = np.float32(self.rope_scale)
            rope.append(
                ((np.cos(emb) * scale).astype(np.float32), (np.sin(emb) * scale).astype(np.float32))
            )
        for i in range(c.num_hidden_layers):
            w = self._load_layer(i)
            xs = [
                self._layer(i, w, x, cos, sin, on_matmul)
                for x, (cos, sin) in zip(xs, rope, strict=True)
            ]
            del w
        norm = self._w("model.norm.weight")
        return [rms_norm(x, norm, c.rms_norm_eps) for x in xs]

    def hidden_states(
        self, token_ids: Sequence[int] | np.ndarray, on_matmul: MatmulHook | None = None
    ) -> np.ndarray:
        """Final-normed hidden states [T, hidden] (before the output head)."""
        return self.hidden_states_many([token_ids], on_matmul)[0]

    def forward_many(
        self,
        sequences: Sequence[Sequence[int] | np.ndarray],
        on_matmul: MatmulHook | None = None,
    ) -> list[np.ndarray]:
        """:meth:`forward` of several independent sequences, reading the weights once."""
        hs = self.hidden_states_many(sequences, on_matmul)
        if on_matmul is not None:
            for h in hs:
                on_matmul(self.head_name, h)
        vocab = self.config.vocab_size
        outs = [np.empty((h.shape[0], vocab), dtype=np.float32) for h in hs]
        for start in range(0, vocab, HEAD_BLOCK_ROWS):
            stop = min(start + HEAD_BLOCK_ROWS, vocab)
            block = self.ckpt.read_row_block(self.head_name, start, stop)
            for h, out in zip(hs, outs, strict=True):
                out[:, start:stop] = h @ block.T
        return outs

    def forward(
        self, token_ids: Sequence[int] | np.ndarray, on_matmul: MatmulHook | None = None
    ) -> np.ndarray:
        """Logits [T, vocab] float32 for ``token_ids`` (no BOS is added).

        ``on_matmul(hf_weight_name, x)`` is called before every linear layer with its input
        ``x[T, in_features]`` (float32, do not modify): q/k/v with the same ``x``, gate/up
        with the same ``x``, and finally the output head under ``lm_head.weight`` (or
        ``model.embed_tokens.weight`` when tied).
        """
        return self.forward_many([token_ids], on_matmul)[0]

    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits [T, vocab] float32, causal, for the whole sequence."""
        return self.forward(token_ids)
