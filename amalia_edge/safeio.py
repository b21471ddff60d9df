"""Reading untrusted files without hanging or crashing.

Every path a user hands amalia-edge (a checkpoint's JSON files, safetensors, a GGUF, a
manifest, a saved conversation) goes through these helpers:

* :func:`open_regular` opens with ``O_NONBLOCK`` and checks ``fstat`` before reading, so a
  FIFO, socket or device named like a model file is refused in one line instead of blocking
  the process forever (a FIFO with no writer blocks a plain ``open()``);
* :func:`loads_json` turns every way JSON can fail (bad UTF-8, syntax, nesting deep enough to
  hit ``RecursionError``, a top level of the wrong type) into the caller's one-line error.

The caller passes the :class:`~amalia_edge.errors.AmaliaEdgeError` subclass and fix to use, so
each module keeps its own error family and wording.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any

from amalia_edge.errors import AmaliaEdgeError

#: Largest JSON side file read whole (config.json, tokenizer_config.json, manifest.json,
#: tokenizer.json of a 256k-token vocabulary is ~20 MB).
MAX_JSON_BYTES = 256 << 20


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def not_regular_error(
    path: str | os.PathLike[str], mode: int, error: type[AmaliaEdgeError]
) -> AmaliaEdgeError:
    return error(f"{path} is {_kind(mode)}, not a regular file", fix="pass the real file")


def check_regular(path: str | os.PathLike[str], error: type[AmaliaEdgeError]) -> os.stat_result:
    """``os.stat(path)``, raising ``error`` when it is not a regular file (follows symlinks).

    A missing file raises :class:`FileNotFoundError` as usual, for the caller's own message.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise not_regular_error(path, st.st_mode, error)
    return st


def open_regular(
    path: str | os.PathLike[str], error: type[AmaliaEdgeError], *, text: bool = False
) -> IO[Any]:
    """Open ``path`` for reading without ever blocking on a FIFO; refuse non-regular files.

    ``O_NONBLOCK`` makes ``open()`` of a FIFO return at once; ``fstat`` on the open descriptor
    then decides (no race with a rename between the check and the open). The flag is cleared
    again so reads of a regular file behave normally. ``OSError`` propagates to the caller.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular_error(path, st.st_mode, error)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        if text:
            return os.fdopen(fd, "r", encoding="utf-8")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(
    path: str | os.PathLike[str], error: type[AmaliaEdgeError], *, limit: int | None = None
) -> bytes:
    """The bytes of the regular file ``path`` (refusing more than ``limit`` bytes)."""
    with open_regular(path, error) as fh:
        if limit is not None:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise error(
                    f"{path} is {size:,} bytes, more than the {limit:,} this file can hold",
                    fix="check that it is the right file",
                )
        data: bytes = fh.read()
    return data


def loads_json(
    data: bytes | str,
    where: str | os.PathLike[str],
    error: type[AmaliaEdgeError],
    *,
    fix: str,
    expect: type | None = dict,
) -> Any:
    """Parse JSON from untrusted bytes; every failure is ``error`` naming ``where``.

    ``expect``: the type the top level must have (``dict`` by default; ``None`` = any).
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise error(
            f"{where} is not valid JSON (not UTF-8: invalid byte at offset {exc.start})", fix=fix
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"{where} is not valid JSON: malformed JSON at line {exc.lineno} column "
            f"{exc.colno} ({exc.msg})",
            fix=fix,
        ) from None
    except RecursionError:
        raise error(f"{where} is not valid JSON: nested too deeply", fix=fix) from None
    except ValueError as exc:  # e.g. an integer of more digits than int() accepts
        raise error(f"{where} is not valid JSON ({exc})", fix=fix) from None
    if expect is not None and not isinstance(doc, expect):
        want = "object" if expect is dict else expect.__name__
        raise error(f"{where} is not a JSON {want} (it holds a {type(doc).__name__})", fix=fix)
    return doc


def load_json_file(
    path: str | os.PathLike[str],
    error: type[AmaliaEdgeError],
    *,
    fix: str,
    expect: type | None = dict,
    limit: int = MAX_JSON_BYTES,
) -> Any:
    """:func:`read_regular_bytes` + :func:`loads_json`; ``OSError`` becomes ``error``."""
    try:
        raw = read_regular_bytes(path, error, limit=limit)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}", fix=fix) from None
    return loads_json(raw, Path(path), error, fix=fix, expect=expect)


__all__ = [
    "MAX_JSON_BYTES",
    "check_regular",
    "load_json_file",
    "loads_json",
    "open_regular",
    "read_regular_bytes",
]
