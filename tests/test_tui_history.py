"""Conversation history: append-only JSONL log, crash tolerance, list, resume, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amalia_edge.tui.history import (
    HISTORY_DIR_ENV,
    ChatMessage,
    HistoryError,
    HistoryStore,
    default_history_dir,
)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_file_appears_with_first_message_and_each_change_is_one_line(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.new(system="És útil.", model="demo")
    assert not conv.path.exists() and store.list() == []  # no empty conversations left behind

    conv.append(ChatMessage("user", "Olá, tudo bem?"))
    assert [r["type"] for r in _records(conv.path)] == ["meta", "message"]
    conv.append(ChatMessage("assistant", "Tudo ótimo!", stats={"decode_tps": 12.5}))
    conv.set_system("Responde em inglês.")
    conv.set_model("other.gguf")
    recs = _records(conv.path)
    assert [r["type"] for r in recs] == ["meta", "message", "message", "system", "model"]
    assert recs[0]["system"] == "És útil." and recs[2]["stats"] == {"decode_tps": 12.5}


def test_reopen_replays_truncate_system_and_model(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.new(system="A", model="m1")
    for role, text in [("user", "um"), ("assistant", "1"), ("user", "dois"), ("assistant", "2")]:
        conv.append(ChatMessage(role, text))
    conv.truncate(3)  # regenerate the last reply
    conv.append(ChatMessage("assistant", "2 bis"))
    conv.set_system("B")
    conv.set_model("m2")

    again = store.open(conv.id)
    assert [(m.role, m.content) for m in again.messages] == [
        ("user", "um"),
        ("assistant", "1"),
        ("user", "dois"),
        ("assistant", "2 bis"),
    ]
    assert (again.system, again.model, again.title) == ("B", "m2", "um")
    # Changes after resuming go to the same file.
    again.append(ChatMessage("user", "três"))
    assert store.open(conv.id).messages[-1].content == "três"


def test_half_written_last_line_is_skipped(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.new(system="S")
    conv.append(ChatMessage("user", "pergunta"))
    conv.append(ChatMessage("assistant", "resposta"))
    with conv.path.open("ab") as fh:  # what a kill in the middle of os.write leaves
        fh.write(b'{"type": "message", "role": "user", "content": "incomp')
    again = store.open(conv.id)
    assert [m.content for m in again.messages] == ["pergunta", "resposta"]


def test_list_is_newest_first_and_skips_foreign_files(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    old = store.new(system="S")
    old.append(ChatMessage("user", "antiga " * 30))
    new = store.new(system="S")
    new.append(ChatMessage("user", "nova"))
    os.utime(old.path, (1_000_000, 1_000_000))
    for m in old.messages:  # make the old one old by its own timestamps too
        m.t = 1_000_000
    (tmp_path / "notes.jsonl").write_text('{"type": "message"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    listed = store.list()
    assert [s.id for s in listed][:1] == [new.id]
    assert {s.id for s in listed} == {old.id, new.id}
    by_id = {s.id: s for s in listed}
    assert by_id[new.id].title == "nova" and by_id[new.id].n_messages == 1
    assert len(by_id[old.id].title) == 60 and by_id[old.id].title.endswith("…")


def test_open_unknown_raises_with_fix(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="F3"):
        HistoryStore(tmp_path).open("nope")


def test_export_markdown_is_atomic_and_labelled(tmp_path: Path) -> None:
    conv = HistoryStore(tmp_path / "h").new(system="És útil.", model="demo.gguf")
    conv.append(ChatMessage("user", "Qual é a capital de Portugal?"))
    conv.append(ChatMessage("assistant", "**Lisboa**."))
    target = tmp_path / "out" / "conv.md"
    path = conv.export_markdown(target, {"user": "Tu", "assistant": "Modelo", "title": "Conversa"})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Conversa: Qual é a capital de Portugal?\n")
    assert "## Tu\n\nQual é a capital de Portugal?\n" in text
    assert "## Modelo\n\n**Lisboa**.\n" in text and "`demo.gguf`" in text
    assert [p.name for p in target.parent.iterdir()] == ["conv.md"]  # no temporary left


def test_history_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(HISTORY_DIR_ENV, str(tmp_path / "x"))
    assert default_history_dir() == tmp_path / "x"
    assert HistoryStore().root == tmp_path / "x"
    monkeypatch.delenv(HISTORY_DIR_ENV)
    assert default_history_dir().parts[-2:] == ("amalia-edge", "conversations")
