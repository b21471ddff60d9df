"""ONNX export: graph validity, logits against the numpy reference, KV cache, precisions.

Real onnx + onnxruntime (CPU) on tiny checkpoints built by tests/factory.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.factory import LLAMA3_ROPE_SCALING

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from amalia_edge.artifacts.onnx import GraphInfo, read_graph_info  # noqa: E402
from amalia_edge.checkpoint.reader import open_checkpoint  # noqa: E402
from amalia_edge.convert import onnx as ox  # noqa: E402
from amalia_edge.errors import ConversionError  # noqa: E402
from amalia_edge.reference import ReferenceModel  # noqa: E402

IDS = [1, 17, 42, 99, 5, 7, 200, 301, 64, 3, 1000, 12]


def run_full(path: Path, ids: list[int]) -> np.ndarray:
    """Logits [T, vocab] from one call with an empty cache."""
    info = read_graph_info(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds_for(info, np.array([ids]), 0)
    return np.asarray(sess.run(["logits"], feeds)[0][0])


def feeds_for(info: GraphInfo, ids: np.ndarray, past: int, cache: Any = None) -> dict[str, Any]:
    b, s = ids.shape
    feeds: dict[str, Any] = {
        "input_ids": ids.astype(np.int64),
        "position_ids": np.tile(np.arange(past, past + s, dtype=np.int64), (b, 1)),
        "attention_mask": np.ones((b, past + s), np.int64),
    }
    for j, name in enumerate(info.past_names()):
        feeds[name] = (
            cache[j]
            if cache is not None
            else np.zeros((b, info.num_kv_heads, 0, info.head_dim), info.kv_dtype)
        )
    return feeds


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl(ref: np.ndarray, other: np.ndarray) -> float:
    lp, lq = log_softmax(ref), log_softmax(other)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


@pytest.fixture(scope="module")
def exported(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], ox.OnnxExport]:
    out = tmp_path_factory.mktemp("onnx")
    ckpt = open_checkpoint(tiny_checkpoint)
    done: dict[str, ox.OnnxExport] = {}

    def get(precision: str) -> ox.OnnxExport:
        if precision not in done:
            done[precision] = ox.write_onnx(ckpt, out, precision)
        return done[precision]

    return get


@pytest.fixture(scope="module")
def reference_logits(tiny_checkpoint: Path) -> np.ndarray:
    return ReferenceModel(open_checkpoint(tiny_checkpoint)).logits(IDS)


def test_fp32_graph_passes_the_checker_with_external_data(exported: Any) -> None:
    res = exported("fp32")
    onnx.checker.check_model(str(res.path), full_check=True)
    model = onnx.load(str(res.path), load_external_data=False)
    ext = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert ext, "weights must live in the external-data file"
    locations = {e.value for t in ext for e in t.external_data if e.key == "location"}
    assert locations == {res.data_path.name}
    assert model.opset_import[0].version == 17
    assert res.path.stat().st_size < 200_000  # the graph itself stays small
    assert res.data_path.stat().st_size == res.data_size


def test_fp32_logits_match_the_reference(exported: Any, reference_logits: np.ndarray) -> None:
    logits = run_full(exported("fp32").path, IDS)
    assert logits.shape == reference_logits.shape
    np.testing.assert_array_equal(logits.argmax(-1), reference_logits.argmax(-1))
    assert np.abs(logits - reference_logits).max() < 1e-3


def test_kv_cache_decode_equals_full_forward(exported: Any) -> None:
    path = exported("fp32").path
    info = read_graph_info(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    full = run_full(path, IDS)
    res = sess.run(outs, feeds_for(info, np.array([IDS[:5]]), 0))
    steps = [res[0][0]]
    for t in range(5, len(IDS)):
        res = sess.run(outs, feeds_for(info, np.array([[IDS[t]]]), t, res[1:]))
        steps.append(res[0][0])
        assert res[1].shape == (1, info.num_kv_heads, t + 1, info.head_dim)
    np.testing.assert_allclose(np.concatenate(steps), full, atol=1e-4)


def test_left_padding_masks_the_pad_tokens(exported: Any) -> None:
    """Batch 2 with a left-padded row gives the unpadded row's logits."""
    path = exported("fp32").path
    info = read_graph_info(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    short = IDS[:4]
    ids = np.array([IDS[:6], [0, 0, *short]])
    feeds = feeds_for(info, ids, 0)
    feeds["attention_mask"][1, :2] = 0
    feeds["position_ids"][1] = [0, 0, 0, 1, 2, 3]
    got = sess.run(["logits"], feeds)[0]
    np.testing.assert_allclose(got[1, 2:], run_full(path, short), atol=1e-4)
    np.testing.assert_allclose(got[0], run_full(path, IDS[:6]), atol=1e-4)


@pytest.mark.parametrize(
    ("precision", "max_kl", "min_top1"),
    [("fp16", 1e-4, 1.0), ("int8", 5e-3, 0.9), ("int4", 0.3, 0.5)],
)
def test_reduced_precisions_stay_close(
    exported: Any,
    reference_logits: np.ndarray,
    precision: str,
    max_kl: float,
    min_top1: float,
    record_property: Any,
) -> None:
    res = exported(precision)
    onnx.checker.check_model(str(res.path))
    logits = run_full(res.path, IDS)
    div = kl(reference_logits, logits)
    top1 = float((logits.argmax(-1) == reference_logits.argmax(-1)).mean())
    record_property("kl", div)
    print(f"{precision}: KL {div:.2e}, top-1 agreement {top1:.2f}, {res.data_size} bytes")
    assert div < max_kl
    assert top1 >= min_top1
    assert res.data_size < exported("fp32").data_size


def test_weights_shrink_with_precision(exported: Any) -> None:
    sizes = {p: exported(p).data_size for p in ("fp32", "fp16", "int8", "int4")}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["int4"]


@pytest.mark.parametrize(
    "spec",
    [
        {"dtype": "BF16", "tie_word_embeddings": True},
        {"rope_scaling": LLAMA3_ROPE_SCALING},
        {
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "attention_bias": True},
        {"num_key_value_heads": 4},
    ],
    ids=["bf16-tied", "llama3-rope", "yarn-rope", "linear-rope-bias", "mha"],
)
def test_variants_match_the_reference(
    make_checkpoint: Callable[..., Path], tmp_path: Path, spec: dict[str, Any]
) -> None:
    ckpt = open_checkpoint(make_checkpoint(**spec))
    res = ox.write_onnx(ckpt, tmp_path, "fp32")
    ref = ReferenceModel(ckpt).logits(IDS)
    got = run_full(res.path, IDS)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    assert np.abs(got - ref).max() < 1e-3


def test_int4_packing_round_trips() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(64, 6)).astype(np.int8)
    assert len(ox.pack_int4(q)) == q.size // 2
    np.testing.assert_array_equal(ox.unpack_int4(ox.pack_int4(q), q.size).reshape(q.shape), q)


def test_int4_scale_search_beats_plain_round_to_nearest() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(256, 64)).astype(np.float32)
    q, scale = ox.quantize_int4_blocks(w, 32)
    assert scale.shape == (8, 64) and q.min() >= -8 and q.max() <= 7
    back = (q.reshape(8, 32, 64) * scale[:, None, :]).reshape(256, 64)
    # plain round-to-nearest with |max| / 7, the first candidate
    b = w.reshape(8, 32, 64)
    s7 = np.abs(b).max(1) / 7
    rtn = (np.clip(np.rint(b / s7[:, None]), -8, 7) * s7[:, None]).reshape(256, 64)
    mse, mse_rtn = float(((back - w) ** 2).mean()), float(((rtn - w) ** 2).mean())
    assert mse < 0.9 * mse_rtn
    # and never worse than round-to-nearest in any block
    err = ((back - w) ** 2).reshape(8, 32, 64).sum(1)
    err_rtn = ((rtn - w) ** 2).reshape(8, 32, 64).sum(1)
    assert (err <= err_rtn + 1e-6).all()


def test_export_is_atomic_and_hashes_what_it_wrote(exported: Any) -> None:
    import hashlib

    res = exported("fp16")
    assert hashlib.sha256(res.path.read_bytes()).hexdigest() == res.sha256
    assert hashlib.sha256(res.data_path.read_bytes()).hexdigest() == res.data_sha256
    assert not list(res.path.parent.glob(".amalia-tmp-*"))
    mask = os.umask(0)
    os.umask(mask)
    for p in (res.path, res.data_path):  # not mkstemp's 0o600: artifacts get copied around
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_export_onnx_returns_a_manifest_entry(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from amalia_edge.artifacts.manifest import ArtifactEntry, Manifest, load_manifest

    ckpt = open_checkpoint(tiny_checkpoint)
    entry = ox.export_onnx(ckpt, tmp_path, "int8")
    assert isinstance(entry, ArtifactEntry)
    assert (entry.kind, entry.quant, entry.file) == ("onnx", "int8", "model-int8.onnx")
    assert entry.verify(tmp_path)
    assert entry.extra["data_file"] == "model-int8.onnx.data"
    assert entry.extra["opset"] == 19
    assert entry.source_fingerprint == ckpt.fingerprint()
    Manifest(artifacts=[entry]).write(tmp_path)
    back = load_manifest(tmp_path).find("onnx", "INT8")
    assert back is not None and back.extra["data_size"] == entry.extra["data_size"]
    json.loads((tmp_path / "manifest.json").read_text())


def test_graph_info_round_trips(exported: Any, tiny_checkpoint: Path) -> None:
    cfg = open_checkpoint(tiny_checkpoint).config
    info = read_graph_info(exported("fp16").path)
    assert (info.num_layers, info.num_kv_heads, info.head_dim, info.vocab_size) == (
        cfg.num_hidden_layers,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.vocab_size,
    )
    assert info.kv_dtype == "float16"
    assert (
        info.kv_bytes_per_token
        == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.head_dim) * 2
    )


def test_unknown_precision_is_refused_with_the_choices(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConversionError, match="fp32, fp16, int8, int4"):
        ox.write_onnx(open_checkpoint(tiny_checkpoint), tmp_path, "q4_k_m")
    assert not list(tmp_path.iterdir())


def test_graph_without_metadata_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ConversionError, match="amalia-edge metadata"):
        read_graph_info(tmp_path / "foreign.onnx")
