"""Chat flows that need a model to misbehave on cue: a scripted one (see test_tui_snapshots).

Everything else about the app runs for real; the llama.cpp-backed flows are in test_tui_app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amalia_edge.tui.history import HistoryStore
from amalia_edge.tui.settings import ModelSpec
from tests.test_tui_app import RecordingApp, aio, saved, send, views
from tests.test_tui_snapshots import ScriptedModel, scripted_loader, settle


def make(tmp_path: Path, model: ScriptedModel) -> RecordingApp:
    return RecordingApp(
        ModelSpec("scripted"),
        store=HistoryStore(tmp_path),
        loader=scripted_loader(model),
        monitor=None,
    )


@aio
async def test_backend_failure_mid_reply_leaves_the_app_usable(tmp_path: Path) -> None:
    model = ScriptedModel(fail_after=3)
    app = RecordingApp(
        ModelSpec("scripted"),
        store=HistoryStore(tmp_path),
        loader=scripted_loader(model),
        monitor=None,
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Olá")
        await settle(app, pilot)
        assert any(sev == "error" and "scripted backend failure" in n for n, sev in app.notes)
        assert views(app) == [("user", "Olá")] and saved(app) == [("user", "Olá")]
        model.fail_after = None
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert [r for r, _ in saved(app)] == ["user", "assistant"]


@aio
async def test_new_chat_during_a_reply_saves_it_in_its_own_conversation(tmp_path: Path) -> None:
    model = ScriptedModel(delay=0.03)
    app = make(tmp_path, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Primeira")
        for _ in range(200):
            await pilot.pause(0.02)
            if app.chat.message_list.views[-1].text:
                break
        first = app.conversation
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert app.conversation is not first and app.conversation.messages == []
        old = app.store.open(first.id)
        assert [m.role for m in old.messages] == ["user", "assistant"]
        assert (
            old.messages[1].stats is not None
            and old.messages[1].stats["finish_reason"] == "cancelled"
        )
        assert views(app) == []


@aio
async def test_sending_while_loading_or_generating_is_refused_politely(tmp_path: Path) -> None:
    import threading

    gate = threading.Event()
    loader = scripted_loader(ScriptedModel(delay=0.05))

    def slow_loader(spec: Any) -> Any:
        gate.wait(10)
        return loader(spec)

    app = RecordingApp(
        ModelSpec("scripted"), store=HistoryStore(tmp_path), loader=slow_loader, monitor=None
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await send(app, pilot, "Olá")
        await pilot.pause()
        assert app.notes[-1][0] == app.msgs("note.wait_loading") and saved_or_empty(app) == []
        gate.set()
        await settle(app, pilot)
        await send(app, pilot, "Olá")
        await pilot.pause(0.1)
        await send(app, pilot, "Outra")
        await pilot.pause()
        assert app.notes[-1][0] == app.msgs("note.busy")
        assert app.chat.prompt.value == "Outra"  # kept, to send when the reply ends
        await pilot.press("escape")
        await settle(app, pilot)
        assert [r for r, _ in saved(app)] == ["user", "assistant"]


def saved_or_empty(app: RecordingApp) -> list[tuple[str, str]]:
    return saved(app) if app.conversation.path.exists() else []


@aio
async def test_settings_modal_validates_and_applies(tmp_path: Path) -> None:
    from textual.widgets import Input, TextArea

    model = ScriptedModel()
    app = make(tmp_path, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#temperature", Input).value = "3.5"  # out of range
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and app.notes[-1][1] == "error"
        assert "Temperatura" in app.notes[-1][0]
        screen.query_one("#temperature", Input).value = "0.2"
        screen.query_one("#max_tokens", Input).value = "5"
        screen.query_one("#system", TextArea).text = "Responde só com uma palavra."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is not screen
        s = app.settings
        assert (s.temperature, s.max_tokens, s.system) == (0.2, 5, "Responde só com uma palavra.")
        await send(app, pilot, "Olá")
        await settle(app, pilot)
        system, user = model.requests[-1][:2]
        assert (system.role, system.content) == ("system", "Responde só com uma palavra.")
        assert (user.role, user.content) == ("user", "Olá")
        assert app.conversation.messages[-1].stats["completion_tokens"] == 5  # type: ignore[index]
        assert app.store.open(app.conversation.id).system == "Responde só com uma palavra."


def test_cli_rejects_bad_sampling_in_one_line(capsys: Any) -> None:
    from amalia_edge.cli import main

    assert main(["chat", "--temperature", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amalia-edge: error: --temperature is out of range") and "\n" not in err


@aio
async def test_resume_at_start_and_list_from_the_cli(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from amalia_edge.cli import main
    from amalia_edge.tui.history import HISTORY_DIR_ENV, ChatMessage

    store = HistoryStore(tmp_path)
    conv = store.new(system="Sê breve.")
    conv.append(ChatMessage("user", "Olá"))
    conv.append(ChatMessage("assistant", "Olá!"))
    monkeypatch.setenv(HISTORY_DIR_ENV, str(tmp_path))
    assert main(["chat", "--list"]) == 0
    row = capsys.readouterr().out.strip().split("\t")
    assert row[0] == conv.id and row[2:] == ["2", "Olá"]

    app = RecordingApp(
        ModelSpec("scripted"),
        store=store,
        loader=scripted_loader(ScriptedModel()),
        monitor=None,
        resume=conv.id,
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert views(app) == [("user", "Olá"), ("assistant", "Olá!")]
        assert app.settings.system == "Sê breve."
        await send(app, pilot, "E depois?")
        await settle(app, pilot)
        assert [c for _, c in saved(app)][:3] == ["Olá", "Olá!", "E depois?"]
