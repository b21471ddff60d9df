"""llama.cpp's own quantizer, in-process, through llama-cpp-python.

:func:`llama_quantize` does what ``llama-quantize [--imatrix FILE] SRC DST TYPE NTHREADS``
does (``tools/quantize/quantize.cpp``): it fills ``llama_model_quantize_params`` and calls
``llama_model_quantize``. The importance matrix is read here the way llama.cpp's
``common_imatrix_load`` + ``load_imatrix`` read it (GGUF imatrix format: ``<tensor>.in_sum2``
and ``<tensor>.counts`` per weight, each value divided by its count, 1 where the count is 0)
and handed over as the ``llama_model_imatrix_data`` array that ``params.imatrix`` points to,
with the same ``quantize.imatrix.*`` metadata overrides llama-quantize records.

llama.cpp's log goes to :mod:`logging` (DEBUG) instead of the terminal; its per-tensor lines
drive the progress callback, and its last error line becomes the error message.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.artifacts.atomic import atomic_path, os_error_message
from amalia_edge.artifacts.quant_types import QuantType, get
from amalia_edge.errors import (
    BackendUnavailableError,
    ConversionError,
    ImatrixError,
    QuantTypeError,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

# llama-quant.cpp logs "[  12/ 291]   blk.1.attn_q.weight - [ ...], type = ..." per tensor.
_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]\s+(\S+)")

# tools/quantize/quantize.cpp LLM_KV_QUANTIZE_IMATRIX_* (written into the quantized file).
_KV_IMATRIX_FILE = "quantize.imatrix.file"
_KV_IMATRIX_DATASET = "quantize.imatrix.dataset"
_KV_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
_KV_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"
# common/imatrix-loader.h LLM_KV_IMATRIX_* (read from the imatrix file).
_IMX_DATASETS = "imatrix.datasets"
_IMX_CHUNK_COUNT = "imatrix.chunk_count"
_IMX_CHUNK_SIZE = "imatrix.chunk_size"


@dataclass
class Imatrix:
    """An importance matrix as llama.cpp's quantizer consumes it: GGUF tensor name → values
    (mean squared activation per input column, one row per expert)."""

    path: Path
    data: dict[str, np.ndarray[Any, Any]]
    datasets: list[str]
    chunk_count: int
    chunk_size: int


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def load_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """Read and normalize a GGUF imatrix file (what ``llama-imatrix -o x.gguf`` writes).

    Raises :class:`ImatrixError` for a missing file, the legacy ``.dat`` format, a GGUF that
    is not an imatrix, or one without the metadata llama-quantize insists on.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ImatrixError(
            f"importance matrix {path} does not exist", fix="check the --imatrix path"
        )
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ImatrixError(
            f"{path} is not a GGUF importance matrix (legacy .dat or another file)",
            fix="convert it with `llama-imatrix --in-file OLD.dat -o NEW.gguf` or make a new one",
        )
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        raise ImatrixError(
            f"{path} is not a readable GGUF file ({exc})", fix="make it again"
        ) from None
    sums: dict[str, np.ndarray[Any, Any]] = {}
    counts: dict[str, np.ndarray[Any, Any]] = {}
    for t in reader.tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            continue
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if not sums:
        raise ImatrixError(
            f"{path} holds no importance-matrix data (no *.in_sum2 tensors)",
            fix="pass a file written by `llama-imatrix` or `amalia-edge quantize --imatrix auto`",
        )
    datasets = _field_value(reader, _IMX_DATASETS)
    chunk_count = _field_value(reader, _IMX_CHUNK_COUNT)
    chunk_size = _field_value(reader, _IMX_CHUNK_SIZE)
    if datasets is None or chunk_count is None or chunk_size is None:
        # quantize.cpp load_imatrix: "missing imatrix metadata" is fatal there too.
        raise ImatrixError(
            f"{path} lacks imatrix metadata "
            f"({_IMX_DATASETS}, {_IMX_CHUNK_COUNT}, {_IMX_CHUNK_SIZE})",
            fix="make it again with a current llama-imatrix",
        )
    data: dict[str, np.ndarray[Any, Any]] = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None or c.size == 0 or s.size % c.size:
            raise ImatrixError(
                f"{path}: sums and counts for {name} do not match", fix="make it again"
            )
        ne0 = s.size // c.size
        c_rounded = np.rint(c).astype(np.float32)  # common_imatrix_load: std::lround(count)
        per_row = np.repeat(c_rounded, ne0)
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(per_row > 0, s / np.where(per_row > 0, per_row, 1), 1.0)
        if not np.all(np.isfinite(vals)):
            raise ImatrixError(f"{path}: {name} has non-finite values", fix="make it again")
        data[name] = np.ascontiguousarray(vals, dtype=np.float32)
    if isinstance(datasets, str):
        datasets = [datasets]
    return Imatrix(path, data, [str(d) for d in datasets], int(chunk_count), int(chunk_size))


class _LlamaLog:
    """Routes llama.cpp's log to :mod:`logging` while installed; remembers errors."""

    def __init__(self, progress: ProgressFn | None) -> None:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()

        self.errors: list[str] = []
        self.progress = progress
        self._buf = ""
        self._cb = llama_cpp.llama_log_callback(self._on_log)  # keep a reference (ctypes)

    def _on_log(self, level: int, text: bytes | None, _user: Any) -> None:
        try:
            msg = (text or b"").decode("utf-8", "replace")
            self._buf += msg
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._line(level, line)
        except Exception:
            pass

    def _line(self, level: int, line: str) -> None:
        stripped = line.strip()
        if not stripped:
            return
        log.debug("llama.cpp: %s", stripped)
        # ggml_log_level: 2 WARN, 3 ERROR; llama-quant reports "failed to quantize: ..." at ERROR.
        if level == 3 or "failed to quantize" in stripped or "error" in stripped.lower():
            self.errors.append(stripped.strip("= "))
        m = _TENSOR_LINE.search(stripped)
        if m and self.progress is not None:
            self.progress(int(m.group(1)) - 1, int(m.group(2)), m.group(3))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()

        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))
        try:
            yield
        finally:
            try:  # give llama-cpp-python its own logger back
                from llama_cpp import _logger

                llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
            except ImportError:  # pragma: no cover - very old llama-cpp-python
                llama_cpp.llama_log_set(None, ctypes.c_void_p(0))


def _kv_override(llama_cpp: Any, key: str, value: str | int) -> Any:
    kvo = llama_cpp.llama_model_kv_override()
    kvo.key = key.encode()[:127]
    if isinstance(value, str):
        kvo.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
        kvo.value.val_str = value.encode("utf-8")[:127]
    else:
        kvo.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
        kvo.value.val_i64 = int(value)
    return kvo


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python version (the llama.cpp it vendors), without importing it."""
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def llama_quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    qtype: str | QuantType,
    imatrix: str | os.PathLike[str] | Imatrix | None = None,
    threads: int | None = None,
    *,
    progress: ProgressFn | None = None,
) -> Path:
    """Quantize the GGUF ``src`` to ``dst`` as ``qtype`` with llama.cpp, in this process.

    ``threads``: None or <= 0 uses every core. ``imatrix``: a GGUF imatrix path (or a loaded
    :class:`Imatrix`); the types whose table row says ``needs_imatrix`` refuse to run without
    one. ``dst`` appears only when complete (written beside it under a temporary name first).
    Raises :class:`QuantTypeError`, :class:`ImatrixError`, :class:`ConversionError`
    (llama.cpp failed: its message is included), :class:`BackendUnavailableError`
    (llama-cpp-python missing) or :class:`amalia_edge.errors.OutputError`.
    """
    qt = get(qtype) if isinstance(qtype, str) else qtype
    src, dst = Path(src), Path(dst)
    if qt.needs_imatrix and imatrix is None:
        raise QuantTypeError(
            f"{qt.name} needs an importance matrix",
            fix="pass --imatrix FILE (a llama-imatrix GGUF) or --imatrix auto, or pick a K-quant",
        )
    if not src.is_file():
        raise ConversionError(f"{src} does not exist", fix="write the F16/BF16 GGUF first")
    try:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()
    except ImportError:
        raise BackendUnavailableError(
            "llama-cpp-python is not installed, so llama.cpp's quantizer is unavailable",
            fix="pip install 'amalia-edge[llama]' (or only ask for f32,f16,bf16,q8_0)",
        ) from None

    imx = (
        load_imatrix(imatrix)
        if imatrix is not None and not isinstance(imatrix, Imatrix)
        else imatrix
    )

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads if threads and threads > 0 else (os.cpu_count() or 1)
    params.ftype = qt.ftype
    keep_alive: list[Any] = []
    if imx is not None:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imx.data) + 1))()
        for i, (name, values) in enumerate(imx.data.items()):
            name_b = name.encode()
            keep_alive.append(name_b)
            entries[i].name = name_b
            entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = values.size
        entries[len(imx.data)].name = None  # terminator, as quantize.cpp appends
        keep_alive.append(entries)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        # Relative to the output folder: an absolute path would make two builds differ.
        rel = os.path.relpath(imx.path, dst.parent)
        kvs = [_kv_override(llama_cpp, _KV_IMATRIX_FILE, rel)]
        if imx.datasets:
            kvs.append(_kv_override(llama_cpp, _KV_IMATRIX_DATASET, imx.datasets[0]))
        kvs.append(_kv_override(llama_cpp, _KV_IMATRIX_N_ENTRIES, len(imx.data)))
        if imx.chunk_count > 0:
            kvs.append(_kv_override(llama_cpp, _KV_IMATRIX_N_CHUNKS, imx.chunk_count))
        kv_arr = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))(*kvs)
        kv_arr[len(kvs)].key = b""  # terminator: empty key
        keep_alive.append(kv_arr)
        params.kv_overrides = ctypes.cast(kv_arr, ctypes.POINTER(llama_cpp.llama_model_kv_override))

    sink = _LlamaLog(progress)
    with atomic_path(dst) as tmp:
        llama_cpp.llama_backend_init()
        with sink.installed():
            rc = llama_cpp.llama_model_quantize(
                str(src).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        if rc != 0:
            detail = sink.errors[-1] if sink.errors else f"return code {rc}"
            # Disk full inside llama.cpp's C++ writer surfaces as "basic_ios::clear: iostream
            # error" (std::ofstream with exceptions on), not ENOSPC: ask the disk itself.
            if "space" in detail.lower() or (
                "ios" in detail.lower() and shutil.disk_usage(dst.parent).free < (64 << 20)
            ):
                raise os_error_message(OSError(28, "No space left on device"), dst)
            raise ConversionError(
                f"llama.cpp could not quantize to {qt.name}: {detail}",
                fix="see the log with -vv; check the source GGUF",
            )
    if progress is not None:
        progress(1, 1, "")
    return dst
