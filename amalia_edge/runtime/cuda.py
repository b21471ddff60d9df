"""CUDA and TensorRT on this machine: the imports, the GPU's identity, a logger.

Imported by the native TensorRT backend and by the engine builder
(:mod:`amalia_edge.convert.tensorrt`); ``tensorrt`` and cuda-python are imported only inside
these functions, so this module is import-cheap everywhere.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from amalia_edge.errors import AmaliaEdgeError, BackendUnavailableError

log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "on a Jetson with JetPack 6, TensorRT 10.3 comes with JetPack: `sudo apt install "
    "nvidia-jetpack` (or `sudo apt install python3-libnvinfer`) and use the system Python 3.10 "
    "(or a venv created with --system-site-packages); on an x86 workstation with an NVIDIA "
    "GPU: `pip install tensorrt`"
)
CUDA_PYTHON_HINT = (
    "install NVIDIA's CUDA Python bindings for CUDA 12.6: `pip install 'cuda-python>=12.6,<13'`"
)


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str  # "8.7"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", f"{self.name}-sm{self.compute_capability}").strip("-")


def has_cuda_gpu(device: Any) -> bool:
    """The device probe found an NVIDIA GPU (Jetson iGPU or discrete card)."""
    if device is None:
        return False
    return bool(getattr(device, "has_cuda", False) or getattr(device, "cuda_cc", None))


def import_tensorrt() -> Any:
    """``import tensorrt`` or a one-line error saying how to get it (JetPack included)."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed ({exc})", fix=TENSORRT_INSTALL_HINT
        ) from None
    return tensorrt


def import_cudart() -> Any:
    """The CUDA runtime bindings from cuda-python (``cuda.bindings.runtime`` since 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise BackendUnavailableError(
                f"cuda-python is not installed ({exc})", fix=CUDA_PYTHON_HINT
            ) from None
    return cudart


def cuda_check(result: Any, what: str) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise AmaliaEdgeError(
            f"CUDA call {what} failed with {err!r}",
            fix="check `nvidia-smi`/`tegrastats` for another process holding the GPU",
        )
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def current_gpu(device: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device`` (via cuda-python)."""
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return GpuIdentity(str(name).strip(), f"{props.major}.{props.minor}")


def trt_logger(trt: Any, sink: list[str]) -> Any:
    """A ``trt.ILogger`` that keeps errors and warnings in ``sink`` and logs everything."""
    sev = trt.ILogger.Severity
    loud = {sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if severity in loud:
                sink.append(str(msg))
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()
