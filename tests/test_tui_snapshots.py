"""Snapshot tests of the chat TUI's main screens at 80×24 and 120×40.

Snapshots must not change from run to run, so these run the app with a *scripted* model
(fixed reply, fixed event timestamps, so fixed tok/s and TTFT), no telemetry monitor and
fixed history timestamps in UTC. Everything else is the real app. The streaming behaviour
itself is tested on the real llama.cpp backend in ``test_tui_app.py``.
Update the pictures with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.runtime.events import (
    Event,
    Finished,
    FinishReason,
    PromptProcessed,
    Started,
    TokenEvent,
)
from amalia_edge.tui.app import ChatApp
from amalia_edge.tui.history import ChatMessage, HistoryStore
from amalia_edge.tui.model import LoadedModel
from amalia_edge.tui.settings import ModelSpec

REPLY = (
    "Lisboa é a capital de **Portugal**. Três sítios a visitar:\n\n"
    "1. a Torre de Belém\n2. o Castelo de São Jorge\n3. o bairro de Alfama\n"
)
SIZES = [(80, 24), (120, 40)]


class ScriptedModel:
    """Replays a fixed reply as the runtime's event stream, with fixed timestamps.

    ``delay`` sleeps between tokens (to stop a reply mid-way); ``fail_after`` raises after
    that many tokens (a backend crashing mid-reply).
    """

    def __init__(
        self,
        reply: str = REPLY,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        prompt_tokens: int = 42,
        n_ctx: int = 2048,
    ) -> None:
        self.pieces = [w + " " for w in reply.split(" ")]
        self.pieces[-1] = self.pieces[-1][:-1]
        self.delay, self.fail_after = delay, fail_after
        self.prompt_tokens, self.n_ctx = prompt_tokens, n_ctx
        self.requests: list[Sequence[Any]] = []

    def stream_chat(
        self,
        messages: Sequence[Any],
        *,
        sampling: Any = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        self.requests.append(list(messages))
        t0 = 1000.0
        yield Started("llama.cpp", "demo-Q4_K_M.gguf", self.prompt_tokens, self.n_ctx, t0)
        yield PromptProcessed(self.prompt_tokens, 0.25, t0 + 0.25)
        out: list[str] = []
        reason: FinishReason = "length"
        for i, piece in enumerate(self.pieces[:max_tokens]):
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("scripted backend failure")
            if self.delay:
                time.sleep(self.delay)
            out.append(piece)
            yield TokenEvent(piece, 100 + i, i, t0 + 0.3 + 0.05 * i)
        else:
            reason = "stop"
        n = len(out)
        yield Finished(
            reason,
            "".join(out),
            self.prompt_tokens,
            n,
            t0,
            t0 + 0.3,
            t0 + 0.3 + 0.05 * max(n - 1, 0),
            0.25,
        )


def scripted_loader(model: ScriptedModel | None = None) -> Any:
    def load(spec: ModelSpec) -> LoadedModel:
        return LoadedModel(
            model or ScriptedModel(),
            spec,
            backend="llama.cpp",
            quant="Q4_K_M",
            n_ctx=2048,
            chosen=[
                "llama.cpp · Q4_K_M\n    GGUF runs on CPU here; fits in memory (1.2 GiB of 24 GiB)"
            ],
            rejected=["onnxruntime · int4\n    no ONNX artifact in this directory"],
        )

    return load


def make_app(tmp_path: Path, **kw: Any) -> ChatApp:
    kw.setdefault("loader", scripted_loader())
    return ChatApp(
        ModelSpec("demo-artifacts"),
        store=HistoryStore(tmp_path / "history"),
        monitor=None,
        export_dir=tmp_path,
        **kw,
    )


async def settle(app: ChatApp, pilot: Any) -> None:
    """Wait until the model is loaded and no reply is streaming."""
    for _ in range(500):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.loaded is not None and not app.chat.generating and not app.loading:
            return
        await pilot.pause(0.01)
    raise AssertionError(f"app did not settle; notes: {getattr(app, 'notes', '?')}")


async def steady(app: ChatApp, pilot: Any) -> None:
    """Stop cursors blinking, so the picture does not depend on when it is taken."""
    from textual.widgets import Input, TextArea

    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    for area in app.screen.query(TextArea):
        area.cursor_blink = False
    await pilot.pause()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_chat_screen_after_a_reply(
    snap_compare: Any, tmp_path: Path, size: tuple[int, int]
) -> None:
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        await settle(app, pilot)
        await pilot.press(*"Qual é a capital de Portugal?", "enter")
        await settle(app, pilot)
        await steady(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_chat_screen_empty_in_english(
    snap_compare: Any, tmp_path: Path, size: tuple[int, int]
) -> None:
    app = make_app(tmp_path, lang="en")

    async def run_before(pilot: Any) -> None:
        await settle(app, pilot)
        await steady(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("key", ["f1", "f2", "f4", "f5"], ids=["help", "settings", "model", "why"])
def test_modal_screens(snap_compare: Any, tmp_path: Path, key: str, size: tuple[int, int]) -> None:
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        await settle(app, pilot)
        await pilot.press(key)
        await pilot.pause()
        await steady(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_screen(
    snap_compare: Any, tmp_path: Path, utc: None, size: tuple[int, int]
) -> None:
    store = HistoryStore(tmp_path / "history")
    for i, question in enumerate(
        ["Qual é a capital de Portugal?", "Conta-me uma história sobre o Porto."]
    ):
        conv = store.new(system="És útil.")
        t = 1_790_000_000 + 3600 * i
        conv.created = t  # the meta record is written with the first message
        conv.append(ChatMessage("user", question, t=t))
        conv.append(ChatMessage("assistant", "…", t=t + 5))
        os.utime(conv.path, (t + 5, t + 5))
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        await settle(app, pilot)
        await pilot.press("f3")
        await pilot.pause()
        await steady(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
