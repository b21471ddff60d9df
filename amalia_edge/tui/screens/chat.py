"""The chat screen: conversation, input box, live stats panel, and the reply worker.

The reply is generated in a thread worker (``@work(thread=True, exclusive=True)``) that
consumes ``model.stream_chat``. It batches tokens into at most one UI update per
:data:`FLUSH_INTERVAL` (the first token is shown at once) and hands each batch to the UI as
a :class:`ResponseChunk` message. ``post_message`` is thread-safe and, unlike
``App.call_from_thread``, does not wait for the UI to run the update. While it streams the
reply is plain text (:class:`~amalia_edge.tui.widgets.messages.StreamingBody`), rendered as
Markdown once complete. The UI thread's work competes with the decoding thread for the GIL,
so whatever the UI does while a fast model decodes costs decode speed: see
``benchmarks/tui_overhead.py`` and the README for what remains. The reply's outcome arrives in
the same queue, after every chunk, as one of three messages in the manner of elia:
:class:`ResponseStarted`, :class:`ResponseComplete` (also for a stopped or length-limited
reply) or :class:`ResponseFailed`; each handler puts the screen back into a usable state,
whatever went wrong.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual.worker import get_current_worker

from amalia_edge.errors import ContextOverflowError
from amalia_edge.runtime.events import Finished, Started, TokenEvent
from amalia_edge.tui.history import ChatMessage, Conversation
from amalia_edge.tui.keys import KEYS, NOT_SCREEN_BINDINGS
from amalia_edge.tui.model import LoadedModel, request_messages, sampling_params
from amalia_edge.tui.settings import ChatSettings
from amalia_edge.tui.stats import LiveStats, StatsTracker
from amalia_edge.tui.widgets.messages import MessageList, MessageView
from amalia_edge.tui.widgets.prompt import PromptInput
from amalia_edge.tui.widgets.stats import StatsPanel

if TYPE_CHECKING:
    from amalia_edge.tui.state import ChatHost

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1  # seconds between UI updates while a reply streams (10 Hz reads as live)
# The stats table is the costliest widget to redraw (~6.5 ms a render, profiled on the 150M
# synthetic model in benchmarks/tui_overhead.py); mid-reply it is refreshed at 4 Hz, and always
# at the start and the end of a reply.
STATS_INTERVAL = 0.25


class ResponseStarted(Message):
    def __init__(self, view: MessageView) -> None:
        super().__init__()
        self.view = view


class ResponseChunk(Message):
    def __init__(self, view: MessageView, text: str, stats: LiveStats) -> None:
        super().__init__()
        self.view = view
        self.text = text
        self.stats = stats


class ResponseComplete(Message):
    def __init__(self, view: MessageView, finished: Finished, stats: LiveStats) -> None:
        super().__init__()
        self.view = view
        self.finished = finished
        self.stats = stats


class ResponseFailed(Message):
    def __init__(self, view: MessageView, error: str, *, context_full: bool = False) -> None:
        super().__init__()
        self.view = view
        self.error = error
        self.context_full = context_full


class ChatScreen(Screen[None]):
    """The main screen. Actions are bound from :data:`amalia_edge.tui.keys.KEYS`."""

    AUTO_FOCUS = "#prompt"

    def __init__(self) -> None:
        super().__init__()
        self.generating = False
        self.cancel_event: threading.Event | None = None
        self.stats = LiveStats()
        self._panel: StatsPanel | None = None
        self._stats_shown_at = 0.0
        self._messages: MessageList | None = None
        self._told_dropped: Conversation | None = None  # the chat already told of dropping
        for key in KEYS:
            if key.action in NOT_SCREEN_BINDINGS:
                continue
            self._bindings.bind(
                key.keys,
                key.action,
                self.chat_app.msgs(key.footer or key.label),
                show=key.show,
                priority=key.priority,
            )

    @property
    def chat_app(self) -> ChatHost:
        """The app, which owns the conversation, the model and the settings."""
        return cast("ChatHost", self.app)

    def compose(self) -> ComposeResult:
        m = self.chat_app.msgs
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                self._messages = MessageList(id="messages")
                yield self._messages
                yield PromptInput(placeholder=m("input.placeholder"), id="prompt")
            self._panel = StatsPanel(m, id="stats")
            yield self._panel
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.rebuild()

    # -- what the app calls -------------------------------------------------------------------

    @property
    def message_list(self) -> MessageList:
        assert self._messages is not None
        return self._messages

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    def rebuild(self) -> None:
        """Show the app's current conversation from scratch (new chat, resume)."""
        messages = self.message_list
        messages.clear()
        conv = self.chat_app.conversation
        if not conv.messages:
            messages.mount(Static(self.chat_app.msgs("chat.empty"), classes="empty-hint"))
        for m in conv.messages:
            self._add_view(m.role, m.content)

    def show_stats(self, stats: LiveStats) -> None:
        self.stats = stats
        # A timer or a worker's last update can arrive while the app is shutting down.
        if self._panel is not None and self._panel.is_attached:
            self._panel.show(stats)

    # -- actions ------------------------------------------------------------------------------

    @on(PromptInput.Submitted, "#prompt")
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self._refuse_busy_or_unloaded():
            return
        event.input.value = ""
        self._record(ChatMessage("user", text))
        self._add_view("user", text)
        await self._start_reply()

    def action_stop(self) -> None:
        if self.generating and self.cancel_event is not None:
            self.cancel_event.set()

    async def action_regenerate(self) -> None:
        if self._refuse_busy_or_unloaded():
            return
        conv = self.chat_app.conversation
        if not conv.messages:
            self.notify(self.chat_app.msgs("note.nothing_to_regenerate"), severity="warning")
            return
        if conv.messages[-1].role == "assistant":
            keep = len(conv.messages) - 1
            self._truncate(keep)
        await self._start_reply()

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify(self.chat_app.msgs("note.busy"), severity="warning")
            return
        conv = self.chat_app.conversation
        users = [i for i, m in enumerate(conv.messages) if m.role == "user"]
        if not users:
            self.notify(self.chat_app.msgs("note.nothing_to_edit"), severity="warning")
            return
        text = conv.messages[users[-1]].content
        self._truncate(users[-1])
        self.prompt.value = text
        self.prompt.cursor_position = len(text)
        self.prompt.focus()

    def action_new_chat(self) -> None:
        self.action_stop()
        self.chat_app.new_conversation()
        self.notify(self.chat_app.msgs("note.new_chat"))

    def action_scroll_up(self) -> None:
        # Scrolling releases the list's anchor: the reply stops pulling the view down until
        # the person scrolls back to the bottom (Textual's anchor, see MessageList).
        self.message_list.scroll_page_up(animate=False)

    def action_scroll_down(self) -> None:
        self.message_list.scroll_page_down(animate=False)

    def action_copy_reply(self) -> None:
        """Copy the newest reply to the clipboard (OSC 52: works over SSH and in tmux)."""
        m = self.chat_app.msgs
        replies = [v for v in self.message_list.views if v.role == "assistant" and v.text]
        if not replies:
            self.notify(m("note.nothing_to_copy"), severity="warning")
            return
        text = replies[-1].text
        self.app.copy_to_clipboard(text)
        self.notify(m("note.copied", n=len(text)))

    # -- helpers ------------------------------------------------------------------------------

    def _refuse_busy_or_unloaded(self) -> bool:
        m = self.chat_app.msgs
        if self.generating:
            self.notify(m("note.busy"), severity="warning")
            return True
        if self.chat_app.loaded is None:
            loading = self.chat_app.loading
            self.notify(m("note.wait_loading" if loading else "note.no_model"), severity="warning")
            return True
        return False

    def _add_view(self, role: str, content: str, *, streaming: bool = False) -> MessageView:
        for hint in self.query(".empty-hint"):
            hint.remove()
        label = self.chat_app.msgs(f"role.{role}")
        return self.message_list.add(role, label, content, streaming=streaming)

    def _record(self, message: ChatMessage, conversation: Conversation | None = None) -> None:
        self.chat_app.record(message, conversation)

    def _truncate(self, keep: int) -> None:
        self.chat_app.truncate(keep)
        self.message_list.remove_from(keep)

    async def _start_reply(self) -> None:
        loaded = self.chat_app.loaded
        assert loaded is not None
        settings = self.chat_app.settings
        view = self._add_view("assistant", "", streaming=True)
        self.message_list.anchor()  # a new reply brings the view back to the bottom
        # The reply belongs to this conversation even if a new chat starts before it ends.
        view.conversation = self.chat_app.conversation
        self.generating = True
        # No number of the previous reply while this prompt is processed.
        self.show_stats(dataclasses.replace(self.stats.for_new_reply(), state="generating"))
        cancel = self.cancel_event = threading.Event()
        self.post_message(ResponseStarted(view))
        history = list(self.chat_app.conversation.messages)
        # Decode once both new views are mounted (the user's Markdown parsed, the streaming
        # body there to take the first token): mounting is ~20 ms of Python that would
        # otherwise hold the GIL against the decoding thread. Waiting for the layout passes
        # too (two refreshes) took decode to 0.77-0.81 of headless speed but the whole reply,
        # Enter to last token, 60-90 ms longer (benchmarks/tui_overhead.py), so it does not.
        await self.message_list.mounted()
        self._generate(loaded, settings, history, view, cancel)

    @work(thread=True, exclusive=True, group="reply")
    def _generate(
        self,
        loaded: LoadedModel,
        settings: ChatSettings,
        history: list[ChatMessage],
        view: MessageView,
        cancel: threading.Event,
    ) -> None:
        worker = get_current_worker()
        app = self.chat_app
        tracker = StatsTracker(self.stats)
        tracker.set(backend=loaded.backend, quant=loaded.quant, n_ctx=loaded.n_ctx)
        pending: list[str] = []
        last_flush = 0.0
        finished: Finished | None = None

        def flush() -> None:
            nonlocal last_flush
            now = time.perf_counter()
            tracker.observe(app.latest_snapshot(), now)
            self.post_message(ResponseChunk(view, "".join(pending), tracker.stats))
            pending.clear()
            last_flush = now

        try:
            stream = loaded.model.stream_chat(
                request_messages(settings, history),
                sampling=sampling_params(settings),
                max_tokens=settings.max_tokens,
                cancel=cancel,
            )
            for event in stream:
                if worker.is_cancelled:
                    cancel.set()
                tracker.feed(event)
                if isinstance(event, TokenEvent):
                    pending.append(event.text)
                    if event.index == 0 or time.perf_counter() - last_flush >= FLUSH_INTERVAL:
                        flush()
                elif isinstance(event, Started):
                    # The prompt's figures (PromptProcessed) go with the first token, which
                    # follows at once: a separate update would cost the decode a repaint.
                    flush()
                    self._tell_dropped(loaded, view)
                elif isinstance(event, Finished):
                    finished = event
        except ContextOverflowError as exc:
            self.post_message(ResponseFailed(view, str(exc), context_full=True))
            return
        except Exception as exc:  # a backend failure must not take the app down
            log.exception("generation failed")
            self.post_message(ResponseFailed(view, str(exc) or type(exc).__name__))
            return
        flush()
        if finished is None:
            self.post_message(ResponseFailed(view, "the stream ended without a Finished event"))
            return
        self.post_message(ResponseComplete(view, finished, tracker.stats))

    def _tell_dropped(self, loaded: LoadedModel, view: MessageView) -> None:
        # The runtime drops the oldest turns when the chat outgrows the context; say so, once
        # per conversation (from then on every turn drops some: a toast each turn piled up
        # over the chat).
        fit = getattr(loaded.model, "last_fit", None)
        dropped = getattr(fit, "dropped", 0)
        conv = view.conversation
        if isinstance(dropped, int) and dropped > 0 and conv is not self._told_dropped:
            self._told_dropped = conv
            note = self.chat_app.msgs("note.dropped", n=dropped, n_ctx=loaded.n_ctx or "?")
            self.chat_app.call_from_thread(self.notify, note, severity="warning")

    def _show_chunk(self, view: MessageView, text: str, stats: LiveStats) -> None:
        grew = view.append(text)
        now = time.perf_counter()
        if now - self._stats_shown_at >= STATS_INTERVAL:
            self._stats_shown_at = now
            self.show_stats(stats)
        else:
            self.stats = stats  # kept current; drawn at the next interval or at the end
        if grew:
            self._follow()

    def _follow(self) -> None:
        """Keep the newest text in view unless the person scrolled back to read.

        The list is anchored (it stays at the bottom as content grows, after every layout,
        including the Markdown that replaces the streamed text and mounts its blocks later);
        "are we within 3 lines of the bottom?" left a reply that grew by many lines at once
        with only its first line on screen.
        """
        messages = self.message_list
        if messages.is_anchored and not messages._anchor_released:
            messages.scroll_end(animate=False, immediate=True)

    # -- the worker's outcome -----------------------------------------------------------------

    def on_response_chunk(self, message: ResponseChunk) -> None:
        self._show_chunk(message.view, message.text, message.stats)

    def on_response_started(self, message: ResponseStarted) -> None:
        self.show_stats(self._with_state("generating"))

    def on_response_complete(self, message: ResponseComplete) -> None:
        m = self.chat_app.msgs
        fin, view = message.finished, message.view
        self.generating = False
        self.show_stats(message.stats)
        if fin.reason == "error":
            self._fail(view, fin.error or "error")
            return
        text = fin.text or view.text
        if text != view.text:  # e.g. the runtime trimmed a stop string
            view.set_text(text)
        view.finish()
        self._follow()
        if fin.reason == "context_full":
            self.notify(self._context_full_note(), severity="warning", timeout=8)
        elif fin.reason == "cancelled":
            view.mark(m("chat.stopped"))
            self.notify(m("note.stopped"))
        if not text.strip():
            if view.is_attached:
                view.remove()
            return
        s = message.stats
        self._record(
            ChatMessage(
                "assistant",
                text,
                stats={
                    "finish_reason": fin.reason,
                    "backend": s.backend,
                    "quant": s.quant,
                    "prompt_tokens": fin.prompt_tokens,
                    "completion_tokens": fin.completion_tokens,
                    "ttft_s": fin.ttft,
                    "decode_tps": fin.decode_tps,
                    "prompt_tps": s.prompt_tps,  # the prefill's, as the panel shows it
                    "joules_per_token": s.joules_per_token,
                },
            ),
            view.conversation,
        )

    def on_response_failed(self, message: ResponseFailed) -> None:
        self.generating = False
        self.show_stats(self._with_state("idle"))
        if message.context_full:
            self.notify(self._context_full_note(), severity="warning", timeout=8)
            if message.view.is_attached:
                message.view.remove()
        else:
            self._fail(message.view, message.error)

    def _fail(self, view: MessageView, error: str) -> None:
        # A failed reply is neither shown nor saved, so the views keep mirroring
        # Conversation.messages one to one (regenerate and edit rely on that).
        self.notify(self.chat_app.msgs("note.failed", error=error), severity="error", timeout=8)
        if view.is_attached:
            view.remove()

    def _context_full_note(self) -> str:
        """What to do when the context is full: a larger one only while the model has one."""
        m, loaded = self.chat_app.msgs, self.chat_app.loaded
        n_ctx = (loaded.n_ctx if loaded else None) or self.stats.n_ctx
        top = loaded.n_ctx_max if loaded else None
        if n_ctx and top and n_ctx < top:
            return m("note.context_full", n_ctx=n_ctx, max=top)
        return m("note.context_full_max", n_ctx=n_ctx or "?")

    def _with_state(self, state: Any) -> LiveStats:
        return dataclasses.replace(self.stats, state=state)
