"""What `quantize` prints while it works: a reused imatrix says so, counters end at n/n."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.convert import pipeline
from amalia_edge.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_counter_ends_at_its_own_total_not_1_of_1() -> None:
    """llama.cpp's quantize reports tensors i/N, then the wrapper a final 1/1 (done)."""
    out = Tty()
    bar = Progress("Q4_K_M", stream=out)
    for i in range(1, 37):
        bar(i, 39, f"blk.{i}.weight")
    bar(1, 1, "")
    last = out.getvalue().split("\r")[-1]
    assert " 39/39" in last and "1/1" not in last
    bar.close("→ m-Q4_K_M.gguf")
    assert out.getvalue().rstrip().endswith("→ m-Q4_K_M.gguf")
    assert "Q4_K_M         39 tensors" in out.getvalue()


@pytest.mark.parametrize("reuse", [True, False])
def test_imatrix_line_says_reused_when_nothing_was_computed(
    reuse: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    class Module:
        @staticmethod
        def ensure_imatrix(
            ckpt: Any, out: Path, calibration: Any, progress: Any, **kw: Any
        ) -> Path:
            if not reuse:
                for i in range(1, 5):
                    progress(i, 4)
            return out / "imatrix.gguf"

    monkeypatch.setattr("amalia_edge.convert.quantize.load_imatrix", lambda path: None)
    pipeline._auto_imatrix(Module(), None, tmp_path, None, progress=True)  # type: ignore[arg-type]
    err = capsys.readouterr().err.strip()
    if reuse:
        assert err == "imatrix        reused imatrix.gguf"
    else:
        assert err.startswith("imatrix        4 chunks, ") and err.endswith("→ imatrix.gguf")
