"""Issue 12, points 1, 3 and 4 for saved conversations: no lost message after a crash, no
crash on damaged lines, no hang on a FIFO in the history folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amalia_edge.tui.history import ChatMessage, HistoryError, HistoryStore


def _half_written(store: HistoryStore) -> str:
    """A conversation whose last line was cut by a crash mid-write; returns its id."""
    conv = store.new(system="És útil.")
    conv.append(ChatMessage("user", "Primeira pergunta"))
    conv.append(ChatMessage("assistant", "Primeira resposta"))
    line = json.dumps({"type": "message", "role": "user", "content": "perdida"})
    with open(conv.path, "ab") as fh:
        fh.write(line[: len(line) // 2].encode())
    return conv.id


def test_message_after_a_half_written_line_survives_the_next_resume(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    cid = _half_written(store)
    conv = store.open(cid)
    assert [m.content for m in conv.messages] == ["Primeira pergunta", "Primeira resposta"]
    conv.append(ChatMessage("user", "Segunda pergunta"))
    conv.append(ChatMessage("assistant", "Segunda resposta"))
    again = store.open(cid)
    assert [m.content for m in again.messages] == [
        "Primeira pergunta",
        "Primeira resposta",
        "Segunda pergunta",
        "Segunda resposta",
    ]
    assert [m.role for m in again.messages] == ["user", "assistant", "user", "assistant"]


def _log(path: Path, *records: object, raw: bytes = b"") -> None:
    meta = {"type": "meta", "v": 1, "id": path.stem, "created": 1.7e9, "system": "s"}
    lines = [json.dumps(r) for r in (meta, *records)]
    path.write_bytes("\n".join(lines).encode() + b"\n" + raw)


@pytest.mark.parametrize(
    "record",
    [
        {"type": "message", "content": "sem papel"},  # missing role
        {"type": "message", "role": "user", "content": "x", "t": "ontem"},  # non-numeric t
        {"type": "message", "role": "user", "content": "x", "t": 1e300},
        {"type": "message", "role": ["user"], "content": "x"},
        {"type": "message", "role": "user", "content": {"a": 1}},
        {"type": "message", "role": "user", "content": "x", "stats": [1, 2]},
        {"type": "truncate", "keep": "dois"},
        {"type": "truncate"},
        {"type": "system"},
        {"type": "model", "model": {"x": 1}},
    ],
)
def test_damaged_records_cost_the_record_not_the_conversation(tmp_path: Path, record: dict) -> None:
    path = tmp_path / "c1.jsonl"
    _log(path, {"type": "message", "role": "user", "content": "boa"}, record)
    store = HistoryStore(tmp_path)
    conv = store.open("c1")
    assert conv.messages[0].content == "boa"
    assert [s.id for s in store.list()] == ["c1"]


@pytest.mark.parametrize("created", [1e300, "ontem", float("nan"), -5, True, [1]])
def test_bad_created_falls_back_to_the_file_time(tmp_path: Path, created: object) -> None:
    path = tmp_path / "c2.jsonl"
    meta = {"type": "meta", "id": "c2", "created": created}
    path.write_text(json.dumps(meta) + "\n", encoding="utf-8")
    (summary,) = HistoryStore(tmp_path).list()
    assert summary.created == pytest.approx(path.stat().st_mtime)


def test_deeply_nested_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c3.jsonl"
    _log(path, {"type": "message", "role": "user", "content": "ok"}, raw=b"[" * 100_000 + b"\n")
    assert [m.content for m in HistoryStore(tmp_path).open("c3").messages] == ["ok"]


def test_resume_id_cannot_leave_the_history_folder(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    _log(tmp_path / "outside.jsonl")
    with pytest.raises(HistoryError):
        HistoryStore(tmp_path / "h").open("../outside")


_FIFO_SCRIPT = """
import sys
from amalia_edge.tui.history import HistoryStore, HistoryError
store = HistoryStore(sys.argv[1])
print(len(store.list()))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_the_history_folder_is_skipped_not_waited_on(tmp_path: Path) -> None:
    _log(tmp_path / "good.jsonl", {"type": "message", "role": "user", "content": "ok"})
    os.mkfifo(tmp_path / "trap.jsonl")
    # In a subprocess with a timeout: before the fix this blocked forever in open().
    out = subprocess.run(
        [sys.executable, "-c", _FIFO_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": _child_path()},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_appending_to_a_fifo_log_is_refused(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.new(system="s")
    os.mkfifo(conv.path)
    with pytest.raises(HistoryError, match="not a regular file"):
        conv.append(ChatMessage("user", "olá"))


def _child_path() -> str:
    """The child runs the code this test runs: the caller's PYTHONPATH, then the repo."""
    repo = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), repo) if p)
