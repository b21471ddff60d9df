"""``amalia-edge quantize --imatrix FILE`` checks FILE against the model before writing
anything: an importance matrix made for another model is refused in one line naming the first
mismatching tensor (issue 3, "Bad input"), and the right one is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.cli import main
from tests.plugins.models import write_imatrix_gguf


def _model_columns(checkpoint: Path) -> dict[str, int]:
    """``{gguf weight name: input columns}`` of every 2-D weight in ``checkpoint``."""
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.tensor_names import gguf_name, spec_for

    ckpt = open_checkpoint(checkpoint, tokenizer=False)
    spec = spec_for(ckpt.config.architecture)
    cols: dict[str, int] = {}
    for hf, info in ckpt.tensor_infos.items():
        name = gguf_name(spec, hf)
        if name is not None and len(info.shape) == 2:
            cols[name] = int(info.shape[1])
    return cols


def _imatrix(path: Path, cols: dict[str, int]) -> Path:
    return write_imatrix_gguf(path, {n: (np.ones(c, np.float32), 8) for n, c in cols.items()})


def _refused(capsys: Any, ckpt: Path, out: Path, imx: Path) -> str:
    rc = main(["quantize", str(ckpt), "--out", str(out), "--gguf", "f16", "--imatrix", str(imx)])
    cap = capsys.readouterr()
    assert rc != 0
    assert cap.out == ""
    assert "Traceback" not in cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("amalia-edge: error: "), lines[0]
    assert not out.exists(), "OUT was created for an input error"
    return lines[0]


def test_wrong_column_count_is_refused_naming_the_tensor(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    cols = _model_columns(tiny_checkpoint)
    # Two tensors off by one column; the error names the first in sorted order.
    bad = sorted(n for n in cols if n.startswith("blk."))[-2:]
    for name in bad:
        cols[name] += 1
    line = _refused(
        capsys, tiny_checkpoint, tmp_path / "out", _imatrix(tmp_path / "other.gguf", cols)
    )
    assert bad[0] in line and bad[1] not in line
    assert f"has {cols[bad[0]]} values" in line
    assert "another model" in line and "--imatrix auto" in line


def test_tensor_the_model_lacks_is_refused_naming_it(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    cols = _model_columns(tiny_checkpoint)
    # As if made for a deeper model: a layer this one does not have.
    layer = 1 + max(int(n.split(".")[1]) for n in cols if n.startswith("blk."))
    cols[f"blk.{layer}.attn_q.weight"] = cols["blk.0.attn_q.weight"]
    line = _refused(
        capsys, tiny_checkpoint, tmp_path / "out", _imatrix(tmp_path / "deeper.gguf", cols)
    )
    assert f"blk.{layer}.attn_q.weight" in line and "does not have" in line


def test_matching_imatrix_is_accepted(capsys: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    imx = _imatrix(tmp_path / "same.gguf", _model_columns(tiny_checkpoint))
    out = tmp_path / "out"
    rc = main(
        [
            "quantize",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--gguf",
            "f16",
            "--imatrix",
            str(imx),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert (out / "manifest.json").is_file()


def test_empty_imatrix_is_refused(capsys: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    line = _refused(capsys, tiny_checkpoint, tmp_path / "out", _imatrix(tmp_path / "e.gguf", {}))
    assert "empty" in line
