"""The one registry of backends.

Built-in backends register exactly as a plugin would: by a ``"module:Class"`` path, so their
modules (and the heavy libraries those import inside ``probe``/``load``) are imported only
when a backend is asked for. Third-party packages add backends through the
``amalia_edge.backends`` entry-point group (``name = "pkg.module:Class"``) or by calling
:func:`register` at import time.

Names are matched case-insensitively, with aliases (``llamacpp``, ``llama`` → ``llama.cpp``;
``ort``, ``onnx`` → ``onnxruntime``; ``trt`` → ``tensorrt``); an unknown name raises
:class:`~amalia_edge.errors.BackendError` listing the known ones.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amalia_edge.errors import BackendError

if TYPE_CHECKING:  # only for annotations: `doctor` lists the registry without importing it
    from amalia_edge.runtime.backend import Backend

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "amalia_edge.backends"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target: str  # "package.module:ClassName"
    aliases: tuple[str, ...] = ()
    description: str = ""


# Built-ins, one row each, in the order selection breaks ties in.
BUILTINS: tuple[BackendSpec, ...] = (
    BackendSpec(
        "llama.cpp",
        "amalia_edge.runtime.backends.llamacpp:LlamaCppBackend",
        ("llamacpp", "llama-cpp", "llama"),
        "llama-cpp-python: GGUF on CPU, or CUDA with every layer offloaded",
    ),
    BackendSpec(
        "onnxruntime",
        "amalia_edge.runtime.backends.onnxrt:OnnxRuntimeBackend",
        ("ort", "onnx", "onnx-runtime"),
        "ONNX Runtime: ONNX models on the CUDA / TensorRT / CPU execution providers",
    ),
    BackendSpec(
        "tensorrt",
        "amalia_edge.runtime.backends.tensorrt:TensorRTBackend",
        ("trt",),
        "TensorRT engines built on this device",
    ),
)

_lock = threading.Lock()
_specs: dict[str, BackendSpec] = {}
_classes: dict[str, type[Backend]] = {}
_instances: dict[str, Backend] = {}
_entry_points_loaded = False


def register(
    name: str,
    target: str | type[Backend],
    *,
    aliases: tuple[str, ...] = (),
    description: str = "",
) -> None:
    """Register a backend class (or its lazy ``"module:Class"`` path) under ``name``."""
    with _lock:
        if isinstance(target, str):
            _specs[name] = BackendSpec(name, target, aliases, description)
            _classes.pop(name, None)
        else:
            _specs[name] = BackendSpec(
                name, f"{target.__module__}:{target.__qualname__}", aliases, description
            )
            _classes[name] = target
        _instances.pop(name, None)


def unregister(name: str) -> None:
    with _lock:
        _specs.pop(name, None)
        _classes.pop(name, None)
        _instances.pop(name, None)


for _spec in BUILTINS:
    register(_spec.name, _spec.target, aliases=_spec.aliases, description=_spec.description)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _specs:
            register(ep.name, ep.value)


def names(*, plugins: bool = False) -> list[str]:
    """Registered backend names, built-ins first.

    Entry-point plugins are discovered only with ``plugins=True`` (selection does), by
    :func:`all_backends`, or when a name is not otherwise known: scanning every installed
    distribution's metadata costs ~0.15 s, which ``amalia-edge doctor`` should not pay.
    """
    if plugins:
        _load_entry_points()
    return list(_specs)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; BackendError lists the known."""
    key = name.strip().lower()
    for attempt in range(2):
        for spec in _specs.values():
            if key == spec.name.lower() or key in spec.aliases:
                return spec.name
        if attempt == 0:
            _load_entry_points()
    known = ", ".join(
        spec.name + (f" ({', '.join(spec.aliases)})" if spec.aliases else "")
        for spec in _specs.values()
    )
    raise BackendError(f"unknown backend {name!r}", fix=f"choose one of: {known}")


def spec(name: str) -> BackendSpec:
    return _specs[canonical_name(name)]


def get(name: str) -> Backend:
    """The backend instance for ``name`` (imports its module on first use)."""
    canonical = canonical_name(name)
    with _lock:
        if canonical in _instances:
            return _instances[canonical]
        cls = _classes.get(canonical)
        if cls is None:
            target = _specs[canonical].target
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
                cls = getattr(module, attr)
            except (ImportError, AttributeError) as exc:
                raise BackendError(
                    f"backend {canonical!r} cannot be imported from {target} ({exc})",
                    fix="reinstall amalia-edge, or the plugin that provides this backend",
                ) from None
            _classes[canonical] = cls
        instance = cls()
        _instances[canonical] = instance
        return instance


def all_backends() -> list[tuple[str, Backend | BackendError]]:
    """Every registered backend, or the error importing it (selection reports it as a reason)."""
    out: list[tuple[str, Backend | BackendError]] = []
    for n in names(plugins=True):
        try:
            out.append((n, get(n)))
        except BackendError as exc:
            log.debug("backend %s unavailable: %s", n, exc)
            out.append((n, exc))
    return out
