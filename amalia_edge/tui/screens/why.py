"""Why this backend: the runtime's selection, chosen candidate and each rejected one."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from amalia_edge.tui.i18n import Messages


class WhyScreen(ModalScreen[None]):
    """Shows the lines of :func:`amalia_edge.tui.model.explain_selection`."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f5,q", "close", show=False)]

    def __init__(
        self,
        msgs: Messages,
        chosen: list[str],
        rejected: list[str],
        alternatives: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.msgs = msgs
        self.chosen = chosen
        self.alternatives = list(alternatives or [])
        self.rejected = rejected

    def compose(self) -> ComposeResult:
        m = self.msgs
        with VerticalScroll(id="dialog", classes="dialog -wide"):
            yield Label(m("why.title"), classes="dialog-title")
            if not self.chosen and not self.rejected:
                yield Static(m("why.none"))
            else:
                yield Label(m("why.chosen"), classes="why-heading")
                yield Static("\n".join(f"✓ {line}" for line in self.chosen) or "—")
                if self.alternatives:
                    yield Label(m("why.alternatives"), classes="why-heading")
                    yield Static("\n".join(f"· {line}" for line in self.alternatives))
                yield Label(m("why.rejected"), classes="why-heading")
                yield Static("\n".join(f"✗ {line}" for line in self.rejected) or "—")
            yield Label(f"Esc · {m('key.close')}", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
