"""The message box: several lines, Enter sends, Shift+Enter or Ctrl+J starts a new line.

A :class:`~textual.widgets.TextArea` rather than an ``Input``, so a pasted text keeps every
line (an ``Input`` keeps the first). Terminals send Shift+Enter as plain Enter unless they
speak an extended keyboard protocol (kitty, foot, WezTerm, recent xterm with modifyOtherKeys),
so Ctrl+J, which every terminal sends as a line feed, is the newline that always works.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j")
CHAT_KEYS = ("f6", "f7", "pageup", "pagedown")


class PromptInput(TextArea):
    """Multi-line input that posts :class:`PromptInput.Submitted` on Enter."""

    @dataclass
    class Submitted(Message):
        input: PromptInput
        value: str

        @property
        def control(self) -> PromptInput:
            return self.input

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            id=id,
            placeholder=placeholder,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
        )
        # TextArea's own F6/F7 (select line / all) and page keys belong to the chat here
        # (ChatScreen binds them); dropped so the footer lists the keys in the table's order.
        for key in CHAT_KEYS:
            self._bindings.key_to_bindings.pop(key, None)

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)

    @property
    def cursor_position(self) -> int:
        """Characters before the cursor (as ``Input.cursor_position``)."""
        row, col = self.cursor_location
        lines = self.text.split("\n")
        return sum(len(line) + 1 for line in lines[:row]) + col

    @cursor_position.setter
    def cursor_position(self, offset: int) -> None:
        before = self.text[:offset]
        self.move_cursor((before.count("\n"), len(before.rsplit("\n", 1)[-1])))

    async def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            await self.action_submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
