"""Key bindings of the chat screen: one table, used by the screen, the footer and the help.

Function keys do the screen-changing actions because they reach the app unchanged through
SSH, tmux and the Jetson's serial console; the Ctrl keys are priority bindings so the input
box does not swallow them (Ctrl+E there would otherwise mean "end of line").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    keys: str  # Textual key names, comma-separated
    action: str  # ChatScreen action (without the "action_" prefix)
    label: str  # i18n key of its description
    show: bool = True  # in the footer (all are in the help screen)
    priority: bool = False


KEYS: tuple[Key, ...] = (
    Key("enter", "send", "key.send", show=False),  # handled by the input box (Input.Submitted)
    Key("escape", "stop", "key.stop"),
    Key("ctrl+r", "regenerate", "key.regenerate", priority=True),
    Key("ctrl+e", "edit_last", "key.edit", priority=True),
    Key("ctrl+n", "new_chat", "key.new", priority=True),
    Key("f1", "help", "key.help"),
    Key("f2", "settings", "key.settings"),
    Key("f3", "history", "key.history"),
    Key("f4", "switch_model", "key.model"),
    Key("f5", "why", "key.why"),
    Key("f6", "export", "key.export"),
    Key("ctrl+q", "quit", "key.quit", show=False),  # the App's own binding
)
