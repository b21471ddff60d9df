"""The GGUF writer: metadata, tensor layout and data, checked with gguf-py's reader and
against llama.cpp itself (it loads the files, its logits match the numpy reference forward,
its tokenizer matches sentencepiece / tokenizers, its chat template is the checkpoint's)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.convert.gguf import llama3_rope_factors, write_gguf
from tests import factory
from tests.factory import LLAMA3_ROPE_SCALING

PT_TEXT = (
    "O Zé comeu 3 pastéis de nata às 10h30 — «ótimo!», disse a avó em Coimbra.\n"
    "Não há ação sem reação: 1.º lugar, 2 542 euros e 7,5% de desconto."
)


def _reader(path: Path) -> Any:
    import gguf

    return gguf.GGUFReader(path)


def _kv(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _tensors(reader: Any) -> dict[str, Any]:
    return {t.name: t for t in reader.tensors}


def _hf_permute(w: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """convert_hf_to_gguf.py LlamaModel.permute, written out independently."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _as_f32(t: Any) -> np.ndarray[Any, Any]:
    import gguf

    data = np.asarray(t.data)
    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if t.tensor_type == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float32)
    return np.asarray(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32)


def _write(ckpt_dir: Path, tmp: Path, out_type: str) -> Path:
    ckpt = open_checkpoint(ckpt_dir)
    return write_gguf(ckpt, tmp / f"m-{out_type}.gguf", out_type).path


# -- metadata ------------------------------------------------------------------------------


def test_metadata_matches_llama_cpp_converter_keys(tiny_gguf: dict[str, Path]) -> None:
    r = _reader(tiny_gguf["F16"])
    ckpt_cfg = {
        "general.architecture": "llama",
        "general.type": "model",
        "general.name": "Tiny-PT",
        "general.license": "apache-2.0",
        "general.size_label": "2.0M",
        "general.file_type": 1,
        "general.quantization_version": 2,
        "llama.block_count": 2,
        "llama.context_length": 2048,
        "llama.embedding_length": 256,
        "llama.feed_forward_length": 512,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.attention.key_length": 64,
        "llama.attention.value_length": 64,
        "llama.rope.dimension_count": 64,
        "llama.vocab_size": 1536,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.padding_token_id": 3,
        "tokenizer.ggml.eot_token_id": 5,  # generation_config's <|im_end|>
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    for key, want in ckpt_cfg.items():
        assert _kv(r, key) == want, key
    assert _kv(r, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert _kv(r, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert len(_kv(r, "tokenizer.ggml.tokens")) == 1536
    assert len(_kv(r, "tokenizer.ggml.scores")) == 1536
    assert _kv(r, "tokenizer.chat_template") == factory.CHATML_TEMPLATE


def test_file_types_and_norms_stay_f32(tiny_gguf: dict[str, Path]) -> None:
    import gguf

    q = gguf.GGMLQuantizationType
    for quant, ftype, weight_type in (
        ("F32", 0, q.F32),
        ("F16", 1, q.F16),
        ("BF16", 32, q.BF16),
        ("Q8_0", 7, q.Q8_0),
    ):
        r = _reader(tiny_gguf[quant])
        assert _kv(r, "general.file_type") == ftype
        ts = _tensors(r)
        assert len(ts) == 2 * 9 + 3
        for name, t in ts.items():
            want = q.F32 if name.endswith("_norm.weight") else weight_type
            assert t.tensor_type == want, (quant, name)


def test_tensor_data_is_the_checkpoint_with_qk_permuted(
    tiny_checkpoint: Path, tiny_gguf: dict[str, Path]
) -> None:
    ckpt = open_checkpoint(tiny_checkpoint)
    ts = _tensors(_reader(tiny_gguf["F32"]))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "lm_head.weight": "output.weight",
        "model.norm.weight": "output_norm.weight",
        "model.layers.1.self_attn.q_proj.weight": "blk.1.attn_q.weight",
        "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
        "model.layers.1.self_attn.v_proj.weight": "blk.1.attn_v.weight",
        "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
        "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
    }
    for hf, gg in names.items():
        src = ckpt.read(hf, "float32")
        if hf.endswith("q_proj.weight"):
            src = _hf_permute(src, 4)
        elif hf.endswith("k_proj.weight"):
            src = _hf_permute(src, 2)
        got = np.asarray(ts[gg].data)
        assert got.shape == src.shape, gg
        np.testing.assert_array_equal(got, src, err_msg=gg)


def test_f16_and_q8_0_are_close_to_the_checkpoint(
    tiny_checkpoint: Path, tiny_gguf: dict[str, Path]
) -> None:
    ckpt = open_checkpoint(tiny_checkpoint)
    src = ckpt.read("model.layers.0.mlp.up_proj.weight", "float32")
    scale = float(np.abs(src).max())
    for quant, tol in (("F16", 1e-3), ("BF16", 8e-3), ("Q8_0", 1e-2)):
        t = _tensors(_reader(tiny_gguf[quant]))["blk.0.ffn_up.weight"]
        got = _as_f32(t).reshape(src.shape)
        assert float(np.abs(got - src).max()) <= tol * scale, quant


def test_bf16_checkpoint_copies_bits_exactly_and_shards_change_nothing(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    single = make_checkpoint(dtype="BF16")
    sharded = make_checkpoint(dtype="BF16", shards=3)
    a = _tensors(_reader(_write(single, tmp_path / "a", "BF16")))
    b = _tensors(_reader(_write(sharded, tmp_path / "b", "BF16")))
    assert a.keys() == b.keys()
    ckpt = open_checkpoint(sharded)
    raw = ckpt.read("model.layers.1.mlp.gate_proj.weight")  # BF16 bits as uint16
    got = np.asarray(b["blk.1.ffn_gate.weight"].data).view(np.uint16).reshape(raw.shape)
    np.testing.assert_array_equal(got, raw)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name].data), np.asarray(b[name].data), name)


def test_rope_scaling_metadata(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    import gguf

    linear = make_checkpoint(rope_scaling={"rope_type": "linear", "factor": 2.0})
    r = _reader(_write(linear, tmp_path / "lin", "F16"))
    assert _kv(r, "llama.rope.scaling.type") == "linear"
    assert _kv(r, "llama.rope.scaling.factor") == pytest.approx(2.0)

    yarn = make_checkpoint(
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
        max_position_embeddings=2048,
    )
    r = _reader(_write(yarn, tmp_path / "yarn", "F16"))
    assert _kv(r, "llama.rope.scaling.type") == "yarn"
    assert _kv(r, "llama.rope.scaling.factor") == pytest.approx(4.0)
    assert _kv(r, "llama.rope.scaling.original_context_length") == 512

    rs = LLAMA3_ROPE_SCALING
    l3 = make_checkpoint(rope_scaling=rs, rope_theta=500000.0)
    r = _reader(_write(l3, tmp_path / "l3", "F16"))
    assert _kv(r, "llama.rope.scaling.type") is None  # llama3 rides in rope_freqs.weight
    t = _tensors(r)["rope_freqs.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.F32
    got = np.asarray(t.data)
    # Independent evaluation of transformers' _compute_llama3_parameters, as factors.
    dim, base = 64, 500000.0
    inv = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = 64 / 1.0, 64 / 4.0
    smooth = (64 / wavelen - 1.0) / (4.0 - 1.0)
    want = np.where(
        wavelen < high_wl,
        1.0,
        np.where(wavelen > low_wl, 8.0, 1.0 / ((1 - smooth) / 8.0 + smooth)),
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(llama3_rope_factors(open_checkpoint(l3).config), want, rtol=1e-5)


def test_bpe_vocab_metadata(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    r = _reader(_write(make_checkpoint(tokenizer="bpe"), tmp_path, "F16"))
    assert _kv(r, "tokenizer.ggml.model") == "gpt2"
    assert _kv(r, "tokenizer.ggml.pre") == "llama-bpe"
    assert len(_kv(r, "tokenizer.ggml.merges")) > 100
    assert _kv(r, "tokenizer.ggml.scores") is None


# -- llama.cpp -------------------------------------------------------------------------------


def _llama(path: Path, **kw: Any) -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), verbose=False, n_threads=2, **kw)


def _llama_logits(path: Path, ids: list[int]) -> np.ndarray[Any, Any]:
    llm = _llama(path, n_ctx=256, logits_all=True, n_batch=256)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _ids(ckpt_dir: Path, text: str, n: int = 48) -> list[int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(ckpt_dir / "tokenizer.model"))
    return [1, *sp.encode(text)][:n]


def _compare(
    got: np.ndarray[Any, Any], want: np.ndarray[Any, Any], atol_rel: float
) -> tuple[float, float]:
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    assert (got.argmax(-1) == want.argmax(-1)).all(), "top-1 differs"
    assert diff <= atol_rel * scale, (diff, scale)
    return diff, scale


@pytest.mark.slow
def test_llama_cpp_logits_match_reference(
    tiny_checkpoint: Path, tiny_gguf: dict[str, Path]
) -> None:
    from amalia_edge.reference import ReferenceModel

    ids = _ids(tiny_checkpoint, PT_TEXT)
    want = ReferenceModel(open_checkpoint(tiny_checkpoint)).logits(ids)
    _compare(_llama_logits(tiny_gguf["F32"], ids), want, 1e-3)
    _compare(_llama_logits(tiny_gguf["F16"], ids), want, 2e-2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "rope_scaling",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
        LLAMA3_ROPE_SCALING,
    ],
    ids=lambda rs: rs["rope_type"],
)
def test_llama_cpp_applies_rope_scaling_like_reference(
    make_checkpoint: Callable[..., Path], tmp_path: Path, rope_scaling: dict[str, Any]
) -> None:
    from amalia_edge.reference import ReferenceModel

    ckpt_dir = make_checkpoint(rope_scaling=rope_scaling)
    path = _write(ckpt_dir, tmp_path, "F32")
    ids = _ids(ckpt_dir, PT_TEXT * 2, n=96)
    want = ReferenceModel(open_checkpoint(ckpt_dir)).logits(ids)
    _compare(_llama_logits(path, ids), want, 1e-3)


def test_llama_cpp_tokenizes_like_sentencepiece(
    tiny_checkpoint: Path, tiny_gguf: dict[str, Path]
) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))
    llm = _llama(tiny_gguf["F16"], vocab_only=True)
    for text in [PT_TEXT, *PT_TEXT.split("\n"), "  dois  espaços", "maçã, pão e café"]:
        want = sp.encode(text)
        got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert got == want, text
        # llama-cpp-python's detokenize keeps the SPM dummy-prefix space sentencepiece drops.
        assert llm.detokenize(got).decode("utf-8").removeprefix(" ") == sp.decode(want)
    # ChatML markers are single control tokens for llama.cpp, like the checkpoint says.
    assert llm.tokenize(b"<|im_start|>", add_bos=False, special=True) == [4]


def test_llama_cpp_tokenizes_bpe_like_tokenizers(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    ckpt_dir = make_checkpoint(tokenizer="bpe")
    tok = Tokenizer.from_file(str(ckpt_dir / "tokenizer.json"))
    llm = _llama(_write(ckpt_dir, tmp_path, "F16"), vocab_only=True)
    for text in [PT_TEXT, "Olá, mundo! 12345 — «sim»"]:
        want = tok.encode(text, add_special_tokens=False).ids
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == want, text


def test_chat_template_renders_like_the_checkpoint(tiny_gguf: dict[str, Path]) -> None:
    import jinja2

    messages = [
        {"role": "system", "content": "És um assistente português."},
        {"role": "user", "content": "Qual é a capital de Portugal?"},
    ]
    gguf_template = _kv(_reader(tiny_gguf["Q8_0"]), "tokenizer.chat_template")
    env = jinja2.Environment()
    render = env.from_string(gguf_template).render(messages=messages, add_generation_prompt=True)
    want = env.from_string(factory.CHATML_TEMPLATE).render(
        messages=messages, add_generation_prompt=True
    )
    assert render == want
    llm = _llama(tiny_gguf["Q8_0"], vocab_only=True)
    assert llm.metadata["tokenizer.chat_template"] == factory.CHATML_TEMPLATE


def test_chat_template_from_jinja_file(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    path = _write(make_checkpoint(chat_template_in="jinja"), tmp_path, "F16")
    assert _kv(_reader(path), "tokenizer.chat_template") == factory.CHATML_TEMPLATE


@pytest.mark.slow
def test_llama_cpp_generates_from_every_written_type(tiny_gguf: dict[str, Path]) -> None:
    for quant, path in tiny_gguf.items():
        llm = _llama(path, n_ctx=128)
        out = llm.create_completion("A cidade de Lisboa", max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] > 0, quant


def test_sharded_bf16_loads_in_llama_cpp(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from amalia_edge.reference import ReferenceModel

    ckpt_dir = make_checkpoint(dtype="BF16", shards=3)
    path = _write(ckpt_dir, tmp_path, "BF16")
    ids = _ids(ckpt_dir, PT_TEXT, n=24)
    want = ReferenceModel(open_checkpoint(ckpt_dir)).logits(ids)
    _compare(_llama_logits(path, ids), want, 2e-2)


def test_bf16_to_f16_fast_path_equals_numpy_cast_for_every_bf16_value() -> None:
    from amalia_edge.convert.gguf import bf16_bits_to_f16

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    with np.errstate(over="ignore"):
        want = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float16)
    got = bf16_bits_to_f16(bits)
    assert got.dtype == np.float16 and got.shape == bits.shape
    same = (got.view(np.uint16) == want.view(np.uint16)) | (np.isnan(got) & np.isnan(want))
    assert same.all()


# -- byte-for-byte against llama.cpp's own converter: tests/test_parity_converter.py -----------


def test_fast_metadata_packing_is_byte_identical_to_gguf_py(
    make_checkpoint: Callable[..., Path],
) -> None:
    import io

    import gguf
    from gguf.gguf_writer import WriterState

    from amalia_edge.convert import gguf as writer_mod

    for spec in ({}, {"tokenizer": "bpe"}, {"extra_vocab": 3000}):
        ckpt = open_checkpoint(make_checkpoint(**spec))
        blobs = []
        for w in (gguf.GGUFWriter(None, "llama"), writer_mod._fast_writer("llama")):
            writer_mod._add_metadata(w, ckpt, 1, 1)
            buf = io.BytesIO()
            w.fout = [buf]
            w.state = WriterState.EMPTY
            w.write_header_to_file()
            w.write_kv_data_to_file()
            blobs.append(buf.getvalue())
        assert blobs[0] == blobs[1], spec
