"""The environment a benchmark record carries: library versions, git commit, size labels."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

# Distribution that provides each backend's library (for backend_version / library_versions).
BACKEND_DISTS: dict[str, tuple[str, ...]] = {
    "llama.cpp": ("llama-cpp-python", "llama_cpp_python"),  # PyPI name; JetPack builds: same
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),  # the GPU wheel on Jetson, CPU elsewhere
    "tensorrt": ("tensorrt",),  # JetPack ships python3-libnvinfer as dist "tensorrt"
}
LIBRARIES = (
    "numpy",
    "gguf",
    "psutil",
    "llama-cpp-python",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
)


def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        v = dist_version(name)
        if v:
            out[name] = v
    return out


def backend_version(backend: str) -> str | None:
    return dist_version(*BACKEND_DISTS.get(backend, (backend,)))


def git_commit(start: str | os.PathLike[str] | None = None) -> str | None:
    """Short commit of the amalia-edge checkout (read-only ``git rev-parse``), None if not one."""
    here = Path(start) if start else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def size_label(n: int) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}".replace(".0", "")
    return str(n)
