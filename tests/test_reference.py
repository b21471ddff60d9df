"""The numpy reference forward pass against independent implementations."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.checkpoint import Checkpoint, open_checkpoint
from amalia_edge.reference import ReferenceModel, rope_inv_freq
from tests import factory
from tests.factory import LLAMA3_ROPE_SCALING

IDS = [1, 17, 300, 1200, 42, 42, 999, 5, 1500, 7, 64, 128]


def naive_logits(ckpt: Checkpoint, ids: list[int]) -> np.ndarray:
    """A deliberately plain float64 Llama forward: loops over positions and heads, RoPE as a
    rotation of each (j, j + half) pair by angle pos * theta^(-2j/d) / linear factor."""
    c = ckpt.config

    def w(name: str) -> np.ndarray:
        return ckpt.read(name, "float32").astype(np.float64)

    def norm(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / math.sqrt(float(np.mean(x * x)) + c.rms_norm_eps) * g

    factor = 1.0
    if c.rope_scaling is not None:
        assert c.rope_scaling["rope_type"] == "linear"
        factor = float(c.rope_scaling["factor"])
    hd, half = c.head_dim, c.head_dim // 2

    def rope(v: np.ndarray, pos: int) -> np.ndarray:
        out = v.copy()
        for j in range(half):
            ang = pos * c.rope_theta ** (-2 * j / hd) / factor
            a, b = v[j], v[j + half]
            out[j] = a * math.cos(ang) - b * math.sin(ang)
            out[j + half] = b * math.cos(ang) + a * math.sin(ang)
        return out

    emb = w("model.embed_tokens.weight")
    xs = [emb[t].copy() for t in ids]
    per_kv = c.num_attention_heads // c.num_key_value_heads
    for layer in range(c.num_hidden_layers):
        p = f"model.layers.{layer}."
        wq, wk, wv, wo = (w(p + f"self_attn.{n}_proj.weight") for n in "qkvo")
        keys: list[list[np.ndarray]] = []
        values: list[list[np.ndarray]] = []
        new_xs = []
        for pos, x in enumerate(xs):
            h = norm(x, w(p + "input_layernorm.weight"))
            q, k, v = wq @ h, wk @ h, wv @ h
            keys.append([rope(k[g * hd : (g + 1) * hd], pos) for g in range(c.num_key_value_heads)])
            values.append([v[g * hd : (g + 1) * hd] for g in range(c.num_key_value_heads)])
            heads = []
            for head in range(c.num_attention_heads):
                g = head // per_kv
                qh = rope(q[head * hd : (head + 1) * hd], pos)
                s = np.array([qh @ keys[t][g] for t in range(pos + 1)]) / math.sqrt(hd)
                pr = np.exp(s - s.max())
                pr /= pr.sum()
                heads.append(sum(pr[t] * values[t][g] for t in range(pos + 1)))
            x = x + wo @ np.concatenate(heads)
            h2 = norm(x, w(p + "post_attention_layernorm.weight"))
            gate = w(p + "mlp.gate_proj.weight") @ h2
            up = w(p + "mlp.up_proj.weight") @ h2
            x = x + w(p + "mlp.down_proj.weight") @ (gate / (1 + np.exp(-gate)) * up)
            new_xs.append(x)
        xs = new_xs
    head_w = w(
        "lm_head.weight" if "lm_head.weight" in ckpt.tensor_infos else "model.embed_tokens.weight"
    )
    return np.stack([head_w @ norm(x, w("model.norm.weight")) for x in xs])


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        {"tie_word_embeddings": True, "head_dim": 32},
    ],
    ids=["plain", "linear-rope", "tied-headdim32"],
)
def test_matches_naive_implementation(
    make_checkpoint: Callable[..., Path], spec: dict[str, Any]
) -> None:
    ckpt = open_checkpoint(make_checkpoint(**spec), tokenizer=False)
    ids = IDS[:8]
    got = ReferenceModel(ckpt).logits(ids)
    want = naive_logits(ckpt, ids)
    assert got.dtype == np.float32 and got.shape == (8, ckpt.config.vocab_size)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert want.std() > 1.0  # logits spread: top-1 comparisons downstream are meaningful


def test_causal(tiny_checkpoint: Path) -> None:
    ref = ReferenceModel(open_checkpoint(tiny_checkpoint, tokenizer=False))
    full = ref.logits(IDS)
    for t in (1, 5):
        np.testing.assert_allclose(ref.logits(IDS[:t]), full[:t], atol=1e-5, rtol=1e-5)
    changed = ref.logits([*IDS[:-1], 3])
    np.testing.assert_allclose(changed[:-1], full[:-1], atol=1e-5, rtol=1e-5)
    assert not np.allclose(changed[-1], full[-1])


def _expand_kv(src: Path, dst: Path) -> None:
    """Copy ``src`` with every KV head repeated so that kv heads == attention heads."""
    shutil.copytree(src, dst)
    cfg = json.loads((src / "config.json").read_text())
    group = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    hd = cfg["head_dim"]
    ckpt = open_checkpoint(src, tokenizer=False)
    arrays: dict[str, np.ndarray] = {}
    for name in ckpt.weight_names():
        a = ckpt.read(name, "float32")
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            a = np.repeat(a.reshape(-1, hd, a.shape[-1]), group, axis=0).reshape(-1, a.shape[-1])
        arrays[name] = a
    (dst / "model.safetensors").unlink()
    factory.write_safetensors(
        dst / "model.safetensors",
        [(n, "F32", a.shape) for n, a in arrays.items()],
        arrays.__getitem__,
    )
    cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    (dst / "config.json").write_text(json.dumps(cfg))


def test_gqa_equals_repeated_kv_heads(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _expand_kv(tiny_checkpoint, tmp_path / "mha")
    gqa = ReferenceModel(open_checkpoint(tiny_checkpoint, tokenizer=False))
    mha = ReferenceModel(open_checkpoint(tmp_path / "mha", tokenizer=False))
    assert gqa.config.num_key_value_heads == 2 and mha.config.num_key_value_heads == 4
    np.testing.assert_allclose(gqa.logits(IDS), mha.logits(IDS), atol=1e-5, rtol=1e-5)


def test_bf16_close_to_f32(make_checkpoint: Callable[..., Path]) -> None:
    f32 = ReferenceModel(open_checkpoint(make_checkpoint(), tokenizer=False)).logits(IDS)
    bf16 = ReferenceModel(
        open_checkpoint(make_checkpoint(dtype="BF16", shards=3), tokenizer=False)
    ).logits(IDS)
    assert not np.array_equal(f32, bf16)
    assert np.abs(f32 - bf16).max() < 0.1 * np.abs(f32).max()
    assert (f32.argmax(-1) == bf16.argmax(-1)).mean() >= 0.75


def test_rope_frequencies() -> None:
    base: dict[str, Any] = dict(
        vocab_size=8,
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        max_position_embeddings=131072,
        tie_word_embeddings=False,
        architecture="LlamaForCausalLM",
    )
    from amalia_edge.checkpoint import ModelConfig

    plain, s = rope_inv_freq(ModelConfig(**base, rope_scaling=None))
    assert s == 1.0 and plain.shape == (64,)
    np.testing.assert_allclose(plain, 500000.0 ** (-np.arange(0, 128, 2) / 128), rtol=1e-6)
    lin, _ = rope_inv_freq(ModelConfig(**base, rope_scaling={"rope_type": "linear", "factor": 8.0}))
    np.testing.assert_allclose(lin, plain / 8, rtol=1e-6)
    l3 = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    f3, _ = rope_inv_freq(ModelConfig(**base, rope_scaling=l3))
    wavelen = 2 * np.pi / plain
    hi = wavelen < 8192 / 4  # short wavelengths: untouched
    lo = wavelen > 8192 / 1  # long wavelengths: divided by factor
    np.testing.assert_allclose(f3[hi], plain[hi], rtol=1e-6)
    np.testing.assert_allclose(f3[lo], plain[lo] / 8, rtol=1e-6)
    mid = ~hi & ~lo
    assert mid.any() and np.all(f3[mid] < plain[mid]) and np.all(f3[mid] > plain[mid] / 8)
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    fy, sy = rope_inv_freq(ModelConfig(**base, rope_scaling=yarn))
    assert sy == pytest.approx(0.1 * math.log(4.0) + 1.0)
    assert fy[0] == pytest.approx(plain[0]) and fy[-1] == pytest.approx(plain[-1] / 4)


def test_on_matmul_hook_sees_every_linear(make_checkpoint: Callable[..., Path]) -> None:
    ckpt = open_checkpoint(make_checkpoint(), tokenizer=False)
    seen: list[tuple[str, tuple[int, ...]]] = []
    logits = ReferenceModel(ckpt).forward(IDS[:5], on_matmul=lambda n, x: seen.append((n, x.shape)))
    np.testing.assert_array_equal(logits, ReferenceModel(ckpt).logits(IDS[:5]))
    linear = [n for n in ckpt.weight_names() if n.endswith("proj.weight")] + ["lm_head.weight"]
    assert sorted(n for n, _ in seen) == sorted(linear)
    for name, shape in seen:
        assert shape == (5, ckpt.tensor_infos[name].shape[1]), name
    assert seen[-1][0] == "lm_head.weight"


def test_memory_one_tensor_at_a_time(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedding and head are never read whole; each layer tensor is read as needed."""
    ckpt = open_checkpoint(tiny_checkpoint, tokenizer=False)
    whole: list[str] = []
    real = Checkpoint.read

    def spy(self: Checkpoint, name: str, dtype: str | None = None) -> np.ndarray:
        whole.append(name)
        return real(self, name, dtype)

    monkeypatch.setattr(Checkpoint, "read", spy)
    ReferenceModel(ckpt).logits(IDS)
    assert "model.embed_tokens.weight" not in whole and "lm_head.weight" not in whole
    assert whole[0].startswith("model.layers.0.") and whole[-1] == "model.norm.weight"


def test_rejects_bad_ids(tiny_checkpoint: Path) -> None:
    ref = ReferenceModel(open_checkpoint(tiny_checkpoint, tokenizer=False))
    with pytest.raises(ValueError):
        ref.logits([])
    with pytest.raises(ValueError):
        ref.logits([1536])


CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "linear": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    "llama3": {
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE_SCALING,
    },
    "yarn": {
        "max_position_embeddings": 2048,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 512,
        },
    },
    "tied-bias": {"tie_word_embeddings": True, "attention_bias": True},
    "bf16-sharded": {"dtype": "BF16", "shards": 2},
    "head-dim-32": {"head_dim": 32},
    "mha": {"num_key_value_heads": 4},
}


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(make_checkpoint: Callable[..., Path], case: str) -> None:
    """Against Hugging Face's own LlamaForCausalLM (fails under CI=true where torch or
    transformers are missing; elsewhere skips saying how to install them)."""
    from tests import parity

    parity.require_transformers()
    import safetensors.torch as st_torch
    import torch
    import transformers

    path = make_checkpoint(**CASES[case])
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("architectures")
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).float().eval()
    state: dict[str, Any] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update({k: v.float() for k, v in st_torch.load_file(str(f)).items()})
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"lm_head.weight"}
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=48)
    with torch.no_grad():
        want = model(torch.tensor(ids)[None]).logits[0].numpy()
    got = ReferenceModel(open_checkpoint(path, tokenizer=False)).logits(ids)
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_forward_many_equals_one_by_one(tiny_checkpoint: Path) -> None:
    ref = ReferenceModel(open_checkpoint(tiny_checkpoint, tokenizer=False))
    seqs = [IDS, IDS[:3], [5, 6, 7, 8, 9]]
    calls: list[str] = []
    many = ref.forward_many(seqs, on_matmul=lambda n, _x: calls.append(n))
    for seq, got in zip(seqs, many, strict=True):
        np.testing.assert_allclose(got, ref.logits(seq), atol=1e-6, rtol=1e-6)
    assert calls.count("model.layers.1.mlp.down_proj.weight") == 3
