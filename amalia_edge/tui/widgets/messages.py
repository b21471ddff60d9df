"""The conversation: one :class:`MessageView` per message, Markdown-rendered, in a scroller.

A reply that is still streaming is shown as plain text (:class:`StreamingBody`) and becomes
Markdown once, when it is complete (:meth:`MessageView.finish`). Streaming straight into a
``Markdown`` widget mounts a new block widget (styles, a layout pass of the whole screen) for
every paragraph or list item that appears, and that work in the UI thread took the GIL from
the decoding thread: see ``benchmarks/tui_overhead.py``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, Markdown

if TYPE_CHECKING:
    from textual.widget import AwaitMount

    from amalia_edge.tui.history import Conversation

LAYOUT_INTERVAL = 0.5  # seconds: the most often a streaming reply's growth re-lays the screen


class StreamingBody(Widget):
    """The text of a reply as it streams: plain, wrapped, cheap to grow.

    :meth:`append` repaints only this widget. A layout pass (it walks the whole screen: a
    median 18 ms of Python here) is asked for only when the wrapped text gains a line, and
    then at most once per :data:`LAYOUT_INTERVAL`; until then the new line waits below the
    widget's edge. The first line is reserved from the start (``min-height: 1``).
    """

    DEFAULT_CSS = "StreamingBody { height: auto; min-height: 1; }"

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.text = ""
        self._lines = 1
        self._last_layout = time.monotonic()  # the mount's layout

    def render(self) -> Text:
        return Text(self.text)

    def append(self, fragment: str) -> bool:
        """Add ``fragment``; whether the text now takes more lines (the layout changed)."""
        self.text += fragment
        lines = self._wrapped_lines()
        now = time.monotonic()
        grew = lines != self._lines and now - self._last_layout >= LAYOUT_INTERVAL
        if grew:
            self._lines, self._last_layout = lines, now
        self.refresh(layout=grew)
        return grew

    def _wrapped_lines(self) -> int:
        width = self.content_region.width or self.size.width
        if width <= 0:
            return -1  # not laid out yet: let the layout pass measure it
        return len(Text(self.text).wrap(self.app.console, width))


class MessageView(Vertical):
    """A role label over a body: Markdown, or while a reply streams a :class:`StreamingBody`
    that :meth:`finish` replaces with Markdown."""

    def __init__(
        self, role: str, label: str, content: str = "", *, streaming: bool = False
    ) -> None:
        super().__init__(classes=f"message -{role}")
        self.role = role
        self.conversation: Conversation | None = None  # set on a reply: where it is saved
        self.mounted: AwaitMount | None = None  # MessageList.add: await it for the mount
        self._label = label
        self.text = content
        self.body: Markdown | StreamingBody = (
            StreamingBody(classes="body") if streaming else Markdown(content, classes="body")
        )

    def compose(self) -> ComposeResult:
        yield Label(self._label, classes="role")
        yield self.body

    @property
    def live(self) -> bool:
        """Still on screen (a new chat removes the views of a reply that is still ending)."""
        return self.is_attached and self.body.is_attached

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, StreamingBody)

    def append(self, fragment: str) -> bool:
        """Add streamed text; whether the view's height may have changed."""
        if not fragment:
            return False
        self.text += fragment
        if not self.live:
            return False
        if isinstance(self.body, StreamingBody):
            return self.body.append(fragment)
        self.body.append(fragment)
        return True

    def set_text(self, text: str) -> None:
        self.text = text
        if not self.live:
            return
        if isinstance(self.body, StreamingBody):
            self.body.text = ""
            self.body.append(text)
        else:
            self.body.update(text)

    def finish(self) -> None:
        """The reply is complete: show it as Markdown from now on (one parse, one mount)."""
        old = self.body
        if not isinstance(old, StreamingBody):
            return
        self.body = Markdown(self.text, classes="body")
        if self.is_attached and old.is_attached:
            self.mount(self.body, after=old)
            old.remove()

    def mark(self, note: str) -> None:
        """Add a short note after the body (e.g. "(stopped)")."""
        if self.is_attached:
            self.mount(Label(note, classes="note"))


class MessageList(VerticalScroll):
    """The scrolling list of messages, anchored to the bottom: it follows a growing reply
    until the person scrolls up, and again once they scroll back to the end."""

    can_focus = False

    def on_mount(self) -> None:
        self.anchor()

    def add(
        self, role: str, label: str, content: str = "", *, streaming: bool = False
    ) -> MessageView:
        view = MessageView(role, label, content, streaming=streaming)
        view.mounted = self.mount(view)
        return view

    @property
    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def mounted(self) -> None:
        """Wait until every view added so far is mounted, Markdown blocks included (a
        ``Markdown`` parses and mounts its blocks in its own mount handler)."""
        for view in self.views:
            pending, view.mounted = view.mounted, None
            if pending is not None:
                await pending

    def remove_from(self, index: int) -> None:
        """Remove the views from ``index`` on (they mirror ``Conversation.messages``)."""
        for view in self.views[index:]:
            view.remove()

    def clear(self) -> None:
        self.remove_children()
