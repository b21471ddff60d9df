"""Issue 12, points 5, 7, 10, 11 and 12 for ``quantize``: every option is checked before
anything is written, the output folder is locked, a damaged importance matrix is not reused,
and the same build in two folders is byte-identical (no absolute local paths)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.convert.pipeline import locked_out, run_quantize
from amalia_edge.errors import (
    AmaliaEdgeError,
    ArtifactError,
    CheckpointError,
    ConversionError,
    ImatrixError,
    OutputError,
)
from tests import factory
from tests.plugins.models import HAVE_LLAMA_CPP, reference_imatrix

needs_llama = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="needs llama-cpp-python")


def _refused(out: Path, exc: type[AmaliaEdgeError], match: str, **kw: Any) -> None:
    kw = {"imatrix": "none", "progress": False, **kw}
    with pytest.raises(exc, match=match) as info:
        run_quantize(out=out, **kw)
    assert "\n" not in str(info.value)
    assert not out.exists(), "a refused run must leave --out untouched"


def test_bad_onnx_precision_is_refused_before_the_f16_file(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    _refused(
        tmp_path / "out",
        ConversionError,
        "unknown ONNX precision 'bogus'",
        source=tiny_checkpoint,
        gguf_types="f16",
        onnx_types=["bogus"],
    )


@needs_llama
def test_calibration_directory_is_refused_up_front(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _refused(
        tmp_path / "out",
        ImatrixError,
        r"calibration text .* is a directory",
        source=tiny_checkpoint,
        gguf_types="q4_k_m",
        imatrix="auto",
        calibration=tmp_path,
    )


def test_imatrix_directory_says_so(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _refused(
        tmp_path / "out",
        ImatrixError,
        r"--imatrix .* is a directory",
        source=tiny_checkpoint,
        gguf_types="q4_k_m",
        imatrix=str(tmp_path),
    )


def test_out_that_is_a_file_says_so(tiny_checkpoint: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        run_quantize(tiny_checkpoint, afile / "sub", "f16", imatrix="none", progress=False)
    assert afile.read_text() == "x"


def test_huge_context_leaves_no_out_folder(tmp_path: Path) -> None:
    ckpt = factory.build_checkpoint(
        tmp_path / "ckpt", num_hidden_layers=1, config_overrides={"max_position_embeddings": 2**40}
    )
    _refused(tmp_path / "out", CheckpointError, "max_position_embeddings", source=ckpt)


@needs_llama
def test_imatrix_of_a_model_with_fewer_layers_is_refused_up_front(
    make_checkpoint: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    one_layer = make_checkpoint(num_hidden_layers=1)
    imx = reference_imatrix(one_layer, tmp_path / "one-layer.gguf")
    _refused(
        tmp_path / "out",
        ImatrixError,
        "has no entry for blk.1",
        source=tiny_checkpoint,
        gguf_types="iq2_xxs",
        imatrix=str(imx),
    )


def test_second_run_into_a_locked_folder_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with locked_out(out):
        with pytest.raises(OutputError, match="another `amalia-edge quantize` is writing"):
            run_quantize(tiny_checkpoint, out, "f16", imatrix="none", progress=False)
        assert list(out.iterdir()) == []
    # released: the same run now succeeds
    run_quantize(tiny_checkpoint, out, "f16", imatrix="none", progress=False)
    assert (out / "manifest.json").is_file()


def test_quality_given_a_gguf_file_says_it_is_a_file(tiny_gguf: dict[str, Path]) -> None:
    from amalia_edge.artifacts.manifest import load_manifest

    with pytest.raises(ArtifactError, match="is a file, not an artifacts directory"):
        load_manifest(tiny_gguf["F16"])


# -- the importance matrix is not reused when damaged, and --force reaches it ------------------


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "cal.txt"
    path.write_text("\n".join(factory.corpus_lines(max_chars=6_000)), encoding="utf-8")
    return path


def test_damaged_imatrix_is_recomputed(
    tiny_checkpoint: Path, tmp_path: Path, calibration: Path
) -> None:
    from amalia_edge.convert.imatrix import ensure_imatrix

    out = tmp_path / "out"
    path = ensure_imatrix(tiny_checkpoint, out, calibration, ctx=32)
    clean = path.read_bytes()
    sha = hashlib.sha256(clean).hexdigest()
    damaged = bytearray(clean)
    damaged[-8:] = b"\x7f" * 8  # the last in_sum values: metadata intact, data not
    path.write_bytes(bytes(damaged))
    again = ensure_imatrix(tiny_checkpoint, out, calibration, ctx=32, expect_sha256=sha)
    assert again.read_bytes() == clean
    # --force recomputes even an intact file (a new inode proves it was written again)
    inode = path.stat().st_ino
    ensure_imatrix(tiny_checkpoint, out, calibration, ctx=32, force=True)
    assert path.stat().st_ino != inode and path.read_bytes() == clean


@needs_llama
def test_force_and_the_recorded_sha256_reach_ensure_imatrix(
    tiny_checkpoint: Path, tiny_imatrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def ensure_imatrix(ckpt: Any, out_dir: Any, calibration: Any = None, **kw: Any) -> Path:
        calls.append(kw)
        return tiny_imatrix

    from amalia_edge.convert import imatrix

    monkeypatch.setattr(imatrix, "ensure_imatrix", ensure_imatrix)
    monkeypatch.setattr(imatrix, "IMATRIX_FILE", tiny_imatrix.name)
    out = tmp_path / "out"
    run_quantize(tiny_checkpoint, out, "q4_k_m", imatrix="auto", progress=False)
    run_quantize(tiny_checkpoint, out, "q4_k_m", imatrix="auto", progress=False)
    run_quantize(tiny_checkpoint, out, "q4_k_m", imatrix="auto", force=True, progress=False)
    sha = hashlib.sha256(tiny_imatrix.read_bytes()).hexdigest()
    assert [(c["force"], c["expect_sha256"]) for c in calls] == [
        (False, None),
        (False, sha),
        (True, None),
    ]


# -- same build, two folders: byte-identical ----------------------------------------------------


@needs_llama
def test_same_build_in_two_folders_is_byte_identical(
    tiny_checkpoint: Path, tiny_imatrix: Path, tmp_path: Path
) -> None:
    trees = []
    for name in ("a", "b"):
        root = tmp_path / name
        imx = root / "imatrix.gguf"
        root.mkdir()
        shutil.copy(tiny_imatrix, imx)
        out = root / "out"
        run_quantize(tiny_checkpoint, out, "f16,q4_k_m", imatrix=str(imx), progress=False)
        trees.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert trees[0].keys() == trees[1].keys()
    for name in trees[0]:
        assert trees[0][name] == trees[1][name], name
    assert str(tmp_path).encode() not in b"".join(trees[0].values())


@needs_llama
@pytest.mark.parametrize(("free", "expected"), [(0, OutputError), (1 << 40, ConversionError)])
def test_disk_full_inside_llama_cpp_says_disk_full(
    tiny_gguf: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    free: int,
    expected: type[AmaliaEdgeError],
) -> None:
    """llama.cpp's C++ writer reports ENOSPC as "basic_ios::clear: iostream error"."""
    import collections
    import contextlib

    import llama_cpp

    from amalia_edge.convert import quantize as q

    class Log:
        def __init__(self, progress: Any) -> None:
            self.errors = ["llama_model_quantize: failed to quantize: basic_ios::clear: iostream"]

        @contextlib.contextmanager
        def installed(self) -> Any:
            yield

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(q, "_LlamaLog", Log)
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda *a: 1)
    monkeypatch.setattr(q.shutil, "disk_usage", lambda p: usage(1 << 41, 1 << 41, free))
    with pytest.raises(expected) as info:
        q.llama_quantize(tiny_gguf["F16"], tmp_path / "q.gguf", "q4_0", threads=1)
    if expected is OutputError:
        assert "disk filled up" in str(info.value) and "source GGUF" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
