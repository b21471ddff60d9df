"""The saved-conversations list; choosing one resumes it."""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from amalia_edge.tui.history import ConversationSummary
from amalia_edge.tui.i18n import Messages


class HistoryScreen(ModalScreen[str | None]):
    """Dismisses with the chosen conversation id, or ``None``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f3", "close", show=False)]

    def __init__(self, msgs: Messages, conversations: list[ConversationSummary]) -> None:
        super().__init__()
        self.msgs = msgs
        self.conversations = conversations

    def compose(self) -> ComposeResult:
        m = self.msgs
        with Vertical(id="dialog", classes="dialog -wide"):
            yield Label(m("history.title"), classes="dialog-title")
            if not self.conversations:
                yield Label(m("history.empty"))
            else:
                yield OptionList(
                    *(
                        Option(
                            m(
                                "history.row",
                                title=c.title or m("history.untitled"),
                                n=c.n_messages,
                                when=time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated)),
                            ),
                            id=c.id,
                        )
                        for c in self.conversations
                    ),
                    id="history-list",
                    compact=True,
                )
            yield Label(f"Enter · {m('key.open')}   Esc · {m('key.close')}", classes="dialog-hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_close(self) -> None:
        self.dismiss(None)
