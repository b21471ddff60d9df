"""The sampling settings modal: temperature, top-p, max tokens and the system prompt."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.settings import ChatSettings


class SettingsScreen(ModalScreen[ChatSettings | None]):
    """Dismisses with the new :class:`ChatSettings`, or ``None`` when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", show=False),
        Binding("ctrl+s", "save", show=False, priority=True),
    ]

    def __init__(self, msgs: Messages, current: ChatSettings) -> None:
        super().__init__()
        self.msgs = msgs
        self.current = current

    def compose(self) -> ComposeResult:
        m, c = self.msgs, self.current
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label(m("settings.title"), classes="dialog-title")
            with Grid(classes="form"):
                yield Label(m("settings.temperature"))
                yield Input(str(c.temperature), id="temperature", type="number", compact=True)
                yield Label(m("settings.top_p"))
                yield Input(str(c.top_p), id="top_p", type="number", compact=True)
                yield Label(m("settings.max_tokens"))
                yield Input(str(c.max_tokens), id="max_tokens", type="integer", compact=True)
            yield Label(m("settings.system"), classes="form-gap")
            yield TextArea(c.system, id="system", soft_wrap=True, compact=True)
            with Horizontal(classes="buttons"):
                yield Button(m("key.save"), id="save", variant="primary", compact=True)
                yield Button(m("key.cancel"), id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def read(self) -> ChatSettings | str:
        """The settings as typed, or the label of the first invalid field."""
        fields = {
            "temperature": ("settings.temperature", float),
            "top_p": ("settings.top_p", float),
            "max_tokens": ("settings.max_tokens", int),
        }
        values: dict[str, float | int] = {}
        for name, (label, kind) in fields.items():
            raw = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = kind(raw)
            except ValueError:
                return self.msgs("settings.invalid", field=self.msgs(label), value=raw or "∅")
        system = self.query_one("#system", TextArea).text.strip() or self.current.system
        settings = ChatSettings(
            system=system,
            temperature=float(values["temperature"]),
            top_p=float(values["top_p"]),
            max_tokens=int(values["max_tokens"]),
        )
        bad = settings.validate()
        if bad is not None:
            label, _ = fields[bad]
            value = self.query_one(f"#{bad}", Input).value
            return self.msgs("settings.invalid", field=self.msgs(label), value=value)
        return settings

    def action_save(self) -> None:
        result = self.read()
        if isinstance(result, str):
            self.notify(result, severity="error")
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)
