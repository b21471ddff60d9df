"""The help screen: every key binding with its description, from :data:`keys.KEYS`."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.keys import KEYS


def key_display(keys: str) -> str:
    """``"ctrl+r,f5"`` -> ``"Ctrl+R / F5"`` (how the help lists a binding)."""
    names = {"escape": "Esc", "pageup": "PageUp", "pagedown": "PageDown"}
    parts = []
    for key in keys.split(","):
        words = [
            names.get(w, w.capitalize() if len(w) > 1 else w.upper())
            for w in key.strip().split("+")
        ]
        parts.append("+".join(words))
    return " / ".join(parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "close", show=False)]

    def __init__(self, msgs: Messages) -> None:
        super().__init__()
        self.msgs = msgs

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key in KEYS:
            table.add_row(key_display(key.keys), self.msgs(key.label))
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label(self.msgs("help.title"), classes="dialog-title")
            yield Static(self.msgs("help.intro"), classes="help-intro")
            yield Static(table, id="help-keys")
            yield Label(f"Esc · {self.msgs('key.close')}", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
