"""llama.cpp is imported after onnxruntime (runtime/native.py): on the H200 the other order
killed the process inside onnxruntime's import. Checked in fresh interpreters, through the
paths that import llama.cpp first in practice (backend probe, the backend's offload rule)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("llama_cpp")

ORDER = """
import json, sys
{body}
mods = list(sys.modules)
print(json.dumps([mods.index(m) if m in mods else None for m in ("onnxruntime", "llama_cpp")]))
"""


def _order(body: str) -> list[int | None]:
    out = subprocess.run(
        [sys.executable, "-c", ORDER.format(body=body)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "body",
    [
        "from amalia_edge.runtime.native import import_llama_cpp; import_llama_cpp()",
        "from amalia_edge.runtime.backends.llamacpp import LlamaCppBackend\n"
        "LlamaCppBackend().probe(None)",
        "from amalia_edge.runtime.backends.llamacpp import gpu_offload; gpu_offload(None)",
        "from amalia_edge.device.checks import _llama_build; _llama_build()",
    ],
)
def test_onnxruntime_is_loaded_before_llama_cpp(body: str) -> None:
    ort, llama = _order(body)
    assert ort is not None and llama is not None
    assert ort < llama


def test_a_missing_or_broken_onnxruntime_does_not_stop_llama_cpp(tmp_path) -> None:
    """An onnxruntime that fails to import is the ONNX Runtime backend's problem to report."""
    shim = tmp_path / "onnxruntime"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from amalia_edge.runtime.native import import_llama_cpp; "
            "print(import_llama_cpp().__name__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.stdout.strip() == "llama_cpp"
