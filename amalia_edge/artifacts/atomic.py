"""Atomic file writers.

A file appears under its final name only when it is complete: bytes go to a temporary file
beside the target (same directory, so the rename cannot cross file systems), are flushed
and fsynced, and the temporary file is renamed over the target. A crash at any moment leaves
either the old file or the new one, never half of one; a failed write removes its temporary
file and leaves the old file untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from amalia_edge.errors import OutputError

TMP_PREFIX = ".amalia-tmp-"


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, before any threads start.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; published files get the mode a plain open() would give them.
_FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some file systems refuse O_RDONLY on directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def os_error_message(exc: OSError, target: Path) -> OutputError:
    """Turn an OSError while writing ``target`` into a one-line error with the fix."""
    if exc.errno == errno.ENOSPC:
        return OutputError(
            f"the disk filled up while writing {target}",
            fix="free some space (or choose another --out) and run the command again",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(
            f"cannot write to {target.parent}: {exc.strerror}",
            fix="choose a writable output directory (--out) or fix its permissions",
        )
    return OutputError(f"writing {target} failed: {exc.strerror or exc}", fix="check the disk")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``target`` for a writer that wants a file name (GGUFWriter,
    llama.cpp's quantizer); on clean exit it is fsynced and renamed into place.

    On any exception the temporary file is removed and ``target`` is left as it was.
    ``OSError`` is re-raised as :class:`OutputError` with a message a person can act on.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=target.name, dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error_message(exc, target) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error_message(exc, target) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``target``; on clean exit, fsync and rename it into place
    (see :func:`atomic_path`)."""
    if "w" not in mode:
        raise ValueError("atomic_open only writes")
    with (
        atomic_path(target) as tmp,
        open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh,
    ):
        yield fh


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_open(target, "w") as fh:
        fh.write(text)


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files a killed run left in ``directory``; return what was removed."""
    removed = []
    for p in Path(directory).glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
