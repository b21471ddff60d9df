"""llama.cpp's quantizer in-process: every file type, the needs-imatrix column checked against
llama.cpp itself, the GGUF imatrix reader, log silencing and progress."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.convert import quant_types
from amalia_edge.convert.quant_types import QUANT_TYPES, QuantType
from amalia_edge.convert.quantize import llama_quantize, load_imatrix
from amalia_edge.errors import ConversionError, ImatrixError, QuantTypeError
from tests.plugins.models import write_imatrix_gguf

SWEEP = [t for t in QUANT_TYPES.values() if t.writer == "llama.cpp" and not t.moe_only]


def _kv(path: Path, key: str) -> Any:
    import gguf

    field = gguf.GGUFReader(path).fields.get(key)
    return None if field is None else field.contents()


def _generates(path: Path) -> int:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False)
    out = llm.create_completion("Em Lisboa", max_tokens=4, temperature=0.0)
    return int(out["usage"]["completion_tokens"])


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


@pytest.mark.slow
def test_every_type_without_imatrix(
    llama_cpp: Any, tiny_gguf: dict[str, Path], tmp_path: Path
) -> None:
    """Types without needs_imatrix quantize, load and generate; the others are refused by us
    and, with our guard lifted, by llama.cpp itself (so the column matches llama.cpp)."""
    src = tiny_gguf["F32"]
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
        assert _kv(dst, "general.file_type") == qt.ftype, qt.name
        assert _generates(dst) > 0, qt.name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_imatrix_types_with_reference_imatrix(
    llama_cpp: Any, tiny_gguf: dict[str, Path], tiny_imatrix: Path, tmp_path: Path
) -> None:
    imx = load_imatrix(tiny_imatrix)
    assert "blk.0.attn_q.weight" in imx.data and "blk.1.ffn_down.weight" in imx.data
    for qt in [t for t in SWEEP if t.needs_imatrix] + [QUANT_TYPES["Q4_K_M"]]:
        dst = tmp_path / f"{qt.name}.gguf"
        llama_quantize(tiny_gguf["F32"], dst, qt, imatrix=imx, threads=2)
        assert _kv(dst, "general.file_type") == qt.ftype
        assert _kv(dst, "quantize.imatrix.file") == str(tiny_imatrix)
        assert _kv(dst, "quantize.imatrix.entries_count") == len(imx.data)
        assert _generates(dst) > 0, qt.name


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
