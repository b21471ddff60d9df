"""Conversation history: saved as it happens, listed, resumed, exported to Markdown.

Each conversation is one JSON Lines file ``<id>.jsonl`` in the history directory
(``$AMALIA_EDGE_HISTORY_DIR`` if set, else ``<platformdirs user data dir>/amalia-edge/
conversations``). The file is an append-only log of records, each written, flushed and
fsynced the moment it happens:

- ``{"type": "meta", "v": 1, "id", "created", "model", "system"}``: the first line;
- ``{"type": "message", "role", "content", "t", "stats"}``: a finished message;
- ``{"type": "truncate", "keep": n}``: regenerate / edit dropped messages n and later;
- ``{"type": "system", "content"}``: the system prompt changed;
- ``{"type": "model", "model"}``: the model was switched.

Because nothing is ever rewritten, a crash or ``kill -9`` loses at most the reply that was
being generated (it is only appended once finished) and at worst leaves half of the last
line, which :meth:`HistoryStore.open` skips. The file is created with the first message, so
an opened-and-closed app leaves no empty conversations behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.artifacts.atomic import atomic_write_text, os_error_message
from amalia_edge.errors import AmaliaEdgeError
from amalia_edge.safeio import read_regular_bytes

log = logging.getLogger(__name__)

HISTORY_DIR_ENV = "AMALIA_EDGE_HISTORY_DIR"
FORMAT_VERSION = 1
TITLE_CHARS = 60


class HistoryError(AmaliaEdgeError):
    """A saved conversation is missing or unreadable."""


def default_history_dir() -> Path:
    """``$AMALIA_EDGE_HISTORY_DIR``, else the per-user data directory (XDG on Linux)."""
    override = os.environ.get(HISTORY_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("amalia-edge", appauthor=False)) / "conversations"


@dataclass
class ChatMessage:
    """One finished message. ``stats`` (assistant replies only) holds the reply's timings."""

    role: str  # "user" | "assistant"
    content: str
    t: float = field(default_factory=time.time)
    stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    n_messages: int
    created: float
    updated: float
    path: Path


def _new_id() -> str:
    # Sortable by creation time, unique across two apps started in the same second.
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class Conversation:
    """A conversation in memory, mirrored to its JSONL log as each change happens."""

    def __init__(
        self,
        path: Path,
        *,
        id: str,
        system: str,
        model: str | None = None,
        created: float | None = None,
        messages: list[ChatMessage] | None = None,
    ) -> None:
        self.path = path
        self.id = id
        self.system = system
        self.model = model
        self.created = time.time() if created is None else created
        self.messages: list[ChatMessage] = messages or []
        self.updated = self.created

    @property
    def title(self) -> str:
        for m in self.messages:
            if m.role == "user" and m.content.strip():
                line = " ".join(m.content.split())
                return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"
        return ""

    # -- changes (each one is appended to the log before it returns) --------------------------

    def append(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self._log({"type": "message", **asdict(message)})

    def truncate(self, keep: int) -> list[ChatMessage]:
        """Drop messages from index ``keep`` on (regenerate, edit-and-resend); return them."""
        dropped = self.messages[keep:]
        if dropped:
            del self.messages[keep:]
            self._log({"type": "truncate", "keep": keep})
        return dropped

    def set_system(self, text: str) -> None:
        if text != self.system:
            self.system = text
            if self.path.exists():
                self._log({"type": "system", "content": text})

    def set_model(self, model: str | None) -> None:
        if model != self.model:
            self.model = model
            if self.path.exists():
                self._log({"type": "model", "model": model})

    def _log(self, record: dict[str, Any]) -> None:
        self.updated = time.time()
        lines = []
        if not self.path.exists():
            lines.append(self._meta())
        lines.append(record)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: each write lands at the end even if two apps share a file by mistake.
            # O_NONBLOCK + fstat: a FIFO in place of the log is refused, never waited on.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o600)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise HistoryError(
                        f"{self.path} is not a regular file",
                        fix="move it out of the history folder",
                    )
                os.set_blocking(fd, True)
                # A crash can leave half a line at the end: start on a fresh line, or this
                # record would be glued to it and skipped with it on every later resume.
                if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                    data = "\n" + data
                os.write(fd, data.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise os_error_message(exc, self.path) from None

    def _meta(self) -> dict[str, Any]:
        return {
            "type": "meta",
            "v": FORMAT_VERSION,
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "system": self.system,
        }

    # -- export -------------------------------------------------------------------------------

    def to_markdown(self, labels: dict[str, str] | None = None) -> str:
        """The conversation as Markdown; ``labels`` maps roles and headings to display names."""
        lab = {
            "user": "User",
            "assistant": "Assistant",
            "system": "System",
            "title": "Conversation",
            "model": "Model",
            "date": "Date",
            **(labels or {}),
        }
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))
        out = [f"# {lab['title']}: {self.title or self.id}", ""]
        out.append(f"- {lab['date']}: {when}")
        if self.model:
            out.append(f"- {lab['model']}: `{self.model}`")
        out += ["", f"## {lab['system']}", "", self.system.strip(), ""]
        for m in self.messages:
            out += [f"## {lab.get(m.role, m.role)}", "", m.content.rstrip(), ""]
        return "\n".join(out).rstrip() + "\n"

    def export_markdown(
        self, target: str | os.PathLike[str], labels: dict[str, str] | None = None
    ) -> Path:
        """Write :meth:`to_markdown` to ``target`` atomically; return the path written."""
        target = Path(target)
        atomic_write_text(target, self.to_markdown(labels))
        return target


class HistoryStore:
    """The directory of saved conversations."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_history_dir()

    def new(self, *, system: str, model: str | None = None) -> Conversation:
        """A new conversation; its file appears with the first message."""
        cid = _new_id()
        return Conversation(self.root / f"{cid}.jsonl", id=cid, system=system, model=model)

    def list(self) -> list[ConversationSummary]:
        """Saved conversations, most recently changed first; unreadable files are skipped."""
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.glob("*.jsonl"):
            try:
                conv = self._read(path)
            except HistoryError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            out.append(
                ConversationSummary(
                    id=conv.id,
                    title=conv.title,
                    n_messages=len(conv.messages),
                    created=conv.created,
                    updated=conv.updated,
                    path=path,
                )
            )
        out.sort(key=lambda s: (s.updated, s.id), reverse=True)
        return out

    def open(self, conversation_id: str) -> Conversation:
        """Replay a conversation's log; later changes append to the same file."""
        path = self.root / f"{conversation_id}.jsonl"
        if "/" in conversation_id or "\\" in conversation_id or not path.is_file():
            raise HistoryError(
                f"no saved conversation {conversation_id!r} in {self.root}",
                fix="pick one from the history list (F3)",
            )
        return self._read(path)

    def _read(self, path: Path) -> Conversation:
        # Every field of every record is checked: the file is user data (hand-edited, copied
        # from another version, damaged), and a bad field must cost that record, not the app.
        try:
            raw = read_regular_bytes(path, HistoryError, limit=MAX_LOG_BYTES)
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise HistoryError(
                f"cannot read {path}: {exc.strerror}", fix="check its permissions"
            ) from None
        records = list(_parse_lines(raw.split(b"\n"), path))
        if not records or records[0].get("type") != "meta":
            raise HistoryError(
                f"{path} is not a conversation log", fix="move it out of the history folder"
            )
        meta = records[0]
        conv = Conversation(
            path,
            id=_str(meta.get("id")) or path.stem,
            system=_str(meta.get("system")),
            model=_str(meta.get("model")) or None,
            created=_time(meta.get("created"), mtime),
        )
        updated = conv.created
        for rec in records[1:]:
            kind = rec.get("type")
            if kind == "message":
                role, content = rec.get("role"), rec.get("content")
                if role not in ("user", "assistant") or not isinstance(content, str):
                    log.warning("%s: skipping a message without a valid role and content", path)
                    continue
                stats = rec.get("stats")
                msg = ChatMessage(
                    role=role,
                    content=content,
                    t=_time(rec.get("t"), updated),
                    stats=stats if isinstance(stats, dict) else None,
                )
                conv.messages.append(msg)
                updated = max(updated, msg.t)
            elif kind == "truncate":
                keep = rec.get("keep")
                if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0:
                    del conv.messages[keep:]
            elif kind == "system":
                conv.system = _str(rec.get("content"))
            elif kind == "model":
                conv.model = _str(rec.get("model")) or None
        conv.updated = max(updated, _time(mtime, conv.created))
        return conv


# A conversation log larger than this is not one this app wrote (a long chat is ~1 MB).
MAX_LOG_BYTES = 256 << 20
# Timestamps outside [1970, 9999] are damage: time.localtime() raises on them.
_MAX_TIME = 253402300799.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _time(value: Any, default: float) -> float:
    """A saved timestamp, or ``default`` when it is not a plausible one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        t = float(value)
        if math.isfinite(t) and 0.0 <= t <= _MAX_TIME:
            return t
    return default


def _parse_lines(lines: Iterable[bytes], path: Path) -> Iterable[dict[str, Any]]:
    items = [line for line in lines if line.strip()]
    for i, line in enumerate(items):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            # Only the last line can be half-written (a kill during the write); anything
            # else is damage worth a warning, but the rest of the conversation is still good.
            if i != len(items) - 1:
                log.warning("%s: skipping unreadable line %d", path, i + 1)
            continue
        if isinstance(rec, dict):
            yield rec
