"""The chat app: holds the model, settings, conversation and telemetry; screens show them.

:class:`ChatApp` owns the state that outlives a screen (the loaded model, the sampling
settings, the current conversation and its history store, the telemetry monitor); the
:class:`~amalia_edge.tui.screens.chat.ChatScreen` shows it and runs the reply worker. Models
load in a thread worker too, so a 9B GGUF loading for seconds never freezes the UI, and a
model that fails to load leaves the app running with a notification and no model.

Everything the app touches outside itself is injectable (``loader``, ``monitor``,
``store``), which is how the tests run it on a real GGUF with a temporary history directory,
and the snapshot tests with a scripted model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from amalia_edge.errors import AmaliaEdgeError
from amalia_edge.tui import model as model_mod
from amalia_edge.tui.history import ChatMessage, Conversation, HistoryStore
from amalia_edge.tui.i18n import DEFAULT_LANG, Messages
from amalia_edge.tui.model import LoadedModel, Loader
from amalia_edge.tui.screens.chat import ChatScreen
from amalia_edge.tui.screens.help import HelpScreen
from amalia_edge.tui.screens.history import HistoryScreen
from amalia_edge.tui.screens.model import ModelScreen
from amalia_edge.tui.screens.settings import SettingsScreen
from amalia_edge.tui.screens.why import WhyScreen
from amalia_edge.tui.settings import ChatSettings, ModelSpec

log = logging.getLogger(__name__)

TELEMETRY_INTERVAL = 0.5  # seconds between telemetry samples while the app runs
IDLE_REFRESH = 1.0  # seconds between stats refreshes while no reply is streaming
# The interpreter's switch interval is left at its default (5 ms). The previous 0.5 ms was
# not a net win once the UI stopped re-laying out the screen while a reply streams: decode
# in the TUI at 0.57 and 0.62 of headless speed with 0.5 ms vs 0.81 and 0.66 with 5 ms
# (benchmarks/tui_overhead.py --demo --threads 1 --rounds 12, busy shared 2-core machine).


def default_monitor() -> Any:
    """Start the telemetry monitor for this machine, or return ``None`` if none can run."""
    try:
        from amalia_edge.telemetry import default_monitor as make

        mon = make(interval=TELEMETRY_INTERVAL)
        mon.start()
        return mon
    except Exception as exc:  # telemetry is a nicety: the chat works without it
        log.warning("telemetry unavailable: %s", exc)
        return None


def _memory_total() -> int | None:
    """The machine's memory, for the panel's "share of what is available"."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unsupported: the share is not shown
        return None


# Two Ctrl+C within this many seconds quit (the first one alone stops a reply or asks).
QUIT_WINDOW = 3.0


class _LoadFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ChatApp(App[None]):
    # Absolute, so subclasses in other packages (the tests) find it too.
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))
    ENABLE_COMMAND_PALETTE = False
    # Ctrl+C stops a streaming reply (as in `ollama run`, llama-cli); twice quits. Replaces
    # Textual's own Ctrl+C, which asks in English and leaves the reply running.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "interrupt", show=False, priority=True),
    ]
    # Narrow terminals (an 80-column SSH session) get a slimmer stats panel.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - as Textual declares it

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        lang: str = DEFAULT_LANG,
        system: str | None = None,
        settings: ChatSettings | None = None,
        store: HistoryStore | None = None,
        loader: Loader | None = None,
        monitor: Callable[[], Any] | None = default_monitor,
        export_dir: str | os.PathLike[str] | None = None,
        resume: str | None = None,
    ) -> None:
        super().__init__()
        self.msgs = Messages(lang)
        self.spec = spec or ModelSpec()
        self.settings = settings or ChatSettings(system=system or self.msgs("system.default"))
        self.store = store or HistoryStore()
        self.conversation = (
            self.store.open(resume)
            if resume
            else self.store.new(system=self.settings.system, model=self.spec.label)
        )
        if resume:
            self.settings = dataclasses.replace(self.settings, system=self.conversation.system)
        self.loaded: LoadedModel | None = None
        self.loading = False
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self._loader: Loader = loader or model_mod.load
        self._monitor_factory = monitor
        self._monitor: Any = None
        self._chat_screen: ChatScreen | None = None
        self._last_interrupt: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        self._chat_screen = ChatScreen()
        return self._chat_screen

    @property
    def chat(self) -> ChatScreen:
        assert self._chat_screen is not None
        return self._chat_screen

    def on_mount(self) -> None:
        self.title = self.msgs("app.title")
        self.sub_title = self.spec.label
        self.chat.show_stats(dataclasses.replace(self.chat.stats, mem_total=_memory_total()))
        if self._monitor_factory is not None:
            self._monitor = self._monitor_factory()
            if self._monitor is not None:
                self.set_interval(IDLE_REFRESH, self._idle_refresh)
        self.load_model(self.spec)

    def on_unmount(self) -> None:
        # Let a reply still decoding in its worker thread end now.
        if self._chat_screen is not None and self._chat_screen.cancel_event is not None:
            self._chat_screen.cancel_event.set()
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.stop()

    def latest_snapshot(self) -> Any:
        """The monitor's latest telemetry snapshot, or ``None`` (callable from any thread)."""
        if self._monitor is None:
            return None
        try:
            return self._monitor.latest()
        except Exception:  # a sensor that vanished mid-run must not end the reply
            return None

    def _idle_refresh(self) -> None:
        if self.chat.generating:
            return
        from amalia_edge.tui.stats import StatsTracker

        tracker = StatsTracker(self.chat.stats)
        tracker.observe(self.latest_snapshot(), time.perf_counter())
        self.chat.show_stats(tracker.stats)

    def action_interrupt(self) -> None:
        now = time.monotonic()
        if self.chat.generating:
            self.chat.action_stop()
            self._last_interrupt = None
            return
        if self._last_interrupt is not None and now - self._last_interrupt <= QUIT_WINDOW:
            self.exit()
            return
        self._last_interrupt = now
        self.notify(self.msgs("note.quit_again"), timeout=QUIT_WINDOW)

    # -- model loading ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load")
    def load_model(self, spec: ModelSpec) -> None:
        """Unload the current model, then load ``spec``; failures become a notification.

        When ``spec`` cannot load and a model was running, that model is loaded again (the
        old one is freed first: two 9B models do not fit in an Orin's memory at once).
        """
        previous = self.spec if self.loaded is not None else None
        old = self.call_from_thread(self._begin_loading, spec)
        if old is not None:
            old.close()
        try:
            loaded = self._load(spec)
        except _LoadFailed as exc:
            if previous is None:
                self.call_from_thread(self._load_failed, exc.message)
                return
            try:
                loaded = self._load(previous)
            except _LoadFailed as again:
                self.call_from_thread(self._load_failed, again.message)
                return
            self.call_from_thread(self._load_done, loaded)
            note = self.msgs("note.load_failed_kept", model=spec.label, error=exc.message)
            self.call_from_thread(self.notify, note, severity="error", timeout=10)
            return
        self.call_from_thread(self._load_done, loaded)

    def _load(self, spec: ModelSpec) -> LoadedModel:
        """The loader's model, or :class:`_LoadFailed` with a one-line reason."""
        try:
            return self._loader(spec)
        except AmaliaEdgeError as exc:
            # The problem only: the fix names command-line flags, which the UI does not have.
            raise _LoadFailed(exc.problem) from None
        except Exception as exc:  # e.g. llama.cpp refusing a corrupt file
            log.exception("loading %s failed", spec.label)
            raise _LoadFailed(str(exc) or type(exc).__name__) from None

    def _begin_loading(self, spec: ModelSpec) -> LoadedModel | None:
        old, self.loaded, self.loading, self.spec = self.loaded, None, True, spec
        self.sub_title = spec.label
        self.conversation.set_model(spec.label)
        self.chat.show_stats(
            dataclasses.replace(self.chat.stats, state="loading", backend=None, quant=None)
        )
        return old

    def _load_failed(self, error: str) -> None:
        self.loading = False
        self.chat.show_stats(dataclasses.replace(self.chat.stats, state="nomodel"))
        self.notify(self.msgs("note.load_failed", error=error), severity="error", timeout=10)

    def _load_done(self, loaded: LoadedModel) -> None:
        self.loaded, self.loading, self.spec = loaded, False, loaded.spec
        self.sub_title = loaded.spec.label
        self.conversation.set_model(loaded.spec.label)
        self.chat.show_stats(
            dataclasses.replace(
                self.chat.stats,
                state="idle",
                backend=loaded.backend,
                quant=loaded.quant,
                n_ctx=loaded.n_ctx,
                ctx_used=None,
            )
        )

    # -- conversation -------------------------------------------------------------------------

    def record(self, message: ChatMessage, conversation: Conversation | None = None) -> None:
        """Append and save ``message`` (a reply goes to the conversation it was asked in)."""
        try:
            (conversation or self.conversation).append(message)
        except AmaliaEdgeError as exc:
            # The chat goes on in memory; the person is told the disk refused it.
            self.notify(self.msgs("note.history_failed", error=exc), severity="error")

    def truncate(self, keep: int) -> None:
        try:
            self.conversation.truncate(keep)
        except AmaliaEdgeError as exc:
            self.notify(self.msgs("note.history_failed", error=exc), severity="error")

    def new_conversation(self) -> None:
        self.conversation = self.store.new(system=self.settings.system, model=self.spec.label)
        self.chat.rebuild()
        self.chat.show_stats(self.chat.stats.for_new_chat())

    def resume(self, conversation_id: str) -> None:
        try:
            conv = self.store.open(conversation_id)
        except AmaliaEdgeError as exc:
            self.notify(str(exc), severity="error")
            return
        self.conversation = conv
        self.settings = dataclasses.replace(self.settings, system=conv.system)
        self.chat.rebuild()
        self.notify(self.msgs("note.resumed", title=conv.title or conv.id))

    # -- screens ------------------------------------------------------------------------------

    def action_show_help(self) -> None:
        self.push_screen(HelpScreen(self.msgs))

    def action_show_settings(self) -> None:
        def done(result: ChatSettings | None) -> None:
            if result is None:
                return
            self.settings = result
            try:
                self.conversation.set_system(result.system)
            except AmaliaEdgeError as exc:
                self.notify(self.msgs("note.history_failed", error=exc), severity="error")
            self.notify(self.msgs("note.settings_saved"))

        self.push_screen(SettingsScreen(self.msgs, self.settings), done)

    def action_show_history(self) -> None:
        if self.chat.generating:
            self.notify(self.msgs("note.busy"), severity="warning")
            return

        def done(conversation_id: str | None) -> None:
            if conversation_id:
                self.resume(conversation_id)

        self.push_screen(HistoryScreen(self.msgs, self.store.list()), done)

    def action_show_model(self) -> None:
        if self.chat.generating:
            self.notify(self.msgs("note.busy"), severity="warning")
            return

        def done(spec: ModelSpec | None) -> None:
            if spec is not None:
                self.load_model(spec)

        quants = self.loaded.quants if self.loaded else []
        self.push_screen(ModelScreen(self.msgs, self.spec, quants), done)

    def action_show_why(self) -> None:
        from amalia_edge.tui.model import explain_selection

        loaded = self.loaded
        if loaded is not None and loaded.selection is not None:
            why = explain_selection(loaded.selection, self.msgs)
            self.push_screen(WhyScreen(self.msgs, why.chosen, why.rejected, why.alternatives))
            return
        chosen, rejected = (loaded.chosen, loaded.rejected) if loaded else ([], [])
        self.push_screen(WhyScreen(self.msgs, chosen, rejected))

    def action_export(self) -> None:
        conv = self.conversation
        if not conv.messages:
            self.notify(self.msgs("note.export_empty"), severity="warning")
            return
        m = self.msgs
        labels = {
            "user": m("role.user"),
            "assistant": m("role.assistant"),
            "system": m("role.system"),
            "title": m("export.title"),
            "model": m("export.model"),
            "date": m("export.date"),
        }
        try:
            path = conv.export_markdown(self.export_dir / f"amalia-{conv.id}.md", labels)
        except AmaliaEdgeError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(m("note.exported", path=path))
