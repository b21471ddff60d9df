"""The TUI's one seam to the runtime: load a model, describe its selection, build requests.

Everything the chat app needs from ``amalia_edge.runtime`` goes through here, so the screens
never depend on more than :class:`ChatModel` (a loaded model that streams events) and
:class:`LoadedModel` (that model plus what the stats panel and the "why" screen show).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from amalia_edge.runtime.events import Event
from amalia_edge.tui.history import ChatMessage
from amalia_edge.tui.settings import ChatSettings, ModelSpec


class ChatModel(Protocol):
    """What the chat app calls on a model (``amalia_edge.runtime.load_model`` returns one)."""

    def stream_chat(
        self,
        messages: Sequence[Any],
        *,
        sampling: Any = ...,
        max_tokens: int = ...,
        stop: Sequence[str] = ...,
        cancel: threading.Event | None = ...,
    ) -> Iterator[Event]: ...


@dataclass
class LoadedModel:
    """A loaded model with the facts the interface shows about it."""

    model: ChatModel
    spec: ModelSpec
    backend: str | None = None
    quant: str | None = None
    n_ctx: int | None = None
    chosen: list[str] = field(default_factory=list)  # why this backend/artifact, one reason a line
    rejected: list[str] = field(default_factory=list)  # each other candidate and why not

    def close(self) -> None:
        """Free the model now (two 9B models do not fit in an Orin's memory at once)."""
        closer = getattr(self.model, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


Loader = Callable[[ModelSpec], LoadedModel]


def load(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` with the runtime (slow: call it from a worker thread)."""
    from amalia_edge.runtime import load_model

    model = load_model(spec.model, backend=spec.backend, quant=spec.quant, n_ctx=spec.n_ctx)
    return describe(model, spec)


def describe(model: Any, spec: ModelSpec) -> LoadedModel:
    """Read backend, quant, context size and the selection's reasons off a runtime model."""
    selection = getattr(model, "selection", None)
    chosen, rejected = explain_selection(selection)
    cand = getattr(selection, "chosen", None)
    backend = _first_attr((cand, model), ("backend", "backend_name", "name"))
    quant = _first_attr((cand, getattr(cand, "artifact", None), model), ("quant", "quant_type"))
    n_ctx = _first_attr((model,), ("n_ctx",))
    return LoadedModel(
        model=model,
        spec=spec,
        backend=None if backend is None else str(backend),
        quant=None if quant is None else str(quant),
        n_ctx=int(n_ctx) if isinstance(n_ctx, int) else spec.n_ctx,
        chosen=chosen,
        rejected=rejected,
    )


def explain_selection(selection: Any) -> tuple[list[str], list[str]]:
    """Lines for the "why this backend" screen: the chosen candidate and each rejected one."""
    if selection is None:
        return [], []
    chosen = getattr(selection, "chosen", None)
    rejected = getattr(selection, "rejected", None) or ()
    return ([_describe_candidate(chosen)] if chosen is not None else []), [
        _describe_candidate(c) for c in rejected
    ]


def _describe_candidate(cand: Any) -> str:
    describe_fn = getattr(cand, "describe", None)
    if callable(describe_fn):
        return str(describe_fn())
    name = _first_attr((cand,), ("backend", "backend_name", "name"))
    quant = _first_attr((cand, getattr(cand, "artifact", None)), ("quant", "quant_type"))
    reasons = getattr(cand, "reasons", None) or ()
    head = " · ".join(str(x) for x in (name, quant) if x is not None) or str(cand)
    return head + ("".join(f"\n    {r}" for r in reasons) if reasons else "")


def _first_attr(objs: Sequence[Any], names: Sequence[str]) -> Any:
    for obj in objs:
        if obj is None:
            continue
        for name in names:
            value = getattr(obj, name, None)
            if value is not None and not callable(value):
                return value
    return None


def request_messages(settings: ChatSettings, history: Sequence[ChatMessage]) -> list[Any]:
    """The system prompt and the conversation as the runtime's ``Message`` objects."""
    from amalia_edge.runtime import Message

    out = [Message(role="system", content=settings.system)] if settings.system else []
    out += [Message(role=m.role, content=m.content) for m in history]
    return out


def sampling_params(settings: ChatSettings) -> Any:
    from amalia_edge.runtime import SamplingParams

    return SamplingParams(temperature=settings.temperature, top_p=settings.top_p)
