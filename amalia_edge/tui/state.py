"""What the chat screen may know of the app that owns the chat's state.

The app (:class:`~amalia_edge.tui.app.ChatApp`) owns the conversation, the loaded model
and the settings, and is the only one that changes them; the chat screen reads them through
this protocol and asks for changes through its methods (as elia's widgets post their
messages up). The screen never imports the app, so there is no import cycle between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from amalia_edge.tui.history import ChatMessage, Conversation
    from amalia_edge.tui.i18n import Messages
    from amalia_edge.tui.model import LoadedModel
    from amalia_edge.tui.settings import ChatSettings


class ChatHost(Protocol):
    """The app as the chat screen sees it (read-only state, plus requests to change it)."""

    msgs: Messages
    conversation: Conversation
    loaded: LoadedModel | None
    loading: bool
    settings: ChatSettings

    def latest_snapshot(self) -> Any:
        """The telemetry monitor's latest snapshot or ``None`` (callable from any thread)."""
        ...

    def record(self, message: ChatMessage, conversation: Conversation | None = None) -> None:
        """Append ``message`` to ``conversation`` (default: the current one) and save it."""
        ...

    def truncate(self, keep: int) -> None:
        """Drop the current conversation's messages from index ``keep`` on."""
        ...

    def new_conversation(self) -> None: ...

    def call_from_thread(self, callback: Any, *args: Any, **kwargs: Any) -> Any: ...
