"""``manifest.json``: what an artifacts directory holds, and where it came from.

Schema (``schema: 1``)::

    {
      "schema": 1,
      "model":    {"name", "architecture", "params", "vocab_size", "context_length", ...},
      "source":   {"path", "fingerprint"},
      "versions": {"amalia_edge", "gguf", "llama_cpp_python", ...},
      "artifacts": [
        {"kind": "gguf" | "onnx" | "tensorrt", "quant", "file", "size", "sha256", "bpw",
         "params", "source_fingerprint", "versions", "quality"?, ...extra keys}
      ]
    }

``file`` is relative to the directory holding the manifest and must stay inside it
(:func:`check_relative`); ``source.path`` and ``source.imatrix.file`` are relative to that
directory too, so the same build in two folders gives byte-identical manifests. Extra keys
of an artifact (for example the imatrix an i-quant was made with, or an ONNX model's external
data files) are kept in :attr:`ArtifactEntry.extra` and written back unchanged, so a reader
that does not know them loses nothing.

The manifest is written last and atomically (:func:`Manifest.write`): an artifacts directory
whose manifest lists a file holds that file complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.artifacts.atomic import atomic_write_json
from amalia_edge.errors import AmaliaEdgeError, ArtifactError
from amalia_edge.safeio import MAX_JSON_BYTES, loads_json, read_regular_bytes

MANIFEST_NAME = "manifest.json"
SCHEMA = 1
_HASH_CHUNK = 8 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_ENTRY_KEYS = (
    "kind",
    "quant",
    "file",
    "size",
    "sha256",
    "bpw",
    "params",
    "source_fingerprint",
    "versions",
    "quality",
)


@dataclass
class ArtifactEntry:
    """One file (or one model made of files) in an artifacts directory."""

    kind: str
    quant: str
    file: str
    size: int
    sha256: str
    bpw: float | None = None
    params: int | None = None
    source_fingerprint: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in _ENTRY_KEYS}
        if d["quality"] is None:
            del d["quality"]
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactEntry:
        if not isinstance(d, dict):
            raise ValueError("an artifact entry is not an object")
        missing = [k for k in ("kind", "quant", "file", "size", "sha256") if k not in d]
        if missing:
            raise ValueError(f"artifact entry lacks {', '.join(missing)}")
        for key in ("kind", "quant", "file", "sha256"):
            if not isinstance(d[key], str):
                raise ValueError(f"artifact {key} is not a string")
        if isinstance(d["size"], bool) or not isinstance(d["size"], int) or d["size"] < 0:
            raise ValueError("artifact size is not a byte count")
        check_relative(d["file"])
        if "data_file" in d:
            check_relative(d["data_file"])
        for key in ("versions", "extra_files"):
            if key in d and not isinstance(d[key], (dict, list)):
                raise ValueError(f"artifact {key} is malformed")
        known = {k: d[k] for k in _ENTRY_KEYS if k in d}
        extra = {k: v for k, v in d.items() if k not in _ENTRY_KEYS}
        return cls(**known, extra=extra)

    def verify(self, directory: str | os.PathLike[str], *, check_hash: bool = True) -> bool:
        """True when the file is there with the recorded size (and sha256 when asked)."""
        try:
            path = Path(directory) / check_relative(self.file)
        except ValueError:
            return False
        try:
            if path.stat().st_size != self.size:
                return False
        except OSError:
            return False
        return not check_hash or sha256_file(path) == self.sha256


@dataclass
class Manifest:
    """The manifest of one artifacts directory."""

    model: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    schema: int = SCHEMA

    def find(self, kind: str, quant: str) -> ArtifactEntry | None:
        """The entry of ``kind`` (gguf, onnx, tensorrt) and ``quant`` (case-insensitive)."""
        quant = quant.upper()
        for entry in self.artifacts:
            if entry.kind == kind and entry.quant.upper() == quant:
                return entry
        return None

    def upsert(self, entry: ArtifactEntry) -> None:
        """Add ``entry``, replacing an entry of the same kind and quant."""
        self.artifacts = [
            a
            for a in self.artifacts
            if not (a.kind == entry.kind and a.quant.upper() == entry.quant.upper())
        ]
        self.artifacts.append(entry)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": self.model,
            "source": self.source,
            "versions": self.versions,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/manifest.json`` atomically; return its path."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_json(path, self.to_dict())
        # The temporary file atomic_write_json renames is created 0600; others read manifests.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)
        return path

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, dict) or not isinstance(d.get("artifacts", []), list):
            raise ValueError("not a manifest object")
        schema = d.get("schema", SCHEMA)
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise ValueError(f"schema {schema!r} is not a number")
        if schema > SCHEMA:
            raise ValueError(f"schema {d.get('schema')} is newer than this amalia-edge ({SCHEMA})")
        return cls(
            model=dict(d.get("model") or {}),
            source=dict(d.get("source") or {}),
            versions=dict(d.get("versions") or {}),
            artifacts=[ArtifactEntry.from_dict(a) for a in d.get("artifacts", [])],
            schema=int(d.get("schema", SCHEMA)),
        )


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read ``directory/manifest.json``.

    Raises :class:`ArtifactError` when it is missing or unreadable, naming the fix.
    """
    path = Path(directory) / MANIFEST_NAME
    rebuild = "run `amalia-edge quantize --force` to rebuild the directory"
    if Path(directory).is_file():
        raise ArtifactError(
            f"{directory} is a file, not an artifacts directory",
            fix="pass the folder `amalia-edge quantize --out` wrote (it holds manifest.json)",
        )
    try:
        raw = read_regular_bytes(path, ArtifactError, limit=MAX_JSON_BYTES)
    except FileNotFoundError:
        raise ArtifactError(
            f"{directory} has no {MANIFEST_NAME}",
            fix="run `amalia-edge quantize --out DIR` first, or point to the directory it wrote",
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot read {path}: {exc.strerror}", fix="check permissions"
        ) from None
    doc = loads_json(raw, path, ArtifactError, fix=rebuild)
    try:
        return Manifest.from_dict(doc)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ArtifactError(
            f"{path} is not a valid manifest ({exc})",
            fix=rebuild,
        ) from None


def check_relative(name: Any) -> str:
    """``name`` if it is a plain relative path that stays inside the artifacts folder.

    An absolute path, a ``..`` component or a backslash raises ``ValueError``: a manifest
    names files of its own folder only, never something elsewhere on the disk.
    """
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        raise ValueError(f"artifact file {name!r} is not a relative file name")
    if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"artifact file {name!r} is outside the artifacts folder")
    return name


# -- change detection -------------------------------------------------------------------------
# A file whose size differs from the manifest is refused at once. A file of the right size is
# hashed once; the (real path, size, mtime, inode) stamp it had when its sha256 matched is
# remembered in the user cache, so later loads cost one stat(). `quantize` records the stamp
# of every file it writes, so a fresh build is never re-hashed.

VERIFIED_FILE = "verified-artifacts.json"
_VERIFIED_MAX = 1024


def _verified_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("amalia-edge", appauthor=False)) / VERIFIED_FILE


def _stamp(path: Path) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _load_verified() -> dict[str, str]:
    try:
        doc = json.loads(read_regular_bytes(_verified_path(), ArtifactError, limit=1 << 20))
    except (OSError, ValueError, RecursionError, ArtifactError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, str)}


def remember_verified(path: str | os.PathLike[str], sha256: str) -> None:
    """Record that ``path``, as it is now, has ``sha256`` (best effort: never raises)."""
    # A cache that cannot be written only costs a re-hash next time.
    with contextlib.suppress(OSError, AmaliaEdgeError):
        stamp = _stamp(Path(path))
        seen = _load_verified()
        seen.pop(stamp, None)
        seen[stamp] = sha256
        while len(seen) > _VERIFIED_MAX:
            seen.pop(next(iter(seen)))
        atomic_write_json(_verified_path(), seen)


def artifact_problem(directory: str | os.PathLike[str], entry: ArtifactEntry) -> str | None:
    """Why ``entry``'s file in ``directory`` cannot be used as built, or None when it can.

    Missing, not a regular file, a size other than the manifest's, or, for a GGUF (checked
    once per file state, see above), a sha256 other than the manifest's.
    """
    try:
        path = Path(directory) / check_relative(entry.file)
    except ValueError as exc:
        return str(exc)
    try:
        st = os.stat(path)
    except OSError:
        return f"{entry.file} is missing"
    if not stat.S_ISREG(st.st_mode):
        return f"{entry.file} is not a regular file"
    if st.st_size != entry.size:
        return (
            f"{entry.file} is {st.st_size:,} bytes but manifest.json says {entry.size:,}: it "
            "changed after it was built (re-run `amalia-edge quantize --out` for this folder)"
        )
    if entry.kind != "gguf":
        return None  # ONNX and TensorRT artifacts are checked by their own loaders
    try:
        stamp = _stamp(path)
        if _load_verified().get(stamp) == entry.sha256:
            return None
        digest = sha256_file(path)
    except OSError as exc:
        return f"{entry.file} cannot be read ({exc.strerror})"
    if digest != entry.sha256:
        return (
            f"{entry.file} does not match the sha256 in manifest.json: it changed after it was "
            "built (re-run `amalia-edge quantize --out` for this folder)"
        )
    remember_verified(path, digest)
    return None
