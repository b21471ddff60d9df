"""Key bindings of the chat screen: one table, used by the screen, the footer and the help.

Function keys do the screen-changing actions because they reach the app unchanged through
SSH, tmux and the Jetson's serial console; the Ctrl keys are priority bindings so the input
box does not swallow them (Ctrl+E there would otherwise mean "end of line"), and so are the
function keys and PageUp/PageDown (the multi-line input box binds F6, F7 and the page keys).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    keys: str  # Textual key names, comma-separated
    action: str  # ChatScreen action, or "app.<action>" for the app's (screens, export, quit)
    label: str  # i18n key of its description (the help screen)
    show: bool = True  # in the footer (all are in the help screen)
    priority: bool = False
    footer: str | None = None  # i18n key of a shorter footer label


# Handled by someone other than the chat screen's bindings (see ChatScreen.__init__).
NOT_SCREEN_BINDINGS = ("send", "newline", "interrupt")

# The footer shows the keys a newcomer needs and fits 120 columns in Portuguese (F1 lists
# all); the rest are in the help screen only.
KEYS: tuple[Key, ...] = (
    Key("enter", "send", "key.send", show=False),  # the input box (PromptInput.Submitted)
    Key("shift+enter,ctrl+j", "newline", "key.newline", show=False),  # the input box
    Key("escape", "stop", "key.stop"),
    Key("ctrl+c", "interrupt", "key.interrupt", show=False),  # the App: stop, twice quits
    Key("ctrl+r", "regenerate", "key.regenerate", show=False, priority=True),
    Key("ctrl+e", "edit_last", "key.edit", show=False, priority=True),
    Key("ctrl+n", "new_chat", "key.new", priority=True, footer="key.new.short"),
    Key("pageup", "scroll_up", "key.page_up", show=False, priority=True),
    Key("pagedown", "scroll_down", "key.page_down", show=False, priority=True),
    Key("f1", "app.show_help", "key.help", priority=True),
    Key("f2", "app.show_settings", "key.settings", priority=True),
    Key("f3", "app.show_history", "key.history", priority=True),
    Key("f4", "app.show_model", "key.model", priority=True),
    Key("f5", "app.show_why", "key.why", priority=True),
    Key("f6", "app.export", "key.export", priority=True),
    Key("f7", "copy_reply", "key.copy", priority=True, footer="key.copy.short"),
    Key("ctrl+q", "app.quit", "key.quit", priority=True),
)
