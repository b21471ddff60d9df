"""Read a GGUF file's header (metadata + tensor table) without touching tensor data.

``gguf.GGUFReader`` builds a numpy view for every metadata element, which for a 128k-token
vocabulary takes tens of seconds on a small CPU (measured 29 s on the shared 2-core dev
box); selection needs only a few scalars and the tensor table, so this reader walks the
header with ``struct`` and skips arrays by length. Type codes and block sizes come from the
``gguf`` package (``GGUFValueType``, ``GGML_QUANT_SIZES``), so they follow llama.cpp.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (v2 and v3; v1 used
32-bit counts and is refused like llama.cpp does).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.errors import ArtifactError
from amalia_edge.safeio import open_regular

GGUF_MAGIC = b"GGUF"
_NOT_GGUF_FIX = "pass a .gguf model or an artifacts directory made by `amalia-edge quantize`"
DEFAULT_ALIGNMENT = 32  # gguf.md: "general.alignment" defaults to 32
# Arrays up to this many elements are kept as values; longer ones (vocabularies) only counted.
_MAX_KEPT_ARRAY = 64


class TruncatedGGUF(Exception):
    pass


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    type_name: str
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # scalars, strings and short arrays
    array_lengths: dict[str, int]  # every array key → its element count
    tensors: list[TensorEntry] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_int(self, key: str) -> int | None:
        """``{arch}.{key}`` as int (first element when llama.cpp allows a per-layer array)."""
        v = self.metadata.get(f"{self.architecture}.{key}")
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        # A damaged header can hold a float NaN/inf (or a negative count) for any of these.
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return int(v) if v >= 0 else None

    @property
    def data_end(self) -> int:
        """Bytes the file must have to hold every tensor."""
        end = max((t.offset + t.nbytes for t in self.tensors), default=0)
        return self.data_offset + end

    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


class _Reader:
    """Positional reads over the file's bytes (an mmap: only the header pages are touched)."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise TruncatedGGUF
        b = bytes(self.buf[self.pos : end])
        self.pos = end
        return b

    def unpack(self, fmt: str, width: int) -> Any:
        if self.pos + width > self.size:
            raise TruncatedGGUF
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += width
        return v

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> str:
        n = self.u64()
        if n > 1 << 30:  # no metadata string is a GiB: the file is corrupt
            raise ValueError(f"string length {n}")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, size, unpack_from = self.buf, self.pos, self.size, struct.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise TruncatedGGUF
            pos += 8 + unpack_from("<Q", buf, pos)[0]
        if pos > size:
            raise TruncatedGGUF
        self.pos = pos

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise TruncatedGGUF
        self.pos += n


def _scalar_formats() -> dict[int, str]:
    from gguf import GGUFValueType as T

    return {
        T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I",
        T.INT32: "<i", T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q",
        T.FLOAT64: "<d",
    }  # fmt: skip


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse the header of ``path``; raise :class:`ArtifactError` naming what is wrong.

    Checks the magic, the version, that the header parses, and that the file is long enough
    to hold every tensor the header lists (a truncated download or copy).
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

    path = Path(path)
    fmts = _scalar_formats()
    try:
        with open_regular(path, ArtifactError) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 4 or fh.read(4) != GGUF_MAGIC:
                fh.seek(0)
                magic = fh.read(4)
                raise ArtifactError(
                    f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')",
                    fix=_NOT_GGUF_FIX,
                )
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            r = _Reader(buf)
            r.skip(4)
            version = r.u32()
            if version not in (2, 3):
                raise ArtifactError(
                    f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3",
                    fix="re-convert the model with `amalia-edge quantize`",
                )
            n_tensors, n_kv = r.u64(), r.u64()
            meta: dict[str, Any] = {}
            lengths: dict[str, int] = {}
            for _ in range(n_kv):
                key = r.string()
                vtype = r.u32()
                if vtype == GGUFValueType.ARRAY:
                    etype, count = r.u32(), r.u64()
                    lengths[key] = count
                    if etype == GGUFValueType.STRING:
                        kept = [r.string() for _ in range(min(count, _MAX_KEPT_ARRAY))]
                        r.skip_strings(count - len(kept))
                        if count <= _MAX_KEPT_ARRAY:
                            meta[key] = kept
                    elif etype in fmts:
                        width = struct.calcsize(fmts[etype])
                        if count <= _MAX_KEPT_ARRAY:
                            fmt = "<" + fmts[etype][1] * count
                            meta[key] = list(struct.unpack(fmt, r.read(width * count)))
                        else:
                            r.skip(width * count)
                    else:
                        raise ValueError(f"array of type {etype} in {key}")
                elif vtype == GGUFValueType.STRING:
                    meta[key] = r.string()
                elif vtype in fmts:
                    fmt = fmts[vtype]
                    meta[key] = struct.unpack(fmt, r.read(struct.calcsize(fmt)))[0]
                else:
                    raise ValueError(f"value type {vtype} for key {key}")
            tensors = []
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.u32()
                if n_dims > 4:  # GGML_MAX_DIMS
                    raise ValueError(f"tensor {name} has {n_dims} dimensions")
                shape = tuple(r.u64() for _ in range(n_dims))
                ttype, offset = r.u32(), r.u64()
                try:
                    qt = GGMLQuantizationType(ttype)
                except ValueError:
                    raise ValueError(f"tensor {name} has unknown type {ttype}") from None
                block, type_size = GGML_QUANT_SIZES[qt]
                n = 1
                for d in shape:
                    n *= d
                tensors.append(
                    TensorEntry(name, shape, ttype, qt.name, offset, n // block * type_size)
                )
            alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
            # gguf.md: a uint32, non-zero power of two. Anything else (inf, an array) used to
            # crash int() here; llama.cpp refuses such files too (gguf.cpp, gguf_init).
            if (
                isinstance(alignment, bool)
                or not isinstance(alignment, int)
                or alignment <= 0
                or alignment & (alignment - 1)
            ):
                raise ValueError(f"general.alignment {alignment!r} is not a power of two")
            pos = r.pos
            data_offset = (pos + alignment - 1) // alignment * alignment
        finally:
            buf.close()
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} does not exist", fix="check the path (a .gguf file or an artifacts directory)"
        ) from None
    except IsADirectoryError:
        raise ArtifactError(
            f"{path} is a directory, not a GGUF file", fix="check the path"
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot read {path}: {exc.strerror}", fix="check permissions"
        ) from None
    except TruncatedGGUF:
        raise ArtifactError(
            f"{path} is truncated (the file ends inside its GGUF header)",
            fix="copy or download it again, or re-run `amalia-edge quantize`",
        ) from None
    except (ValueError, UnicodeDecodeError, struct.error, KeyError, OverflowError) as exc:
        raise ArtifactError(
            f"{path} has a corrupt GGUF header ({exc})",
            fix="copy or download it again, or re-run `amalia-edge quantize`",
        ) from None
    header = GGUFHeader(path, version, meta, lengths, tensors, data_offset, size)
    if header.data_end > size:
        raise ArtifactError(
            f"{path} is truncated: its tensors need {header.data_end:,} bytes but the file has "
            f"{size:,}",
            fix="copy or download it again, or re-run `amalia-edge quantize`",
        )
    return header
