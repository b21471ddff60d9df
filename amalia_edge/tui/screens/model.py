"""The model switch modal: model path, backend, quant type and context size."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.settings import ModelSpec


class ModelScreen(ModalScreen[ModelSpec | None]):
    """Dismisses with the :class:`ModelSpec` to load, or ``None`` when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", show=False)]

    def __init__(self, msgs: Messages, current: ModelSpec, quants: list[str] | None = None) -> None:
        super().__init__()
        self.msgs = msgs
        self.current = current
        # The artifacts the current model has: a list to pick from rather than a name to
        # guess (a typo used to unload the working model).
        self.quants = list(quants or [])

    def compose(self) -> ComposeResult:
        m, c = self.msgs, self.current
        with VerticalScroll(id="dialog", classes="dialog -wide"):
            yield Label(m("model.title"), classes="dialog-title")
            with Vertical(classes="form-stacked"):
                yield Label(m("model.path"))
                yield Input(c.model or "", id="model", compact=True)
                yield Label(m("model.backend"))
                yield Input(c.backend or "", id="backend", compact=True)
                yield Label(m("model.quant"))
                if self.quants:
                    options = [(m("model.quant.auto"), ""), *((q, q) for q in self.quants)]
                    value = c.quant if c.quant in self.quants else ""
                    yield Select(options, value=value, allow_blank=False, id="quant", compact=True)
                else:
                    yield Input(c.quant or "", id="quant", compact=True)
                yield Label(m("model.ctx"))
                yield Input(str(c.n_ctx or ""), id="n_ctx", type="integer", compact=True)
            with Horizontal(classes="buttons"):
                yield Button(m("model.title"), id="load", variant="primary", compact=True)
                yield Button(m("key.cancel"), id="cancel", compact=True)

    def read(self) -> ModelSpec:
        def text(name: str) -> str | None:
            widget = self.query_one(f"#{name}")
            value = widget.value if isinstance(widget, (Input, Select)) else None
            return value.strip() or None if isinstance(value, str) else None

        raw_ctx = text("n_ctx")
        n_ctx = int(raw_ctx) if raw_ctx and raw_ctx.isdigit() and int(raw_ctx) > 0 else None
        return ModelSpec(
            model=text("model"),
            backend=text("backend"),
            quant=text("quant"),
            n_ctx=n_ctx,
            threads=self.current.threads,
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "load":
            self.dismiss(self.read())
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(self.read())

    def action_cancel(self) -> None:
        self.dismiss(None)
