"""pt-PT importance matrix: llama.cpp's GGUF imatrix format, statistics, reuse, bad input."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from amalia_edge.checkpoint import DEMO_DIR, Checkpoint, open_checkpoint
from amalia_edge.convert import imatrix as im
from amalia_edge.errors import ImatrixError

# AMALIA_EDGE_TEST_DEMO lets a developer point these tests at a freshly trained checkpoint.
DEMO = Path(os.environ.get("AMALIA_EDGE_TEST_DEMO", DEMO_DIR))
CTX = 64  # small chunks keep the numpy reference pass fast

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> None:
    from tests.test_demo_model import _single_thread_blas

    _single_thread_blas()


@pytest.fixture(scope="module")
def demo() -> Checkpoint:
    return open_checkpoint(DEMO)


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ~3 KB of the shipped calibration text: several 64-token chunks, quickly."""
    text = im.DEFAULT_CALIBRATION.read_text(encoding="utf-8")[:3000]
    p = tmp_path_factory.mktemp("cal") / "calib.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def imx_path(demo: Checkpoint, calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return im.ensure_imatrix(demo, tmp_path_factory.mktemp("imx"), calib, ctx=CTX)


def test_shipped_calibration_covers_several_demo_chunks(demo: Checkpoint) -> None:
    text, _ = im.read_calibration()
    tokens = im.tokenize(demo, text)
    chunks = im.make_chunks(tokens, im.default_ctx(demo), demo.vocab.bos_id)
    assert len(chunks) >= 8
    assert all(c[0] == demo.vocab.bos_id and len(c) == im.default_ctx(demo) for c in chunks)


def test_gguf_imatrix_round_trips_with_names_and_counts(
    demo: Checkpoint, calib: Path, imx_path: Path
) -> None:
    import gguf

    r = gguf.GGUFReader(imx_path)
    assert r.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in r.fields
    assert r.fields["imatrix.datasets"].contents() == ["calib.txt"]
    n_tokens = len(im.tokenize(demo, calib.read_text(encoding="utf-8")))
    n_chunks = n_tokens // CTX
    assert r.fields["imatrix.chunk_count"].contents() == n_chunks
    assert r.fields["imatrix.chunk_size"].contents() == CTX

    layers = demo.config.num_hidden_layers
    want = {f"blk.{i}.{p}.weight" for i in range(layers) for p in PROJECTIONS}
    tensors = {t.name: t for t in r.tensors}
    assert {n[: -len(".in_sum2")] for n in tensors if n.endswith(".in_sum2")} == want
    assert "output.weight.in_sum2" not in tensors  # llama-imatrix default: no --process-output
    hidden, inter = demo.config.hidden_size, demo.config.intermediate_size
    for name in want:
        s2 = tensors[f"{name}.in_sum2"]
        cols = inter if "ffn_down" in name else hidden
        # ggml shape [in_features, n_mat=1] as llama-imatrix writes it
        assert [int(x) for x in s2.shape] == [cols, 1]
        assert s2.tensor_type == gguf.GGMLQuantizationType.F32
        assert float(tensors[f"{name}.counts"].data.reshape(-1)[0]) == n_chunks * CTX
        assert np.all(np.asarray(s2.data) > 0)


def test_attn_q_sums_match_an_independent_computation(
    demo: Checkpoint, calib: Path, imx_path: Path
) -> None:
    """blk.0's q/k/v input is RMSNorm(embedding) * attn_norm: computable without the model."""
    tokens = im.tokenize(demo, calib.read_text(encoding="utf-8"))
    chunks = im.make_chunks(tokens, CTX, demo.vocab.bos_id)
    ids = np.concatenate([np.asarray(c) for c in chunks])
    emb = demo.read("model.embed_tokens.weight", "float32")[ids].astype(np.float64)
    w = demo.read("model.layers.0.input_layernorm.weight", "float32").astype(np.float64)
    x = emb / np.sqrt((emb**2).mean(-1, keepdims=True) + demo.config.rms_norm_eps) * w
    want = (x**2).sum(0)
    imx = im.load_imatrix(imx_path)
    got = imx.data["blk.0.attn_q.weight"] * len(ids)  # load_imatrix divides by counts
    np.testing.assert_allclose(got, want, rtol=2e-4)
    np.testing.assert_allclose(imx.data["blk.0.attn_k.weight"], imx.data["blk.0.attn_q.weight"])


def test_reused_when_unchanged_and_recomputed_when_calibration_changes(
    demo: Checkpoint, calib: Path, imx_path: Path, tmp_path: Path
) -> None:
    before = imx_path.stat().st_mtime_ns
    again = im.ensure_imatrix(demo, imx_path.parent, calib, ctx=CTX)
    assert again == imx_path and again.stat().st_mtime_ns == before
    other = tmp_path / "other.txt"
    other.write_text(calib.read_text(encoding="utf-8") + "\nMais uma frase.", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / im.IMATRIX_FILE).write_bytes(imx_path.read_bytes())
    im.ensure_imatrix(demo, out, other, ctx=CTX)
    import gguf

    r = gguf.GGUFReader(out / im.IMATRIX_FILE)
    assert r.fields["imatrix.datasets"].contents() == ["other.txt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".amalia-tmp-")]


def test_validates_against_its_model_and_refuses_another(
    demo: Checkpoint, imx_path: Path, make_checkpoint: Callable[..., Path]
) -> None:
    im.validate_imatrix(imx_path, demo)
    other = open_checkpoint(make_checkpoint(intermediate_size=512, num_hidden_layers=2))
    imx = im.load_imatrix(imx_path)
    if demo.config.intermediate_size != 512:
        with pytest.raises(ImatrixError, match=r"blk\.0\.ffn_down\.weight has \d+ values"):
            im.validate_imatrix(imx, other)
    # Keep only the deepest layer's tensors: a 2-layer model has no such block.
    deep = f"blk.{demo.config.num_hidden_layers - 1}."
    imx.data = {k: v for k, v in imx.data.items() if k.startswith(deep)}
    with pytest.raises(ImatrixError, match=rf"has tensor {deep}attn_k\.weight, which model"):
        im.validate_imatrix(imx, other)


def test_bad_calibration_text_is_refused_with_the_fix(demo: Checkpoint, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ImatrixError, match="is empty"):
        im.ensure_imatrix(demo, tmp_path, empty, ctx=CTX)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Olá, coração de Lisboa!".encode("latin-1"))
    with pytest.raises(ImatrixError, match=r"not UTF-8.*iconv"):
        im.ensure_imatrix(demo, tmp_path, latin1, ctx=CTX)
    short = tmp_path / "short.txt"
    short.write_text("Bom dia, como está?", encoding="utf-8")
    with pytest.raises(ImatrixError, match=rf"too short: \d+ tokens, need at least {2 * CTX}"):
        im.ensure_imatrix(demo, tmp_path, short, ctx=CTX)
    with pytest.raises(ImatrixError, match="does not exist"):
        im.ensure_imatrix(demo, tmp_path, tmp_path / "missing.txt", ctx=CTX)
    assert not (tmp_path / im.IMATRIX_FILE).exists()


def test_llama_cpp_quantizer_accepts_it(demo: Checkpoint, imx_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from amalia_edge.artifacts.quant_types import QUANT_TYPES
    from amalia_edge.convert.gguf import write_gguf
    from amalia_edge.convert.quantize import llama_quantize

    src = tmp_path / "f32.gguf"
    write_gguf(demo, src, "f32")
    dst = tmp_path / "q2_k_s.gguf"
    # Q2_K_S is a (fast) type llama.cpp will not make without an importance matrix.
    llama_quantize(src, dst, QUANT_TYPES["Q2_K_S"], imatrix=im.load_imatrix(imx_path))
    import gguf

    r = gguf.GGUFReader(dst)
    assert (
        r.fields["quantize.imatrix.entries_count"].contents() == 7 * demo.config.num_hidden_layers
    )


def test_layers_read_once_and_sums_equal_chunk_by_chunk(
    demo: Checkpoint, calib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouped pass reads each layer tensor once and sums exactly what one-at-a-time does."""
    from amalia_edge.convert.tensor_names import gguf_name, spec_for
    from amalia_edge.reference import ReferenceModel

    chunks = im.make_chunks(
        im.tokenize(demo, calib.read_text(encoding="utf-8")), CTX, demo.vocab.bos_id
    )
    assert len(chunks) >= 3
    # The old procedure, spelled out: one forward pass per chunk, sums accumulated per weight.
    spec = spec_for(demo.config.architecture)
    want2: dict[str, np.ndarray] = {}
    want_n: dict[str, int] = {}

    def hook(hf: str, x: np.ndarray) -> None:
        g = gguf_name(spec, hf)
        if g is None or not g.startswith("blk."):
            return
        x64 = x.astype(np.float64)
        want2[g] = want2.get(g, 0) + (x64**2).sum(0)
        want_n[g] = want_n.get(g, 0) + x.shape[0]

    ref = ReferenceModel(demo)
    for chunk in chunks:
        ref.hidden_states(chunk, on_matmul=hook)

    reads: list[str] = []
    real_read = Checkpoint.read

    def counting_read(self: Checkpoint, name: str, dtype: str | None = None) -> np.ndarray:
        reads.append(name)
        return real_read(self, name, dtype)

    monkeypatch.setattr(Checkpoint, "read", counting_read)
    done: list[tuple[int, int]] = []
    stats = im.collect(demo, chunks, lambda d, t: done.append((d, t)))
    layer_tensors = [n for n in demo.tensor_infos if n.startswith("model.layers.")]
    assert sorted(n for n in reads if n.startswith("model.layers.")) == sorted(layer_tensors)
    assert done[-1] == (len(chunks), len(chunks)) and done == sorted(done)
    assert set(stats.in_sum2) == set(want2)
    for g, s in want2.items():
        np.testing.assert_allclose(stats.in_sum2[g], s, rtol=1e-6)
        assert stats.counts[g] == want_n[g] == len(chunks) * CTX

    # A budget of one chunk per group: the weights are read once per chunk, same sums.
    reads.clear()
    per_chunk = im.group_size(demo, CTX, 1)
    assert per_chunk == 1
    small = im.collect(demo, chunks, max_group_bytes=1)
    assert len([n for n in reads if n.startswith("model.layers.")]) == len(chunks) * len(
        layer_tensors
    )
    for g in want2:
        np.testing.assert_allclose(small.in_sum2[g], stats.in_sum2[g], rtol=1e-6)
        np.testing.assert_allclose(small.in_sum[g], stats.in_sum[g], rtol=1e-6, atol=1e-9)
        assert small.counts[g] == stats.counts[g]
