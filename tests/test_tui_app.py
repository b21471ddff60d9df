"""The chat app under Textual's Pilot, on the real llama.cpp backend and real GGUF files.

The model is ``tiny_gguf`` (amalia-edge's own converter, a tiny Llama with the real pt-PT
tokenizer). It decodes so fast that a person could not press Esc mid-reply, so tests that
act *during* a reply wrap the real model in :class:`Throttled`, which sleeps after each
token the real backend yields; the cancel event still goes to the real backend, which
ends the stream with ``Finished(reason="cancelled")`` itself.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Markdown

from amalia_edge.runtime.events import Event, TokenEvent
from amalia_edge.tui import model as model_mod
from amalia_edge.tui.app import ChatApp, default_monitor
from amalia_edge.tui.history import HistoryStore
from amalia_edge.tui.model import LoadedModel
from amalia_edge.tui.settings import ChatSettings, ModelSpec
from amalia_edge.tui.widgets.messages import MessageView, StreamingBody
from tests.test_tui_snapshots import settle

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)

REPO = Path(__file__).resolve().parents[1]


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with asyncio.run (no pytest async plugin needed)."""

    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> None:
        asyncio.run(fn(*args, **kw))

    return run


GREEDY = ChatSettings(system="És um assistente.", temperature=0.0, top_p=1.0, max_tokens=24)


@pytest.fixture(scope="module")
def gguf(tiny_gguf: dict[str, Path]) -> Path:
    return tiny_gguf["Q8_0"]


class Throttled:
    """The real model, slowed to ``delay`` seconds a token so a test can act mid-reply."""

    def __init__(self, model: Any, delay: float) -> None:
        self._model, self.delay = model, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def stream_chat(self, messages: Sequence[Any], **kw: Any) -> Iterator[Event]:
        for event in self._model.stream_chat(messages, **kw):
            yield event
            if isinstance(event, TokenEvent):
                time.sleep(self.delay)


def real_loader(delay: float = 0.0) -> Any:
    def load(spec: ModelSpec) -> LoadedModel:
        loaded = model_mod.load(spec)
        if delay:
            loaded.model = Throttled(loaded.model, delay)
        return loaded

    return load


class RecordingApp(ChatApp):
    """The real app, recording its notifications for the assertions."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.notes: list[tuple[str, str]] = []

    def notify(self, message: str, *, severity: Any = "information", **kw: Any) -> None:
        self.notes.append((str(message), str(severity)))
        super().notify(message, severity=severity, **kw)


def make_app(tmp_path: Path, model: Path | str, *, delay: float = 0.0, **kw: Any) -> RecordingApp:
    kw.setdefault("loader", real_loader(delay))
    kw.setdefault("settings", GREEDY)
    kw.setdefault("monitor", None)
    return RecordingApp(
        # One decode thread: on a busy 2-core test machine more threads only spin-wait.
        ModelSpec(str(model), n_ctx=kw.pop("n_ctx", 512), threads=1),
        store=HistoryStore(tmp_path / "history"),
        export_dir=tmp_path,
        **kw,
    )


async def send(app: ChatApp, pilot: Any, text: str) -> None:
    """Type ``text`` into the input box and submit it, without waiting for the reply.

    (``pilot.press("enter")`` would wait until the app is idle, i.e. the reply has ended.)
    """
    app.chat.prompt.value = text
    await app.chat.prompt.action_submit()
    await asyncio.sleep(0.01)


def saved(app: ChatApp) -> list[tuple[str, str]]:
    """The conversation as a fresh reader of its history file sees it."""
    conv = app.store.open(app.conversation.id)
    return [(m.role, m.content) for m in conv.messages]


def views(app: ChatApp) -> list[tuple[str, str]]:
    return [(v.role, v.text) for v in app.chat.message_list.views]


@aio
async def test_message_streams_token_by_token_and_is_saved(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appended: list[str] = []
    original = MessageView.append

    def spy(self: MessageView, fragment: str) -> None:
        if fragment:
            appended.append(fragment)
        original(self, fragment)

    monkeypatch.setattr(MessageView, "append", spy)
    app = make_app(tmp_path, gguf, delay=0.02, monitor=default_monitor)  # real telemetry
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.loaded is not None and app.loaded.backend == "llama.cpp"
        assert app.loaded.quant == "Q8_0" and app.loaded.chosen
        await send(app, pilot, "Olá! Como estás?")
        await settle(app, pilot)
        reply = app.conversation.messages[-1]
        assert reply.role == "assistant" and reply.content.strip()
        # Streamed: several UI updates during the reply, which together are the reply.
        assert len(appended) >= 3
        assert "".join(appended) == reply.content
        assert views(app) == [("user", "Olá! Como estás?"), ("assistant", reply.content)]
        assert saved(app) == views(app)
        stats = reply.stats or {}
        assert stats["backend"] == "llama.cpp" and stats["completion_tokens"] > 0
        assert stats["decode_tps"] > 0 and stats["ttft_s"] > 0
        panel = app.chat.stats
        assert panel.state == "idle" and panel.decode_tps and panel.ttft is not None
        assert panel.ctx_used == stats["prompt_tokens"] + stats["completion_tokens"]
        assert panel.n_ctx == 512 and panel.spark
        assert panel.rss is not None and panel.rss > 0  # from the real system sampler


@aio
async def test_stop_mid_reply_keeps_partial_reply(tmp_path: Path, gguf: Path) -> None:
    app = make_app(
        tmp_path,
        gguf,
        delay=0.05,
        settings=ChatSettings(system="S", temperature=0.0, max_tokens=400),
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Conta-me uma história longa.")
        for _ in range(300):
            await pilot.pause(0.02)
            reply = app.chat.message_list.views[-1]
            if reply.role == "assistant" and reply.text:
                break
        assert app.chat.generating
        # Streaming: plain text that shows what has arrived so far, Markdown only at the end.
        assert isinstance(reply.body, StreamingBody)
        await pilot.pause(0.1)
        assert reply.body.text and reply.text.startswith(reply.body.text)
        await pilot.press("escape")
        await settle(app, pilot)
        body: object = reply.body  # (a fresh look: mypy narrowed reply.body above)
        assert isinstance(body, Markdown) and body.is_attached
        assert not list(reply.query(StreamingBody))
        last = app.conversation.messages[-1]
        assert last.role == "assistant" and last.stats is not None
        assert last.stats["finish_reason"] == "cancelled"
        assert 0 < last.stats["completion_tokens"] < 400
        assert saved(app)[-1] == ("assistant", last.content)
        assert any(n == app.msgs("note.stopped") for n, _ in app.notes)
        # Still usable: the next message gets a full reply.
        app.settings = GREEDY
        await send(app, pilot, "Outra pergunta.")
        await settle(app, pilot)
        assert app.conversation.messages[-1].stats["finish_reason"] in ("stop", "length")  # type: ignore[index]
        assert len(saved(app)) == 4


@aio
async def test_regenerate_and_edit_and_resend(tmp_path: Path, gguf: Path) -> None:
    app = make_app(tmp_path, gguf)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Qual é a capital de Portugal?")
        await settle(app, pilot)
        first = app.conversation.messages[-1].content
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert [m.role for m in app.conversation.messages] == ["user", "assistant"]
        assert app.conversation.messages[-1].content == first  # greedy: the same reply
        assert (
            saved(app)
            == views(app)
            == [("user", "Qual é a capital de Portugal?"), ("assistant", first)]
        )
        records = [json.loads(x)["type"] for x in app.conversation.path.read_text().splitlines()]
        assert records == ["meta", "message", "message", "truncate", "message"]

        await pilot.press("ctrl+e")
        await pilot.pause()
        assert app.chat.prompt.value == "Qual é a capital de Portugal?"
        assert app.conversation.messages == [] and views(app) == []
        app.chat.prompt.value = "Qual é a capital de Espanha?"
        await pilot.press("enter")
        await settle(app, pilot)
        assert [r for r, _ in saved(app)] == ["user", "assistant"]
        assert saved(app)[0] == ("user", "Qual é a capital de Espanha?")


@pytest.mark.slow
@aio
async def test_switch_model_and_survive_a_failed_load(
    tmp_path: Path, tiny_gguf: dict[str, Path]
) -> None:
    app = make_app(tmp_path, tiny_gguf["F16"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Olá")
        await settle(app, pilot)

        # A file that is not a model: a notification, and the model that ran runs on.
        bad = tmp_path / "broken.gguf"
        bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
        app.load_model(ModelSpec(str(bad)))
        for _ in range(200):
            await pilot.pause(0.02)
            if not app.loading:
                break
        await app.workers.wait_for_complete()
        await pilot.pause()
        await settle(app, pilot)
        assert app.loaded is not None and app.loaded.quant == "F16"
        assert app.chat.stats.state == "idle"
        assert any(sev == "error" and "broken.gguf" in n for n, sev in app.notes), app.notes
        await send(app, pilot, "Estás aí?")
        await settle(app, pilot)
        assert saved(app)[-1][0] == "assistant"

        # Switch through the modal (F4) to another quant of the model, without restarting.
        await pilot.press("f4")
        await pilot.pause()
        app.screen.query_one("#model").value = str(tiny_gguf["F32"])  # type: ignore[attr-defined]
        await pilot.click("#load")
        await settle(app, pilot)
        assert app.loaded is not None and app.loaded.spec.model == str(tiny_gguf["F32"])
        assert app.chat.stats.quant == app.loaded.quant != "F16"
        app.chat.prompt.value = ""
        await send(app, pilot, "E agora?")
        await settle(app, pilot)
        assert saved(app)[-1][0] == "assistant"
        assert saved(app)[0] == ("user", "Olá")  # the conversation carried over


@aio
async def test_resume_a_saved_conversation(tmp_path: Path, gguf: Path) -> None:
    app = make_app(tmp_path, gguf)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Primeira conversa")
        await settle(app, pilot)
        first_id, first = app.conversation.id, views(app)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert views(app) == [] and app.conversation.id != first_id
        await send(app, pilot, "Segunda conversa")
        await settle(app, pilot)

        await pilot.press("f3")
        await pilot.pause()
        listed = [o.id for o in app.screen.query_one("#history-list")._options]  # type: ignore[attr-defined]
        assert set(listed) == {first_id, app.conversation.id}
        app.screen.query_one("#history-list").highlighted = listed.index(first_id)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        assert app.conversation.id == first_id and views(app) == first
        await send(app, pilot, "Continuação")
        await settle(app, pilot)
        assert [c for _, c in saved(app)][:3] == [first[0][1], first[1][1], "Continuação"]

        await pilot.press("f6")
        await pilot.pause()
        exported = (tmp_path / f"amalia-{first_id}.md").read_text(encoding="utf-8")
        assert "## Tu\n\nContinuação" in exported


@aio
async def test_context_overflow_is_a_notification(tmp_path: Path, gguf: Path) -> None:
    app = make_app(tmp_path, gguf, n_ctx=64)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "palavra " * 200)
        await settle(app, pilot)
        assert [r for r, _ in views(app)] == ["user"]  # no reply view left behind
        assert any(sev == "warning" and "64" in n for n, sev in app.notes), app.notes
        await send(app, pilot, "Olá")
        await settle(app, pilot)
        assert views(app)[-1][0] == "assistant"  # still usable


CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, sys
    from pathlib import Path
    from tests.test_tui_app import make_app, send, settle

    async def main():
        app = make_app(Path(sys.argv[2]), Path(sys.argv[1]), delay=0.0001)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            await send(app, pilot, "Primeira pergunta")
            await settle(app, pilot)
            # The second reply is long and slow, so the parent kills the app in the middle.
            app.loaded.model.delay = 0.05
            app.settings = dataclasses.replace(app.settings, max_tokens=400)
            await send(app, pilot, "Segunda pergunta")
            while not app.chat.message_list.views[-1].text:
                await pilot.pause(0.02)
            print("STREAMING", app.conversation.id, flush=True)
            await asyncio.sleep(120)

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_mid_reply_leaves_history_intact(tmp_path: Path, gguf: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(gguf), str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("STREAMING"), proc.stderr.read() if proc.stderr else line
        conv_id = line.split()[1]
        time.sleep(0.2)  # a few more tokens of the reply that will be lost
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conv = HistoryStore(tmp_path / "history").open(conv_id)
    roles = [(m.role, m.content) for m in conv.messages]
    assert [r for r, _ in roles] == ["user", "assistant", "user"]
    assert roles[0][1] == "Primeira pergunta" and roles[2][1] == "Segunda pergunta"
    assert roles[1][1].strip()


@pytest.mark.slow
@aio
async def test_demo_model_by_default_and_why_this_backend(
    tmp_path: Path, demo_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No MODEL: the runtime's demo model, converted once into the user cache (the same
    # directory every command uses).
    from amalia_edge.runtime import default_model_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec_default = model_mod.resolve_model(None)
    assert Path(spec_default).is_relative_to(tmp_path / "cache")
    assert Path(spec_default) == default_model_path()
    assert list(Path(spec_default).glob("*.gguf"))

    # The demo's artifacts directory (three quant types): selection explains its choice.
    app = make_app(tmp_path, demo_artifacts, n_ctx=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        loaded = app.loaded
        from amalia_edge.runtime import default_n_ctx, resolve_model

        # 2048, or the demo's trained context when shorter (read from the model, not assumed)
        assert loaded is not None and loaded.n_ctx == default_n_ctx(resolve_model(demo_artifacts))
        assert loaded.chosen[0].startswith(f"llama.cpp · gguf {loaded.quant}")
        why = model_mod.explain_selection(loaded.selection, app.msgs)
        assert len(why.alternatives) + len(why.rejected) >= 2  # the other quant types
        await pilot.press("f5")
        await pilot.pause()
        shown = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert loaded.quant is not None and loaded.quant in shown
        for english in ("fits", "available", "estimate", "asked", "Rejected"):
            assert english not in shown, english  # the pt-PT interface stays Portuguese
        if why.alternatives:  # usable quant types are not listed as rejected
            assert app.msgs("why.alternatives") in " ".join(
                str(w.render()) for w in app.screen.query("Label")
            )
        await pilot.press("escape")
        await send(app, pilot, "Olá! Fala-me de Lisboa.")
        await settle(app, pilot)
        reply = app.conversation.messages[-1]
        assert reply.role == "assistant" and reply.content.strip()
        assert saved(app)[-1] == ("assistant", reply.content)
