"""Checkpoint reader: config, lazy safetensors reads, sharding, hub cache, fingerprint."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from amalia_edge.checkpoint import (
    Checkpoint,
    open_checkpoint,
    reader,
    supported_architectures,
)
from amalia_edge.checkpoint.hub import hub_cache_dir
from amalia_edge.errors import CheckpointError
from tests import factory


def test_supported_architectures_named() -> None:
    assert supported_architectures() == ["LlamaForCausalLM", "MistralForCausalLM"]


def test_open_reads_config(tiny_checkpoint: Path) -> None:
    ckpt = open_checkpoint(tiny_checkpoint)
    c = ckpt.config
    assert c.architecture == "LlamaForCausalLM" and c.gguf_arch == "llama"
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (256, 2, 4)
    assert c.num_key_value_heads == 2 and c.head_dim == 64
    assert c.vocab_size == 1536 and c.rope_scaling is None and c.rope_type == "default"
    assert ckpt.dtype == "F32"
    assert ckpt.name == "Tiny-PT" and ckpt.license == "apache-2.0"
    expected_params = sum(np.prod(s) for _, s in factory._shapes(factory.Spec(), 1536))
    assert ckpt.param_count == expected_params
    assert ckpt.size_label == "2.0M"


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_read_matches_written_values(make_checkpoint: Callable[..., Path], dtype: str) -> None:
    path = make_checkpoint(dtype=dtype)
    ckpt = open_checkpoint(path, tokenizer=False)
    for name, want in factory.expected_weights(path, dtype=dtype):
        info = ckpt.tensor_infos[name]
        assert info.dtype == dtype and info.shape == want.shape
        got = ckpt.read(name, "float32")
        assert got.dtype == np.float32
        if dtype == "F32":
            np.testing.assert_array_equal(got, want)
        elif dtype == "F16":
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
        else:
            # BF16 is float32 with the low 16 bits rounded away: within half an ulp of 8 bits.
            np.testing.assert_allclose(got, want, rtol=2**-8, atol=0)
            assert not np.any(got.view(np.uint32) & 0xFFFF)
    native = ckpt.read("model.norm.weight")
    assert native.dtype == {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[dtype]


def test_bf16_widening_is_exact_and_rounding_is_nearest_even() -> None:
    from amalia_edge.checkpoint.safetensors import bf16_to_f32

    # 1 + 2^-8 is exactly halfway between two BF16 values: ties go to the even mantissa (1.0);
    # 1 + 3*2^-8 ties up to 1 + 2^-6; 1 + 2^-7 is representable.
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7, -2.5, 3.0e38], dtype=np.float32)
    back = bf16_to_f32(factory.f32_to_bf16_bits(x))
    np.testing.assert_array_equal(back, [1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -2.5, back[-1]])
    assert abs(back[-1] - 3.0e38) / 3.0e38 < 2**-8


def test_sharded_bf16_equals_single_file(make_checkpoint: Callable[..., Path]) -> None:
    single = open_checkpoint(make_checkpoint(dtype="BF16"), tokenizer=False)
    sharded = open_checkpoint(make_checkpoint(dtype="BF16", shards=3), tokenizer=False)
    assert len(sharded.headers) == 3
    assert set(single.tensor_infos) == set(sharded.tensor_infos)
    for name in single.weight_names():
        np.testing.assert_array_equal(single.read(name), sharded.read(name))
    files = {sharded.tensor_infos[n].file.name for n in sharded.weight_names()}
    assert len(files) == 3
    # weight_names() is sequential: grouped by file, offsets increasing inside a file
    order = [
        (str(sharded.tensor_infos[n].file), sharded.tensor_infos[n].offset)
        for n in sharded.weight_names()
    ]
    assert order == sorted(order)


def test_partial_reads(tiny_checkpoint: Path) -> None:
    ckpt = open_checkpoint(tiny_checkpoint, tokenizer=False)
    full = ckpt.read("model.embed_tokens.weight", "float32")
    np.testing.assert_array_equal(
        ckpt.read_rows("model.embed_tokens.weight", [5, 0, 5]), full[[5, 0, 5]]
    )
    np.testing.assert_array_equal(
        ckpt.read_row_block("lm_head.weight", 100, 300),
        ckpt.read("lm_head.weight", "float32")[100:300],
    )
    with pytest.raises(IndexError):
        ckpt.read_rows("model.embed_tokens.weight", [1536])
    with pytest.raises(KeyError, match="no tensor"):
        ckpt.read("model.layers.9.mlp.up_proj.weight")


def test_tied_embeddings_have_no_lm_head(make_checkpoint: Callable[..., Path]) -> None:
    ckpt = open_checkpoint(make_checkpoint(tie_word_embeddings=True), tokenizer=False)
    assert ckpt.config.tie_word_embeddings
    assert "lm_head.weight" not in ckpt.weight_names()


def test_rope_scaling_normalised(make_checkpoint: Callable[..., Path]) -> None:
    old_style = {"type": "linear", "factor": 2.0}
    ckpt = open_checkpoint(make_checkpoint(rope_scaling=old_style), tokenizer=False)
    assert ckpt.config.rope_scaling == {"type": "linear", "factor": 2.0, "rope_type": "linear"}
    assert ckpt.config.rope_type == "linear"
    plain = open_checkpoint(make_checkpoint(rope_scaling={"rope_type": "default"}), tokenizer=False)
    assert plain.config.rope_scaling is None


def test_mistral_architecture_accepted(make_checkpoint: Callable[..., Path]) -> None:
    ckpt = open_checkpoint(make_checkpoint(architecture="MistralForCausalLM"), tokenizer=False)
    assert ckpt.config.architecture == "MistralForCausalLM" and ckpt.config.gguf_arch == "llama"


def test_extra_tensors_are_reported_not_fatal(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    factory.write_safetensors(
        path / "model-extra.safetensors",
        [
            ("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", (32,)),
            ("vision_tower.weight", "F32", (4,)),
        ],
        lambda name: np.zeros(32 if "inv_freq" in name else 4, np.float32),
    )
    ckpt = open_checkpoint(path, tokenizer=False)
    assert ckpt.extra_tensors == ["vision_tower.weight"]
    assert "vision_tower.weight" not in ckpt.weight_names()
    assert all("inv_freq" not in n for n in ckpt.weight_names())


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    fp = open_checkpoint(path).fingerprint()
    assert fp == open_checkpoint(path).fingerprint() and len(fp) == 64
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert open_checkpoint(copy).fingerprint() == fp  # content-based, not path-based

    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(cfg))
    fp_cfg = open_checkpoint(copy).fingerprint()
    assert fp_cfg != fp

    tc = json.loads((copy / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{{ messages }}"
    (copy / "tokenizer_config.json").write_text(json.dumps(tc))
    assert open_checkpoint(copy).fingerprint() != fp_cfg


def test_fingerprint_does_not_read_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = open_checkpoint(factory.build_checkpoint(tmp_path / "c"))
    from amalia_edge.checkpoint import safetensors as st

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("fingerprint() touched the safetensors files")

    monkeypatch.setattr(st, "_read_exact", forbidden)
    monkeypatch.setattr(st, "read_header", forbidden)
    assert len(ckpt.fingerprint()) == 64


def _fake_hub(cache: Path, repo: str, src: Path, commit: str = "a" * 40) -> Path:
    """Lay ``src`` out like huggingface_hub does: blobs, snapshot symlinks, refs/main."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(src.iterdir())):
        blob = blobs / f"blob{i}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_repo_id_resolved_from_hf_home(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snap = _fake_hub(tmp_path / "hf" / "hub", "utter-project/Tiny-PT", tiny_checkpoint)
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    ckpt = open_checkpoint("utter-project/Tiny-PT")
    assert ckpt.path == snap and ckpt.repo_id == "utter-project/Tiny-PT"
    assert ckpt.fingerprint() == open_checkpoint(tiny_checkpoint).fingerprint()
    assert open_checkpoint(f"utter-project/Tiny-PT@{'a' * 40}").path == snap
    with pytest.raises(CheckpointError, match="revision 'v2'"):
        open_checkpoint("utter-project/Tiny-PT@v2")


def test_hf_hub_cache_takes_precedence(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    snap = _fake_hub(tmp_path / "cache", "org/model", tiny_checkpoint)
    assert open_checkpoint("org/model").path == snap


def test_repo_id_not_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(
        CheckpointError, match=r"neither a directory nor in the Hugging Face cache.*hf download"
    ) as e:
        open_checkpoint("utter-project/EuroLLM-9B")
    assert "\n" not in str(e.value)


def test_demo_model(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "DEMO_DIR", tmp_path / "absent")
    with pytest.raises(CheckpointError, match="bundled demo model is missing"):
        open_checkpoint(None)
    monkeypatch.setattr(reader, "DEMO_DIR", tiny_checkpoint)
    assert isinstance(open_checkpoint(None), Checkpoint)


def test_bundled_demo_opens_when_present() -> None:
    if not (reader.DEMO_DIR / "config.json").is_file():
        pytest.skip("the bundled demo model is not in amalia_edge/data/demo yet")
    ckpt = open_checkpoint(None)
    assert ckpt.config.architecture in supported_architectures()
    assert ckpt.vocab.chat_template


def test_chunked_conversion_equals_whole(
    make_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.checkpoint import safetensors as st

    ckpt = open_checkpoint(make_checkpoint(dtype="BF16"), tokenizer=False)
    name = "lm_head.weight"
    whole = {d: ckpt.read(name, d) for d in ("float32", "float16")}
    monkeypatch.setattr(st, "CONVERT_CHUNK_BYTES", 1000)  # 500 elements: many uneven chunks
    for d, want in whole.items():
        got = ckpt.read(name, d)
        assert got.dtype == np.dtype(d) and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        whole["float32"], st.bf16_to_f32(ckpt.read(name)).reshape(whole["float32"].shape)
    )


def test_reading_memory_is_bounded_by_one_tensor(
    make_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading every tensor in turn never holds more than the current one (plus a chunk)."""
    import tracemalloc

    from amalia_edge.checkpoint import safetensors as st

    monkeypatch.setattr(st, "CONVERT_CHUNK_BYTES", 64 << 10)
    path = make_checkpoint(dtype="BF16", shards=3, num_hidden_layers=8)
    ckpt = open_checkpoint(path, tokenizer=False)
    total = sum(ckpt.tensor_infos[n].nbytes for n in ckpt.weight_names())
    largest_f32 = 2 * ckpt.largest_tensor_nbytes  # BF16 widened to float32
    tracemalloc.start()
    try:
        for name in ckpt.weight_names():
            arr = ckpt.read(name, "float32")
            del arr
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 3 * largest_f32  # the model is much bigger than one tensor...
    assert peak < largest_f32 + (64 << 10) + (256 << 10)  # ...yet memory is one tensor


def test_consolidated_mistral_file_beside_hf_weights_is_ignored(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c", architecture="MistralForCausalLM")
    factory.write_safetensors(
        path / "consolidated.safetensors",
        [("layers.0.attention.wq.weight", "F32", (4, 4)), ("model.norm.weight", "F32", (256,))],
        lambda n: np.zeros((4, 4) if n.startswith("layers") else 256, np.float32),
    )
    ckpt = open_checkpoint(path, tokenizer=False)
    assert [h.path.name for h in ckpt.headers] == ["model.safetensors"]
    assert ckpt.read("model.norm.weight", "float32").any()


def test_repo_id_shape() -> None:
    from amalia_edge.checkpoint.hub import looks_like_repo_id

    assert looks_like_repo_id("utter-project/EuroLLM-9B-Instruct")
    assert looks_like_repo_id("org/name@v1.0")
    for not_repo in ("./org/name", "/abs/path", "a/b/c", "name", "tests"):
        assert not looks_like_repo_id(not_repo), not_repo


def test_single_snapshot_without_refs(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = _fake_hub(tmp_path, "org/only", tiny_checkpoint, commit="b" * 40)
    shutil.rmtree(tmp_path / "models--org--only" / "refs")
    assert open_checkpoint("org/only").path == snap


def test_reads_in_pieces_when_tensor_exceeds_one_read(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.checkpoint import safetensors as st

    ckpt = open_checkpoint(tiny_checkpoint, tokenizer=False)
    want = ckpt.read("lm_head.weight")
    monkeypatch.setattr(st, "_READ_CHUNK", 4097)  # Linux caps one read at ~2 GiB; emulate it
    np.testing.assert_array_equal(ckpt.read("lm_head.weight"), want)


def test_using_a_checkpoint_leaves_it_untouched(make_checkpoint: Callable[..., Path]) -> None:
    from amalia_edge.reference import ReferenceModel

    path = make_checkpoint(dtype="BF16", shards=3)
    before = factory.snapshot_tree(path)
    ckpt = open_checkpoint(path)
    for name in ckpt.weight_names():
        ckpt.read(name, "float32")
    ckpt.fingerprint()
    ReferenceModel(ckpt).logits([1, 2, 3])
    assert factory.snapshot_tree(path) == before
