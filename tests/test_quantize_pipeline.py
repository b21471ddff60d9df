"""``convert.pipeline.quantize`` wiring: the imatrix ``auto`` contract with
``convert.imatrix.ensure_imatrix``, ONNX pass-through, manifest contents, the intermediate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from amalia_edge.artifacts.manifest import load_manifest
from amalia_edge.convert.pipeline import gguf_file_name, quantize, run_quantize
from tests.plugins.models import HAVE_LLAMA_CPP

needs_llama = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")


def test_file_names_follow_llama_cpp_habit() -> None:
    assert gguf_file_name("EuroLLM 9B Instruct", "q4_k_m") == "EuroLLM-9B-Instruct-Q4_K_M.gguf"
    assert gguf_file_name("AMÁLIA-9B", "F16") == "AMÁLIA-9B-F16.gguf"
    assert gguf_file_name("../../etc", "F16") == "etc-F16.gguf"


@needs_llama
@pytest.mark.slow
def test_auto_imatrix_calls_ensure_imatrix_and_records_it(
    tiny_checkpoint: Path, tiny_imatrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    def ensure_imatrix(ckpt: Any, out_dir: Any, calibration: Any = None, **kw: Any) -> Path:
        calls.append((ckpt.name, Path(out_dir), calibration))
        if kw.get("progress"):
            kw["progress"](1, 1)
        return tiny_imatrix

    from amalia_edge.convert import imatrix

    monkeypatch.setattr(imatrix, "ensure_imatrix", ensure_imatrix)
    cal = tmp_path.parent / "cal.txt"  # checked before anything is written, so it must exist
    cal.write_text("O rapaz entrou na casa e sentou-se à mesa.\n", encoding="utf-8")
    result = run_quantize(
        tiny_checkpoint,
        tmp_path,
        "iq2_xxs,q4_k_m,f16",
        imatrix="auto",
        calibration=str(cal),
        threads=2,
        progress=False,
    )
    assert calls == [("Tiny-PT", tmp_path, str(cal))]
    m = result.manifest
    assert sorted(result.built) == ["F16", "IQ2_XXS", "Q4_K_M"]
    for quant in ("IQ2_XXS", "Q4_K_M"):
        entry = m.find("gguf", quant)
        assert entry is not None and entry.extra["imatrix"]["file"] == tiny_imatrix.name
        assert entry.versions["llama_cpp_python"]
    f16 = m.find("gguf", "f16")
    assert f16 is not None and "imatrix" not in f16.extra
    # Re-run: everything reused; a different imatrix makes the quantized files stale.
    again = run_quantize(
        tiny_checkpoint, tmp_path, "iq2_xxs,q4_k_m,f16", imatrix="auto", progress=False
    )
    assert sorted(again.reused) == ["F16", "IQ2_XXS", "Q4_K_M"] and again.built == []
    other = tmp_path.parent / "other-imatrix.gguf"
    other.write_bytes(tiny_imatrix.read_bytes() + b"\0" * 32)  # same data, other bytes
    third = run_quantize(
        tiny_checkpoint, tmp_path, "iq2_xxs,q4_k_m,f16", imatrix=str(other), progress=False
    )
    assert sorted(third.built) == ["IQ2_XXS", "Q4_K_M"] and third.reused == ["F16"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".amalia-tmp-")]


@needs_llama
def test_quantized_types_come_from_a_temporary_intermediate(
    make_checkpoint: Any, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(dtype="BF16", shards=2)
    manifest = quantize(ckpt, tmp_path, "q4_0", imatrix="none", threads=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Tiny-PT-Q4_0.gguf", "manifest.json"]
    (entry,) = manifest.artifacts
    assert manifest.model["dtype"] == "BF16"  # quantized from a BF16 intermediate
    assert entry.params == manifest.model["params"] == 1967360
    assert 4.0 < (entry.bpw or 0) < 5.5


def test_onnx_types_pass_through_to_export_onnx(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    result = run_quantize(
        tiny_checkpoint, tmp_path, "f16", onnx_types=["fp32"], imatrix="none", progress=False
    )
    assert result.built == ["F16", "onnx:fp32"]
    m = load_manifest(tmp_path)
    entry = m.find("onnx", "fp32")
    assert entry is not None and (tmp_path / entry.file).is_file()
    assert entry.source_fingerprint == m.source["fingerprint"]
    again = run_quantize(
        tiny_checkpoint, tmp_path, "f16", onnx_types=["fp32"], imatrix="none", progress=False
    )
    assert again.reused == ["F16", "onnx:fp32"]


def test_manifest_keeps_earlier_entries_of_the_same_source(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    quantize(tiny_checkpoint, tmp_path, "f16", imatrix="none", progress=False)
    m = quantize(tiny_checkpoint, tmp_path, "bf16", imatrix="none", progress=False)
    assert sorted(a.quant for a in m.artifacts) == ["BF16", "F16"]
    assert load_manifest(tmp_path).to_dict() == m.to_dict()
    assert (tmp_path / "manifest.json").stat().st_mode & 0o044  # readable by others


def test_gguf_none_exports_onnx_only(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    result = run_quantize(tiny_checkpoint, tmp_path, "none", onnx_types=["fp32"], progress=False)
    assert result.built == ["onnx:fp32"]
    assert not list(tmp_path.glob("*.gguf"))
