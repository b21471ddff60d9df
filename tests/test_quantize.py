"""llama.cpp's quantizer in-process: every file type, the needs-imatrix column checked against
llama.cpp itself, the GGUF imatrix reader, log silencing and progress."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.artifacts import quant_types
from amalia_edge.artifacts.quant_types import QUANT_TYPES, QuantType
from amalia_edge.convert.quantize import llama_quantize, load_imatrix
from amalia_edge.errors import ConversionError, ImatrixError, QuantTypeError
from tests.plugins.models import write_imatrix_gguf

SWEEP = [t for t in QUANT_TYPES.values() if t.writer == "llama.cpp" and not t.moe_only]


def _load_and_generate(path: Path) -> tuple[dict[str, str], int]:
    """llama.cpp's view of the file's metadata, and how many tokens it generated from it.

    (gguf-py 0.19's reader cannot parse the newest ggml types, Q1_0 and Q2_0; llama.cpp can.)
    """
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False)
    out: Any = llm.create_completion("Em Lisboa", max_tokens=4, temperature=0.0)
    return dict(llm.metadata), int(out["usage"]["completion_tokens"])


# -- the table ------------------------------------------------------------------------------


def test_table_agrees_with_gguf_py_and_parses_case_insensitively() -> None:
    import gguf

    for qt in QUANT_TYPES.values():
        member = getattr(gguf.LlamaFileType, f"MOSTLY_{qt.name}", None)
        if qt.name == "F32":
            member = gguf.LlamaFileType.ALL_F32
        if member is not None:  # gguf-py 0.19 predates Q2_0
            assert int(member) == qt.ftype, qt.name
        assert 1.0 < qt.bpw <= 32.0 and qt.description
    assert len({qt.ftype for qt in QUANT_TYPES.values()}) == len(QUANT_TYPES)
    got = [t.name for t in quant_types.parse_list(" f16, Q4_k_m,q4_K ,iq2_xxs,")]
    assert got == ["F16", "Q4_K_M", "IQ2_XXS"]  # q4_k is llama-quantize's alias of Q4_K_M
    assert [t.name for t in quant_types.parse_list(None)] == list(quant_types.DEFAULT_TYPES)
    with pytest.raises(QuantTypeError, match="Q4_K_M"):
        quant_types.get("q4_k_q")


# -- imatrix reader -------------------------------------------------------------------------


def test_load_imatrix_normalizes_like_llama_cpp(tmp_path: Path) -> None:
    sums = np.arange(1, 9, dtype=np.float32)
    path = write_imatrix_gguf(
        tmp_path / "m.gguf",
        {"blk.0.attn_q.weight": (sums, 4), "blk.0.ffn_up.weight": (sums, 0)},
        chunk_count=3,
        chunk_size=128,
    )
    imx = load_imatrix(path)
    np.testing.assert_allclose(imx.data["blk.0.attn_q.weight"], sums / 4)
    np.testing.assert_array_equal(imx.data["blk.0.ffn_up.weight"], np.ones(8))  # count 0 -> 1
    assert (imx.chunk_count, imx.chunk_size, imx.datasets) == (3, 128, ["pt_pt_train.txt"])


def test_load_imatrix_refuses_what_llama_quantize_refuses(
    tmp_path: Path, tiny_gguf: dict[str, Path]
) -> None:
    import gguf

    legacy = tmp_path / "old.dat"
    legacy.write_bytes((1).to_bytes(4, "little") + b"\x05\x00\x00\x00hello")
    with pytest.raises(ImatrixError, match="legacy"):
        load_imatrix(legacy)
    with pytest.raises(ImatrixError, match="does not exist"):
        load_imatrix(tmp_path / "nope.gguf")
    with pytest.raises(ImatrixError, match="in_sum2"):
        load_imatrix(tiny_gguf["F16"])  # a model, not an imatrix
    w = gguf.GGUFWriter(tmp_path / "nometa.gguf", arch="imatrix")
    w.add_tensor("x.in_sum2", np.ones((1, 4), np.float32))
    w.add_tensor("x.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ImatrixError, match="metadata"):
        load_imatrix(tmp_path / "nometa.gguf")


# -- llama.cpp ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp")


# The sweeps use a smaller model than tiny_checkpoint (one layer, FFN 256: every row still a
# multiple of 256, as k-, i- and t-quants need) because llama.cpp's i-quant search is slow.
SWEEP_SPEC: dict[str, Any] = {"num_hidden_layers": 1, "intermediate_size": 256}


@pytest.fixture(scope="module")
def sweep_src(make_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.gguf import write_gguf

    ckpt = open_checkpoint(make_checkpoint(**SWEEP_SPEC))
    return write_gguf(ckpt, tmp_path_factory.mktemp("sweep") / "src-F32.gguf", "F32").path


@pytest.fixture(scope="module")
def sweep_imatrix(make_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.plugins.models import reference_imatrix

    out = tmp_path_factory.mktemp("sweep_imatrix") / "imatrix.gguf"
    return reference_imatrix(make_checkpoint(**SWEEP_SPEC), out)


@pytest.mark.slow
def test_every_type_without_imatrix(llama_cpp: Any, sweep_src: Path, tmp_path: Path) -> None:
    """Types without needs_imatrix quantize, load and generate; the others are refused by us
    and, with our guard lifted, by llama.cpp itself (so the column matches llama.cpp)."""
    src = sweep_src
    for qt in SWEEP:
        dst = tmp_path / f"{qt.name}.gguf"
        if qt.needs_imatrix:
            with pytest.raises(QuantTypeError, match="importance matrix"):
                llama_quantize(src, dst, qt, threads=2)
            unguarded = dataclasses.replace(qt, needs_imatrix=False)
            with pytest.raises(ConversionError, match="imatrix"):
                llama_quantize(src, dst, unguarded, threads=2)
            assert not dst.exists()
            continue
        llama_quantize(src, dst, qt, threads=2)
        meta, generated = _load_and_generate(dst)
        assert meta["general.file_type"] == str(qt.ftype), qt.name
        assert generated > 0, qt.name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_imatrix_types_with_reference_imatrix(
    llama_cpp: Any, sweep_src: Path, sweep_imatrix: Path, tmp_path: Path
) -> None:
    imx = load_imatrix(sweep_imatrix)
    assert "blk.0.attn_q.weight" in imx.data and "blk.0.ffn_down.weight" in imx.data
    for qt in [t for t in SWEEP if t.needs_imatrix] + [QUANT_TYPES["Q4_K_M"]]:
        dst = tmp_path / f"{qt.name}.gguf"
        llama_quantize(sweep_src, dst, qt, imatrix=imx, threads=2)
        meta, generated = _load_and_generate(dst)
        assert meta["general.file_type"] == str(qt.ftype), qt.name
        # relative to the output folder (issue 12: no absolute local paths in the GGUF)
        assert meta["quantize.imatrix.file"] == os.path.relpath(sweep_imatrix, tmp_path)
        assert meta["quantize.imatrix.entries_count"] == str(len(imx.data))
        assert generated > 0, qt.name


def test_quantizer_is_quiet_and_reports_progress(
    llama_cpp: Any, tiny_gguf: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[int, int, str]] = []
    llama_quantize(
        tiny_gguf["F16"],
        tmp_path / "q.gguf",
        "q4_0",
        threads=2,
        progress=lambda i, n, name: seen.append((i, n, name)),
    )
    cap = capfd.readouterr()
    assert cap.out == "" and cap.err == ""
    names = [name for _, n, name in seen if n == 21]
    assert len(names) == 21 and "blk.0.attn_q.weight" in names
    assert seen[-1][:2] == (1, 1)


def test_llama_cpp_failure_is_one_line(
    llama_cpp: Any, tmp_path: Path, tiny_gguf: dict[str, Path]
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_gguf["F16"].read_bytes()[:5000])  # truncated GGUF
    qt: QuantType = QUANT_TYPES["Q4_0"]
    with pytest.raises(ConversionError) as info:
        llama_quantize(bad, tmp_path / "out.gguf", qt, threads=2)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.gguf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.gguf"]
