"""Every bad checkpoint input gives one-line CheckpointError naming the problem and the fix,
and leaves the source exactly as it was."""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.errors import CheckpointError, UnsupportedArchitectureError
from tests import factory


def _expect_error(
    source: Path, match: str, exc: type[CheckpointError] = CheckpointError
) -> CheckpointError:
    root = source if source.is_dir() else source.parent
    before = factory.snapshot_tree(root)
    with pytest.raises(exc, match=match) as info:
        open_checkpoint(source)
    assert "\n" not in str(info.value), "errors must be one line"
    assert info.value.fix, "errors must say how to fix them"
    assert factory.snapshot_tree(root) == before, "the source was modified"
    return info.value


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    return factory.build_checkpoint(tmp_path / "ckpt")


# -- config.json -----------------------------------------------------------------------------


def test_missing_config(ckpt_dir: Path) -> None:
    (ckpt_dir / "config.json").unlink()
    _expect_error(ckpt_dir, "has no config.json")


def test_malformed_config(ckpt_dir: Path) -> None:
    (ckpt_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    _expect_error(ckpt_dir, r"malformed JSON at line 1")


def test_config_not_an_object(ckpt_dir: Path) -> None:
    (ckpt_dir / "config.json").write_text("[1, 2]")
    _expect_error(ckpt_dir, "not a JSON object")


def test_unsupported_architecture_named_with_supported_list(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.update(architectures=["GPT2LMHeadModel"]))
    err = _expect_error(
        ckpt_dir, "'GPT2LMHeadModel' is not supported", UnsupportedArchitectureError
    )
    assert "LlamaForCausalLM" in str(err) and "MistralForCausalLM" in str(err)


def test_missing_architectures_field(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.pop("architectures"))
    _expect_error(ckpt_dir, "'architectures' is missing")


def test_missing_required_field(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.pop("hidden_size"))
    _expect_error(ckpt_dir, "'hidden_size' is missing")


def test_bad_head_counts(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.update(num_key_value_heads=3))
    _expect_error(ckpt_dir, "not a multiple of num_key_value_heads")


def test_vocab_size_disagrees_with_embedding(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.update(vocab_size=2000))
    _expect_error(ckpt_dir, "vocab_size is 2000 but the embedding has 1536 rows")


def test_unsupported_rope_scaling(ckpt_dir: Path) -> None:
    _edit_json(
        ckpt_dir / "config.json",
        lambda c: c.update(rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    )
    _expect_error(ckpt_dir, "rope_scaling type 'dynamic' is not supported")


def test_weights_disagree_with_config(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.update(intermediate_size=768))
    _expect_error(ckpt_dir, r"mlp.gate_proj.weight has shape \[512, 256\], config.json implies")


def test_missing_layer_tensor(ckpt_dir: Path) -> None:
    _edit_json(ckpt_dir / "config.json", lambda c: c.update(num_hidden_layers=3))
    _expect_error(ckpt_dir, "model.layers.2.input_layernorm.weight is missing")


# -- safetensors files -----------------------------------------------------------------------

EMB = "model.embed_tokens.weight"


def _header(path: Path) -> tuple[dict[str, Any], int]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), n


def _rewrite_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change the header JSON in place, keeping its length (so data offsets stay put)."""
    raw = path.read_bytes()
    header, n = _header(path)
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    assert len(new) <= n, "edited header grew; test needs a shorter edit"
    path.write_bytes(raw[:8] + new + b" " * (n - len(new)) + raw[8 + n :])


def test_truncated_file(ckpt_dir: Path) -> None:
    f = ckpt_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    _expect_error(ckpt_dir, r"data bytes \(truncated")


def test_truncated_inside_header(ckpt_dir: Path) -> None:
    f = ckpt_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    _expect_error(ckpt_dir, r"header claims \d+ bytes .* \(truncated\)")


def test_file_shorter_than_length_field(ckpt_dir: Path) -> None:
    (ckpt_dir / "model.safetensors").write_bytes(b"\x01\x02")
    _expect_error(ckpt_dir, "too short to be safetensors")


def test_absurd_header_length(ckpt_dir: Path) -> None:
    f = ckpt_dir / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    _expect_error(ckpt_dir, "header length .* is absurd")


def test_header_not_json(ckpt_dir: Path) -> None:
    f = ckpt_dir / "model.safetensors"
    raw = f.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    f.write_bytes(raw[:8] + b"\xff" * n + raw[8 + n :])
    _expect_error(ckpt_dir, "header is not valid JSON")


def test_overlapping_offsets(ckpt_dir: Path) -> None:
    def overlap(h: dict[str, Any]) -> None:
        # move the final norm's data onto the start of the embedding (same size, so only the
        # overlap is wrong)
        h["model.norm.weight"]["data_offsets"] = [
            0,
            h["model.norm.weight"]["data_offsets"][1] - h["model.norm.weight"]["data_offsets"][0],
        ]

    _rewrite_header(ckpt_dir / "model.safetensors", overlap)
    _expect_error(ckpt_dir, "overlap")


def test_offsets_past_end_of_file(ckpt_dir: Path) -> None:
    def past(h: dict[str, Any]) -> None:
        b, e = h["model.norm.weight"]["data_offsets"]
        h["model.norm.weight"]["data_offsets"] = [b + 10**9, e + 10**9]

    _rewrite_header(ckpt_dir / "model.safetensors", past)
    _expect_error(ckpt_dir, "offsets past the end")


def test_dtype_times_shape_disagrees_with_offsets(ckpt_dir: Path) -> None:
    _rewrite_header(
        ckpt_dir / "model.safetensors", lambda h: h["model.norm.weight"].update(dtype="F16")
    )
    _expect_error(ckpt_dir, r"hold 1024 bytes but F16 x \[256\] needs 512")


def test_unknown_dtype(ckpt_dir: Path) -> None:
    _rewrite_header(
        ckpt_dir / "model.safetensors", lambda h: h["model.norm.weight"].update(dtype="Q4")
    )
    _expect_error(ckpt_dir, "unknown dtype 'Q4'")


def test_integer_weights_refused(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    _rewrite_header(
        path / "model.safetensors", lambda h: h["model.norm.weight"].update(dtype="I32")
    )
    _expect_error(path, "model.norm.weight is I32")


def test_no_weights_at_all(ckpt_dir: Path) -> None:
    (ckpt_dir / "model.safetensors").unlink()
    _expect_error(ckpt_dir, "has no \\*.safetensors weights")


# -- sharded checkpoints ---------------------------------------------------------------------


@pytest.fixture
def sharded_dir(tmp_path: Path) -> Path:
    return factory.build_checkpoint(tmp_path / "sharded", dtype="BF16", shards=3)


def test_missing_shard(sharded_dir: Path) -> None:
    (sharded_dir / "model-00002-of-00003.safetensors").unlink()
    _expect_error(sharded_dir, "shard model-00002-of-00003.safetensors listed in .* is missing")


def test_tensor_listed_in_index_but_absent(sharded_dir: Path) -> None:
    def move(index: dict[str, Any]) -> None:
        wm = index["weight_map"]
        wm[EMB] = next(f for f in sorted(set(wm.values())) if f != wm[EMB])

    _edit_json(sharded_dir / "model.safetensors.index.json", move)
    _expect_error(sharded_dir, f"tensor {EMB} is listed in .* but is not in that file")


def test_tensor_missing_from_index(sharded_dir: Path) -> None:
    _edit_json(
        sharded_dir / "model.safetensors.index.json",
        lambda i: i["weight_map"].pop("model.norm.weight"),
    )
    _expect_error(sharded_dir, "model.norm.weight is missing")


def test_malformed_index(sharded_dir: Path) -> None:
    (sharded_dir / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    _expect_error(sharded_dir, "malformed shard index")


def test_duplicate_tensor_across_files_without_index(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    factory.write_safetensors(
        path / "model-other.safetensors",
        [("model.norm.weight", "F32", (256,))],
        lambda _n: np.ones(256, np.float32),
    )
    _expect_error(path, "model.norm.weight is in both")


# -- pickles: refused, never unpickled -------------------------------------------------------


class _Tripwire:
    """Unpickling this creates a file: proof that nobody unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "consolidated.pth"])
def test_pickle_checkpoint_refused_without_unpickling(tmp_path: Path, name: str) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    (path / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    (path / name).write_bytes(pickle.dumps(_Tripwire(marker)))
    err = _expect_error(path, "PyTorch pickles")
    assert "safetensors" in (err.fix or "")
    assert not marker.exists()
    _expect_error(path / name, "PyTorch pickles")  # the file itself as SOURCE
    assert not marker.exists()


def test_pickles_beside_safetensors_are_ignored(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c")
    marker = tmp_path / "UNPICKLED"
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))
    open_checkpoint(path)
    assert not marker.exists()


# -- sources ---------------------------------------------------------------------------------


def test_source_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "nope")


def test_source_is_a_plain_file(ckpt_dir: Path) -> None:
    _expect_error(ckpt_dir / "config.json", "is a file")


# -- tokenizer -------------------------------------------------------------------------------


def test_no_tokenizer(ckpt_dir: Path) -> None:
    (ckpt_dir / "tokenizer.model").unlink()
    _expect_error(ckpt_dir, "neither tokenizer.model nor tokenizer.json")


def test_corrupt_tokenizer_model(ckpt_dir: Path) -> None:
    (ckpt_dir / "tokenizer.model").write_bytes(b"not a protobuf at all")
    _expect_error(ckpt_dir, "not a SentencePiece model")


def test_tokenizer_bigger_than_vocab(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c", tokenizer_vocab=1536)
    (path / "tokenizer.model").write_bytes(factory.spm_model_bytes(2048))
    _expect_error(path, "tokenizer.model has 2048 pieces but config.json vocab_size is 1536")


def test_unknown_bpe_pretokenizer(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c", tokenizer="bpe")
    _edit_json(
        path / "tokenizer.json",
        lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\w+|\s+"),
    )
    _expect_error(path, "BPE pre-tokenizer regex .* is not one llama.cpp")
