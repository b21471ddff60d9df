"""Native libraries that must be loaded in a fixed order.

On the H200 of 2026-12-04 (llama-cpp-python 0.3.36 built with CUDA 13.0, onnxruntime 1.30.0,
Python 3.12), ``import llama_cpp`` followed by ``import onnxruntime`` killed the process with
SIGSEGV inside onnxruntime's import; the other order ran a model on the GPU in the same process.
amalia-edge imports both in one process (backend selection probes every backend; ``bench``
and ``doctor`` use both), so llama.cpp is imported only through :func:`import_llama_cpp`,
which loads ONNX Runtime first when it is installed. The cost is ONNX Runtime's import time
(a fraction of a second) in processes that use llama.cpp. This is a workaround seen to help,
not a known cure: on the same machine a llama.cpp load also crashed in processes where
onnxruntime was never loaded (README, "What was verified"; benchmarks/gpu_crash_probe.py is
the next step there).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)


def preload_onnxruntime() -> None:
    """Import onnxruntime, if it is installed and llama_cpp is not loaded yet."""
    if "onnxruntime" in sys.modules or "llama_cpp" in sys.modules:
        return
    try:
        if importlib.util.find_spec("onnxruntime") is None:
            return
        import onnxruntime  # noqa: F401
    except Exception as exc:  # a broken install is the ONNX Runtime backend's to report
        log.debug("onnxruntime preload failed: %s", exc)


def import_llama_cpp() -> ModuleType:
    """``import llama_cpp``, after onnxruntime (see the module's docstring)."""
    preload_onnxruntime()
    import llama_cpp

    return llama_cpp
