"""What a person does in the chat besides sending one short message (issue 14, part 3):
read a long reply, type several lines, paste, copy a reply, Ctrl+C, the key bar and panel.

The model is the scripted one of test_tui_snapshots (fixed events); the app is real.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.geometry import Region
from textual.widgets import Footer

from amalia_edge.tui.history import HistoryStore
from amalia_edge.tui.settings import ModelSpec
from amalia_edge.tui.stats import LiveStats
from amalia_edge.tui.widgets.stats import StatsTable
from tests.plugins.models import HAVE_LLAMA_CPP
from tests.test_tui_app import RecordingApp, aio, saved, send, views
from tests.test_tui_snapshots import ScriptedModel, scripted_loader, settle

LONG_REPLY = "\n\n".join(f"Parágrafo {i}: era uma vez uma história longa." for i in range(1, 41))


def make(tmp_path: Path, model: ScriptedModel | None = None, **kw: Any) -> RecordingApp:
    kw.setdefault("loader", scripted_loader(model or ScriptedModel()))
    return RecordingApp(ModelSpec("scripted"), store=HistoryStore(tmp_path), monitor=None, **kw)


def visible(app: RecordingApp, view: Any) -> tuple[bool, bool]:
    """Whether the first and the last line of ``view`` are inside the chat's viewport."""
    port = app.chat.message_list.content_region
    region = view.region
    return port.y <= region.y < port.bottom, port.y < region.bottom <= port.bottom


@aio
async def test_long_reply_is_fully_readable_and_scrolls_with_page_keys(tmp_path: Path) -> None:
    app = make(tmp_path, ScriptedModel(LONG_REPLY))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for question in ("Conta-me uma história longa.", "E depois?", "Mais uma vez."):
            await send(app, pilot, question)
            await settle(app, pilot)
            await pilot.pause(0.2)
            reply = app.chat.message_list.views[-1]
            assert reply.role == "assistant" and reply.text == LONG_REPLY
            assert visible(app, reply)[1], "the end of the newest reply is on screen"
        messages = app.chat.message_list
        seen_top = False
        for _ in range(40):  # PageUp until the reply's first line shows
            before = messages.scroll_y
            await pilot.press("pageup")
            await pilot.pause()
            if visible(app, reply)[0]:
                seen_top = True
                break
            assert messages.scroll_y < before, "PageUp scrolls the chat"
        assert seen_top
        assert not visible(app, reply)[1]
        for _ in range(40):
            await pilot.press("pagedown")
            await pilot.pause()
        assert visible(app, reply)[1]
        assert app.chat.prompt.has_focus  # the keys scroll while typing stays possible


@aio
async def test_multi_line_message_enter_sends_ctrl_j_and_paste_keep_lines(tmp_path: Path) -> None:
    model = ScriptedModel()
    app = make(tmp_path, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press(*"linha um", "ctrl+j", *"linha dois", "shift+enter", *"três")
        assert app.chat.prompt.value == "linha um\nlinha dois\ntrês"
        await pilot.press("enter")
        await settle(app, pilot)
        assert saved(app)[0] == ("user", "linha um\nlinha dois\ntrês")
        assert model.requests[-1][-1].content == "linha um\nlinha dois\ntrês"
        app.post_message(events.Paste("primeira\nsegunda\nterceira"))  # as the terminal sends
        await pilot.pause()
        assert app.chat.prompt.value == "primeira\nsegunda\nterceira"
        await pilot.press("enter")
        await settle(app, pilot)
        assert views(app)[2] == ("user", "primeira\nsegunda\nterceira")


@aio
async def test_copy_key_puts_the_newest_reply_on_the_clipboard(tmp_path: Path) -> None:
    app = make(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        assert app.notes[-1][1] == "warning"  # nothing to copy yet
        await send(app, pilot, "Olá")
        await settle(app, pilot)
        await pilot.press("f7")
        assert app.clipboard == views(app)[-1][1] and app.clipboard
        assert "copiada" in app.notes[-1][0]


@aio
async def test_ctrl_c_stops_a_streaming_reply_and_twice_quits_in_portuguese(
    tmp_path: Path,
) -> None:
    app = make(tmp_path, ScriptedModel(LONG_REPLY, delay=0.05))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "Conta-me uma história longa.")
        while not app.chat.message_list.views[-1].text:
            await asyncio.sleep(0.02)
        await pilot.press("ctrl+c")
        await settle(app, pilot)
        reply = saved(app)[-1]
        assert reply[0] == "assistant" and 0 < len(reply[1]) < len(LONG_REPLY)
        assert app.is_running
        assert not any("quit" in n.lower() for n, _ in app.notes)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running
        assert app.notes[-1][0] == "Carrega outra vez em Ctrl+C para sair."
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0


def footer_text(app: RecordingApp) -> str:
    footer = app.screen.query_one(Footer)
    return " ".join(str(w.render()) for w in footer.query("FooterKey"))


@aio
async def test_key_bar_fits_120_columns_and_panel_labels_fit_80(tmp_path: Path) -> None:
    for size in ((120, 40), (80, 24)):
        app = make(tmp_path)
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            footer = app.screen.query_one(Footer)
            keys = list(footer.query("FooterKey"))
            assert keys
            if size[0] == 120:
                shown = [k for k in keys if k.region.right <= footer.region.right]
                assert len(shown) == len(keys), "every footer key is on screen at 120 columns"
                text = footer_text(app)
                assert "f6" in text and "^q" in text and "f7" in text
            # The widest values a real run shows: labels must stay whole beside them.
            table = app.screen.query_one(StatsTable)
            app.chat.show_stats(WIDE_STATS)
            await pilot.pause()
            lines = widget_lines(table)
            for label in LABELS:
                assert any(line.startswith(app.msgs(label) + " ") for line in lines), (
                    label,
                    lines,
                )


WIDE_STATS = LiveStats(
    state="generating",
    backend="onnxruntime",
    quant="Q4_K_M",
    prompt_tps=12345.6,
    decode_tps=1234.5,
    ttft=0.123,
    ctx_used=1024,
    n_ctx=1024,
    power_w=12.3,
    joules_per_token=0.12,
    rss=126 * 2**20,
    mem_used=1700 * 2**20,
    mem_total=16 * 2**30,
    temp_c=55.0,
)
LABELS = ("stats.state", "stats.backend", "stats.quant", "stats.prompt_tps", "stats.decode_tps",
          "stats.ttft", "stats.context", "stats.power", "stats.energy", "stats.memory",
          "stats.temp")  # fmt: skip


def widget_lines(widget: Any) -> list[str]:
    strips = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return ["".join(seg.text for seg in strip) for strip in strips]


class GatedModel(ScriptedModel):
    """Holds each request before its first event until ``gate`` is set (a long prefill)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def stream_chat(self, messages: Any, **kw: Any) -> Any:
        self.gate.wait(10)
        yield from super().stream_chat(messages, **kw)


@aio
async def test_panel_numbers_do_not_go_stale(tmp_path: Path) -> None:
    model = GatedModel()
    app = make(tmp_path, model)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        model.gate.set()
        await send(app, pilot, "Olá")
        await settle(app, pilot)
        assert app.chat.stats.ttft is not None and app.chat.stats.ctx_used
        model.gate.clear()
        await send(app, pilot, "E depois?")  # its prompt is being processed...
        while not app.chat.generating:
            await asyncio.sleep(0.01)
        assert app.chat.stats.ttft is None  # ...so no TTFT yet, not the previous reply's
        model.gate.set()
        await settle(app, pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat.stats.ctx_used is None
        table = app.screen.query_one(StatsTable)
        row = next(ln for ln in widget_lines(table) if ln.startswith(app.msgs("stats.context")))
        assert row.split()[-1] == "—", row


def quant_loader(calls: list[ModelSpec], bad: str = "Q5_K") -> Any:
    """Loads any quant the model has; ``bad`` fails as the runtime's selection does."""
    from amalia_edge.errors import SelectionError
    from amalia_edge.tui.model import LoadedModel

    def load(spec: ModelSpec) -> LoadedModel:
        calls.append(spec)
        if spec.quant == bad:
            raise SelectionError(
                f"no artifact with quant type {bad}", fix="pass --quant Q4_K_M, Q8_0 or F16"
            )
        quant = spec.quant or "Q4_K_M"
        return LoadedModel(ScriptedModel(), spec, backend="llama.cpp", quant=quant, n_ctx=2048,
                           quants=["Q4_K_M", "Q8_0", "F16"], n_ctx_max=4096)  # fmt: skip

    return load


@aio
async def test_failed_model_switch_keeps_the_current_model(tmp_path: Path) -> None:
    calls: list[ModelSpec] = []
    app = make(tmp_path, loader=quant_loader(calls))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.load_model(ModelSpec("scripted", quant="Q5_K"))
        await settle(app, pilot)
        assert app.loaded is not None and app.loaded.quant == "Q4_K_M"
        assert app.chat.stats.state == "idle" and app.chat.stats.quant == "Q4_K_M"
        note, severity = app.notes[-1]
        assert severity == "error" and "Continua o modelo anterior" in note
        assert "--quant" not in note  # no command-line flag inside the app
        await send(app, pilot, "Ainda estás aí?")
        await settle(app, pilot)
        assert saved(app)[-1][0] == "assistant"


@aio
async def test_model_switch_offers_the_artifacts_that_exist(tmp_path: Path) -> None:
    from textual.widgets import Select

    calls: list[ModelSpec] = []
    app = make(tmp_path, loader=quant_loader(calls))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        select = app.screen.query_one("#quant", Select)
        assert [v for _, v in select._options][1:] == ["Q4_K_M", "Q8_0", "F16"]
        select.value = "Q8_0"
        await pilot.click("#load")
        await settle(app, pilot)
        assert calls[-1].quant == "Q8_0" and app.loaded is not None
        assert app.loaded.quant == "Q8_0"


class ContextFullModel(ScriptedModel):
    """A reply that runs into the end of the context."""

    def stream_chat(self, messages: Any, **kw: Any) -> Any:
        from amalia_edge.runtime.events import Finished

        for ev in super().stream_chat(messages, **kw):
            if isinstance(ev, Finished):
                ev = Finished("context_full", *list(vars(ev).values())[1:])
            yield ev


@aio
async def test_context_full_advice_depends_on_the_models_maximum(tmp_path: Path) -> None:
    from amalia_edge.tui.model import LoadedModel

    for n_ctx, n_ctx_max in ((2048, 4096), (4096, 4096)):

        def load(spec: ModelSpec, n_ctx: int = n_ctx, top: int = n_ctx_max) -> LoadedModel:
            return LoadedModel(ContextFullModel(n_ctx=n_ctx), spec, backend="llama.cpp",
                               quant="Q4_K_M", n_ctx=n_ctx, n_ctx_max=top)  # fmt: skip

        app = make(tmp_path / str(n_ctx), loader=load)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            await send(app, pilot, "Conta-me uma história longa.")
            await settle(app, pilot)
            note = next(n for n, sev in app.notes if sev == "warning")
            assert "--ctx" not in note and "Ctrl+N" in note
            if n_ctx < n_ctx_max:
                assert "F4" in note and str(n_ctx_max) in note
            else:
                assert "máximo deste modelo" in note and "F4" not in note


@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")
@aio
async def test_why_screen_is_portuguese_and_keeps_usable_quants_apart(
    tmp_path: Path, tiny_artifacts: Path
) -> None:
    """F5 on a real selection (the tiny model's artifacts directory, several quant types)."""
    from tests.test_tui_app import make_app

    app = make_app(tmp_path, tiny_artifacts, n_ctx=256)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await pilot.pause()
        statics = " ".join(str(w.render()) for w in app.screen.query("Static"))
        labels = [str(w.render()) for w in app.screen.query("Label")]
        assert "cabe na memória" in statics
        for english in ("fits", "available", "estimate", "asked", "bytes", "load"):
            assert english not in statics, english
        assert app.msgs("why.alternatives") in labels  # F16, Q8_0...: usable, not rejected
        chosen = app.loaded.quant  # type: ignore[union-attr]
        rejected_part = statics.split("✗", 1)[-1] if "✗" in statics else ""
        for quant in ("F16", "Q8_0"):
            if quant != chosen:
                assert f"gguf {quant}" not in rejected_part, quant


@aio
async def test_help_lists_every_key_including_page_keys(tmp_path: Path) -> None:
    from amalia_edge.tui.keys import KEYS

    app = make(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("f1")
        await pilot.pause()
        table = app.screen.query_one("#help-keys")
        text = "\n".join(widget_lines(table))
        for name in ("PageUp", "PageDown", "Ctrl+J", "Shift+Enter", "Ctrl+C", "F7", "Ctrl+Q"):
            assert name in text, name
        for key in KEYS:  # (long descriptions wrap: their start is enough)
            assert app.msgs(key.label)[:14] in text, key.label
