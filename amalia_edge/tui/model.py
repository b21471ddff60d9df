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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from amalia_edge.runtime.events import Event
from amalia_edge.tui.history import ChatMessage
from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.settings import ChatSettings, ModelSpec

if TYPE_CHECKING:
    from amalia_edge.runtime.chat import Role
    from amalia_edge.runtime.model import Model
    from amalia_edge.runtime.selection import Candidate, Selection


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
    quants: list[str] = field(default_factory=list)  # the model's usable artifacts (F4 offers them)
    selection: Selection | None = None  # the runtime's decision (the "why" screen explains it)
    n_ctx_max: int | None = None  # the model's training context (the most --ctx can give)

    def close(self) -> None:
        """Free the model now (two 9B models do not fit in an Orin's memory at once)."""
        closer = getattr(self.model, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


Loader = Callable[[ModelSpec], LoadedModel]


def load(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` with the runtime (slow: call it from a worker thread)."""
    from amalia_edge.runtime import LoadOptions, load_model

    # n_ctx None: the runtime's default context (2048, or the model's trained one if shorter)
    options = LoadOptions(n_threads=spec.threads or default_threads())
    model = load_model(
        resolve_model(spec.model),
        backend=spec.backend,
        quant=spec.quant,
        n_ctx=spec.n_ctx,
        options=options,
    )
    return describe(model, spec)


def resolve_model(model: str | None) -> str | Path:
    """``model`` itself, or for ``None`` the bundled demo model's artifacts directory.

    That is :func:`amalia_edge.runtime.default_model_path`, the default MODEL of every
    command, so the demo is converted once into the user cache for all of them. Slow the
    first time (conversion, seconds): call it from a worker thread, as :func:`load` is. No
    progress bars: they would draw over the app.
    """
    if model is not None:
        return model
    from amalia_edge.runtime.artifacts import default_model_path

    return default_model_path(progress=False)


def default_threads() -> int:
    """Decode threads when none are asked for: the physical cores less one, at least one.

    The llama.cpp backend's own default is every physical core, which suits a headless
    run; in the chat the UI thread needs a core too, and a decode thread that the UI
    preempts holds up the others at every synchronisation point of each token.
    """
    from amalia_edge.runtime.backend import default_threads as backend_default

    return max(1, backend_default() - 1)


def describe(model: Model, spec: ModelSpec) -> LoadedModel:
    """Backend, quant, context size and the selection's reasons of a runtime ``Model``."""
    why = explain_selection(model.selection, Messages("en"))
    return LoadedModel(
        model=model,
        spec=spec,
        backend=model.backend_name,
        quant=model.artifact.quant,
        n_ctx=model.n_ctx,
        chosen=why.chosen,
        rejected=why.rejected,
        selection=model.selection,
        quants=list(dict.fromkeys(a.quant for a in model.source.usable())),
        n_ctx_max=min((a.shape.n_ctx_train for a in model.source.usable() if a.shape), default=None)
        or None,
    )


@dataclass
class Explanation:
    """The "why this backend" screen's three lists, in the interface's language."""

    chosen: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)  # would run too
    rejected: list[str] = field(default_factory=list)  # cannot run here, or failed


def explain_selection(selection: Selection | None, msgs: Messages) -> Explanation:
    """The chosen candidate, the others that could run, and those that cannot, each with its
    reasons said from the selection's data in ``msgs``'s language (the runtime's own
    reasons are English sentences for the CLI)."""
    out = Explanation()
    if selection is None:
        return out
    for c in selection.candidates:
        line = _candidate_line(c, msgs, selection)
        if c.status == "chosen":
            out.chosen.append(line)
        elif c.viable:
            out.alternatives.append(line)
        else:
            out.rejected.append(line)
    for b in selection.backends:
        if not b.ok:
            out.rejected.append(msgs("why.backend_missing", backend=b.name))
    return out


def _gib(n: float | int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.2f} GiB"


def _candidate_line(c: Candidate, msgs: Messages, selection: Selection) -> str:
    art = c.artifact
    lines = [f"{c.backend} · {art.kind} {art.quant}"]
    if c.status == "failed":
        lines.append(msgs("why.failed"))
    elif c.status == "rejected":
        wanted = {
            "quant": selection.requested_quant,
            "backend_filter": selection.requested_backend,
            "ctx": art.shape.n_ctx_train if art.shape else None,
        }.get(c.kind)
        need = c.memory.total if c.memory else None
        lines.append(
            msgs(
                f"why.rejected.{c.kind or 'other'}",
                wanted=wanted or "?",
                n_ctx=selection.n_ctx,
                need=_gib(need),
                avail=_gib(c.memory_available),
            )
        )
    if c.viable:
        if c.memory is not None:
            if c.memory_available is not None:
                fit = msgs("why.fits", need=_gib(c.memory.total), avail=_gib(c.memory_available))
            else:
                fit = msgs("why.needs", need=_gib(c.memory.total))
            lines.append(fit)
        if c.measured_tps is not None:
            lines.append(msgs("why.measured", tps=f"{c.measured_tps:.1f}"))
        elif c.est_tps is not None:
            lines.append(msgs("why.estimated", tps=f"{c.est_tps:.1f}"))
        if c.quality_source == "kld" and c.quality_cost is not None:
            lines.append(msgs("why.kld", kld=f"{c.quality_cost:.4f}"))
        elif art.bpw:
            lines.append(msgs("why.bpw", bpw=f"{art.bpw:.2f}"))
    return "\n    ".join(lines)


def request_messages(settings: ChatSettings, history: Sequence[ChatMessage]) -> list[Any]:
    """The system prompt and the conversation as the runtime's ``Message`` objects."""
    from amalia_edge.runtime.chat import Message

    out = [Message(role="system", content=settings.system)] if settings.system else []
    out += [Message(role=cast("Role", m.role), content=m.content) for m in history]
    return out


def sampling_params(settings: ChatSettings) -> Any:
    from amalia_edge.runtime.sampling import SamplingParams

    return SamplingParams(temperature=settings.temperature, top_p=settings.top_p)
