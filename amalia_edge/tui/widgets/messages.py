"""The conversation: one :class:`MessageView` per message, Markdown-rendered, in a scroller."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown

if TYPE_CHECKING:
    from amalia_edge.tui.history import Conversation


class MessageView(Vertical):
    """A role label over a Markdown body; a streaming reply grows through :meth:`append`."""

    def __init__(self, role: str, label: str, content: str = "") -> None:
        super().__init__(classes=f"message -{role}")
        self.role = role
        self.conversation: Conversation | None = None  # set on a reply: where it is saved
        self._label = label
        self.text = content
        self.body = Markdown(content, classes="body")

    def compose(self) -> ComposeResult:
        yield Label(self._label, classes="role")
        yield self.body

    @property
    def live(self) -> bool:
        """Still on screen (a new chat removes the views of a reply that is still ending)."""
        return self.is_attached and self.body.is_attached

    def append(self, fragment: str) -> None:
        """Add streamed text. ``Markdown.append`` re-parses only the last block, so a long
        reply costs the same per update as a short one."""
        if fragment:
            self.text += fragment
            if self.live:
                self.body.append(fragment)

    def set_text(self, text: str) -> None:
        self.text = text
        if self.live:
            self.body.update(text)

    def mark(self, note: str) -> None:
        """Add a short note after the body (e.g. "(stopped)")."""
        if self.is_attached:
            self.mount(Label(note, classes="note"))


class MessageList(VerticalScroll):
    """The scrolling list of messages; follows the bottom while a reply streams."""

    can_focus = False

    def add(self, role: str, label: str, content: str = "") -> MessageView:
        view = MessageView(role, label, content)
        self.mount(view)
        self.scroll_end(animate=False)
        return view

    @property
    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    def remove_from(self, index: int) -> None:
        """Remove the views from ``index`` on (they mirror ``Conversation.messages``)."""
        for view in self.views[index:]:
            view.remove()

    def clear(self) -> None:
        self.remove_children()
