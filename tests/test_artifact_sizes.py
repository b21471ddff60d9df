"""What the runtime believes an artifact weighs: the number memory fit and speed are judged by."""

from __future__ import annotations

import shutil
from pathlib import Path

from amalia_edge.artifacts.manifest import ArtifactEntry, load_manifest
from amalia_edge.runtime.artifacts import resolve_model


def test_onnx_weight_bytes_count_the_external_data(tiny_artifacts: Path, tmp_path: Path) -> None:
    # An ONNX graph is a few KiB; its weights live in <file>.data, whose size the manifest keeps
    # in extra["data_size"]. Selection must count both, or a model that cannot fit looks tiny.
    work = tmp_path / "a"
    shutil.copytree(tiny_artifacts, work)
    (work / "m-fp16.onnx").write_bytes(b"\0" * 1000)
    (work / "m-fp16.onnx.data").write_bytes(b"\0" * 50_000)
    manifest = load_manifest(work)
    manifest.artifacts.append(
        ArtifactEntry(
            kind="onnx",
            quant="fp16",
            file="m-fp16.onnx",
            size=1000,
            sha256="0" * 64,
            extra={"data_file": "m-fp16.onnx.data", "data_size": 50_000},
        )
    )
    manifest.write(work)

    onnx = [a for a in resolve_model(work).artifacts if a.kind == "onnx"]
    assert len(onnx) == 1
    assert onnx[0].weight_bytes == 51_000
