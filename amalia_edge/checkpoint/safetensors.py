"""A lazy, validating reader for safetensors files (single and sharded).

Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
N bytes of JSON ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``,
then the data; offsets are relative to the first byte after the header.

Contract:

* Opening a file reads only its header, and validates it completely before anything else
  happens: header length sane and inside the file, JSON an object, every dtype known,
  ``end - begin == prod(shape) * itemsize``, no two tensors overlap, nothing runs past the
  end of the file. Every failure is a one-line :class:`CheckpointError` naming the file.
* :func:`read_tensor` reads one tensor with ``pread``-style positioned reads into a fresh
  buffer: memory is bounded by that tensor, never the file, and nothing is memory-mapped (so
  the pages do not stay resident in the process's RSS after the array is dropped).
* Nothing here ever opens a file for writing.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.errors import CheckpointError
from amalia_edge.safeio import loads_json, open_regular

# The safetensors library refuses headers above 100 MB (safetensors/src/tensor.rs,
# MAX_HEADER_SIZE); a real 9B checkpoint's header is well under 100 kB.
MAX_HEADER_BYTES = 100_000_000

# dtype name -> (itemsize, numpy dtype used to hold the raw bytes).
# Source: safetensors/src/tensor.rs `enum Dtype`; BF16 has no numpy dtype, so it is held as
# uint16 (the top half of a float32) and widened on request.
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "<f8"),
    "F32": (4, "<f4"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),
    "I64": (8, "<i8"),
    "I32": (4, "<i4"),
    "I16": (2, "<i2"),
    "I8": (1, "i1"),
    "U64": (8, "<u8"),
    "U32": (4, "<u4"),
    "U16": (2, "<u2"),
    "U8": (1, "u1"),
    "BOOL": (1, "?"),
    "F8_E4M3": (1, "u1"),  # held as raw bytes; no conversion offered
    "F8_E5M2": (1, "u1"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")

# One read() call on Linux moves at most 0x7ffff000 bytes; larger tensors are read in pieces.
_READ_CHUNK = 1 << 30
# Raw bytes converted per step when a dtype conversion is asked for (bounds the transient
# memory of BF16 -> float32/float16 to this, beside the result).
CONVERT_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: ``file`` at absolute byte ``offset``, ``nbytes`` long."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    """The validated header of one safetensors file."""

    path: Path
    file_size: int
    header_bytes: bytes
    data_start: int
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def _err(path: Path, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}", fix=fix)


_REDOWNLOAD = "the file is damaged or incomplete; download it again"


def read_header(path: Path) -> SafetensorsHeader:
    """Read and fully validate the header of the safetensors file at ``path``."""
    try:
        with open_regular(path, CheckpointError) as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _err(path, f"file is {size} bytes, too short to be safetensors", _REDOWNLOAD)
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES:
                raise _err(
                    path,
                    f"header length {n} bytes is absurd (limit {MAX_HEADER_BYTES})",
                    "this is not a safetensors file or its first 8 bytes are corrupt; "
                    "download it again",
                )
            if 8 + n > size:
                raise _err(
                    path,
                    f"header claims {n} bytes but the file has only {size - 8} after the "
                    "length field (truncated)",
                    _REDOWNLOAD,
                )
            raw = fh.read(n)
    except OSError as exc:
        raise _err(
            path, f"cannot read: {exc.strerror or exc}", "check the path and permissions"
        ) from None
    if len(raw) != n:
        raise _err(path, "file shrank while its header was read (truncated)", _REDOWNLOAD)
    doc = loads_json(raw, f"{path}: header", CheckpointError, fix=_REDOWNLOAD)

    data_start = 8 + n
    data_size = size - data_start
    header = SafetensorsHeader(path, size, raw, data_start)
    meta = doc.pop("__metadata__", None)
    if isinstance(meta, dict):
        header.metadata = {str(k): str(v) for k, v in meta.items()}

    spans: list[tuple[int, int, str]] = []
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise _err(path, f"header entry {name!r} is not an object", _REDOWNLOAD)
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _err(
                path,
                f"tensor {name!r} has unknown dtype {dtype!r} (known: {', '.join(DTYPES)})",
                _REDOWNLOAD,
            )
        if not (
            isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ) or not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
        ):
            raise _err(path, f"tensor {name!r} has a malformed shape or data_offsets", _REDOWNLOAD)
        begin, end = offsets
        itemsize = DTYPES[dtype][0]
        expected = math.prod(shape) * itemsize
        if end < begin or end - begin != expected:
            raise _err(
                path,
                f"tensor {name!r}: data_offsets [{begin}, {end}] hold {end - begin} bytes but "
                f"{dtype} x {shape} needs {expected}",
                _REDOWNLOAD,
            )
        if end > data_size:
            raise _err(
                path,
                f"tensor {name!r} ends at data byte {end} but the file holds only {data_size} "
                "data bytes (truncated, or offsets past the end)",
                _REDOWNLOAD,
            )
        if end > begin:  # empty tensors occupy no bytes and cannot overlap anything
            spans.append((begin, end, name))
        header.tensors[name] = TensorInfo(
            name, dtype, tuple(shape), path, data_start + begin, end - begin
        )
    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise _err(
                path,
                f"tensors {n0!r} [{b0}, {e0}] and {n1!r} [{b1}, {_e1}] overlap",
                _REDOWNLOAD,
            )
    return header


def _read_exact(path: Path, offset: int, nbytes: int, out: memoryview) -> None:
    """Fill ``out`` (``nbytes`` long) from ``path`` at ``offset`` with positioned reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < nbytes:
            want = min(_READ_CHUNK, nbytes - done)
            got = os.preadv(fd, [out[done : done + want]], offset + done)
            if got <= 0:
                raise _err(
                    path,
                    f"file ended {nbytes - done} bytes early while reading (truncated or "
                    "changed since it was opened)",
                    _REDOWNLOAD,
                )
            done += got
    finally:
        os.close(fd)


def bf16_to_f32(raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Widen BF16 bits (held as uint16) to float32 exactly: BF16 is float32's top 16 bits."""
    wide = raw.astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


def read_tensor(info: TensorInfo, dtype: str | None = None) -> np.ndarray[Any, Any]:
    """Read one tensor. ``dtype=None``: native (BF16 as uint16); ``"float32"``/``"float16"``:
    converted (float types only; BF16 widens exactly, to float16 rounds to nearest).

    Peak memory is the returned array plus at most :data:`CONVERT_CHUNK_BYTES` of raw bytes:
    conversions run chunk by chunk into the preallocated result.
    """
    if dtype not in (None, "float32", "float16"):
        raise ValueError(f"dtype must be None, 'float32' or 'float16', not {dtype!r}")
    native = np.dtype(DTYPES[info.dtype][1])
    target = native if dtype is None else np.dtype(dtype)
    if dtype is not None and info.dtype not in FLOAT_DTYPES:
        raise CheckpointError(
            f"tensor {info.name!r} is {info.dtype}, not a float type",
            fix="read it with dtype=None",
        )
    same = dtype is None or (native == target and info.dtype != "BF16")
    out = np.empty(info.numel, dtype=native if same else target)
    try:
        if same:
            _read_exact(info.file, info.offset, info.nbytes, out.data.cast("B"))
        else:
            itemsize = native.itemsize
            step = max(1, CONVERT_CHUNK_BYTES // itemsize)
            raw = np.empty(min(step, info.numel), dtype=native)
            for start in range(0, info.numel, step):
                n = min(step, info.numel - start)
                chunk = raw[:n]
                _read_exact(
                    info.file, info.offset + start * itemsize, n * itemsize, chunk.data.cast("B")
                )
                out[start : start + n] = bf16_to_f32(chunk) if info.dtype == "BF16" else chunk
    except OSError as exc:
        raise _err(
            info.file, f"cannot read tensor {info.name!r}: {exc.strerror or exc}", _REDOWNLOAD
        ) from None
    return out.reshape(info.shape)


def read_rows(
    info: TensorInfo, rows: np.ndarray[Any, Any], dtype: str = "float32"
) -> np.ndarray[Any, Any]:
    """Read selected rows of a 2-D tensor (e.g. embedding lookups) without reading the rest."""
    if len(info.shape) != 2:
        raise ValueError(f"{info.name} is not 2-D")
    n_rows, n_cols = info.shape
    itemsize = DTYPES[info.dtype][0]
    row_bytes = n_cols * itemsize
    np_dtype = np.dtype(DTYPES[info.dtype][1])
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise IndexError(f"row index out of range for {info.name} with {n_rows} rows")
    out = np.empty((rows.size, n_cols), dtype=np_dtype)
    for i, r in enumerate(rows):
        _read_exact(info.file, info.offset + int(r) * row_bytes, row_bytes, out[i].data.cast("B"))
    if info.dtype == "BF16":
        out = bf16_to_f32(out)
    return out.astype(np.dtype(dtype), copy=False)


def read_row_block(
    info: TensorInfo, start: int, stop: int, dtype: str = "float32"
) -> np.ndarray[Any, Any]:
    """Read the contiguous rows ``start:stop`` of a tensor (first axis) with one read."""
    n_rows = info.shape[0]
    start, stop = max(0, start), min(stop, n_rows)
    inner = math.prod(info.shape[1:])
    itemsize = DTYPES[info.dtype][0]
    np_dtype = np.dtype(DTYPES[info.dtype][1])
    out = np.empty((stop - start, *info.shape[1:]), dtype=np_dtype)
    _read_exact(
        info.file,
        info.offset + start * inner * itemsize,
        (stop - start) * inner * itemsize,
        out.reshape(-1).data.cast("B"),
    )
    if info.dtype == "BF16":
        out = bf16_to_f32(out)
    return out.astype(np.dtype(dtype), copy=False)
