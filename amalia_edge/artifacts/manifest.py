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

``file`` is relative to the directory holding the manifest. Extra keys of an artifact (for
example the imatrix an i-quant was made with, or an ONNX model's external data files) are
kept in :attr:`ArtifactEntry.extra` and written back unchanged, so a reader that does not know
them loses nothing.

The manifest is written last and atomically (:func:`Manifest.write`): an artifacts directory
whose manifest lists a file holds that file complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.artifacts.atomic import atomic_write_json
from amalia_edge.errors import ArtifactError

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
        missing = [k for k in ("kind", "quant", "file", "size", "sha256") if k not in d]
        if missing:
            raise ValueError(f"artifact entry lacks {', '.join(missing)}")
        known = {k: d[k] for k in _ENTRY_KEYS if k in d}
        extra = {k: v for k, v in d.items() if k not in _ENTRY_KEYS}
        return cls(**known, extra=extra)

    def verify(self, directory: str | os.PathLike[str], *, check_hash: bool = True) -> bool:
        """True when the file is there with the recorded size (and sha256 when asked)."""
        path = Path(directory) / self.file
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
        if d.get("schema", SCHEMA) > SCHEMA:
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(
            f"{directory} has no {MANIFEST_NAME}",
            fix="run `amalia-edge quantize --out DIR` first, or point to the directory it wrote",
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot read {path}: {exc.strerror}", fix="check permissions"
        ) from None
    try:
        return Manifest.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise ArtifactError(
            f"{path} is not a valid manifest ({exc})",
            fix="run `amalia-edge quantize --force` to rebuild the directory",
        ) from None
