"""``load_model``: resolve, probe, select, load (falling back on failure), and stream.

Every front end (``amalia-edge generate``, the chat TUI, benchmarks) goes through
:class:`Model`, whose ``stream``/``stream_chat`` yield :mod:`amalia_edge.runtime.events`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

from amalia_edge.errors import AmaliaEdgeError, BackendError, ContextOverflowError
from amalia_edge.runtime import registry
from amalia_edge.runtime.artifacts import Artifact, ModelSource, resolve_model
from amalia_edge.runtime.backend import BackendSession, LoadOptions
from amalia_edge.runtime.chat import FittedChat, Message, fit_messages, with_system_prompt
from amalia_edge.runtime.events import Event, Finished
from amalia_edge.runtime.sampling import SamplingParams
from amalia_edge.runtime.selection import Selection, autotune, select

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo

log = logging.getLogger(__name__)

# Room kept for the reply when fitting a chat into the context: max_tokens, but at most this
# share of the context, so a long --max-tokens does not evict the whole conversation.
REPLY_RESERVE_SHARE = 0.25

# Context size when none is asked for: enough for a chat turn or a benchmark prompt while
# keeping the KV cache small on a 32 GB Orin (2048 tokens of AMÁLIA-9B's f16 KV ≈ 0.3 GiB).
DEFAULT_N_CTX = 2048


class Model:
    """A loaded model plus the selection that chose it. Use as a context manager or ``close()``."""

    def __init__(self, session: BackendSession, selection: Selection, source: ModelSource) -> None:
        self.session = session
        self.selection = selection
        self.source = source
        self.last_fit: FittedChat | None = None

    @property
    def backend_name(self) -> str:
        return self.session.backend

    @property
    def artifact(self) -> Artifact:
        return self.session.artifact

    @property
    def n_ctx(self) -> int:
        return self.session.n_ctx

    @property
    def name(self) -> str:
        return self.source.name

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Stream a reply to a raw prompt (no chat template)."""
        return self.session.stream(
            prompt, sampling=sampling, max_tokens=max_tokens, stop=stop, cancel=cancel
        )

    def fit_chat(
        self, messages: Sequence[Message], max_tokens: int = 256, system: str | None = None
    ) -> FittedChat:
        """The prompt for ``messages`` after the context policy (see :func:`fit_messages`).

        The reply's room is ``max_tokens`` but at most :data:`REPLY_RESERVE_SHARE` of the
        context while the whole chat fits; once old turns must be dropped anyway, enough are
        dropped to leave room for a whole reply (else each later reply would be cut short
        at the reserve, with ``context_full``).
        """
        msgs = with_system_prompt(messages, system)
        session = self.session

        def fit(reserve: int) -> FittedChat:
            return fit_messages(
                msgs,
                render=lambda m: session.apply_chat_template(m),
                count_tokens=lambda text: len(session.prompt_ids(text)),
                n_ctx=self.n_ctx,
                reserve=reserve,
            )

        reserve = max(1, min(max_tokens, int(self.n_ctx * REPLY_RESERVE_SHARE)))
        fitted = fit(reserve)
        if fitted.dropped and max_tokens > reserve:
            system_msgs = msgs[:1] if msgs and msgs[0].role == "system" else []
            smallest = session.prompt_ids(session.apply_chat_template([*system_msgs, msgs[-1]]))
            room = min(max_tokens, self.n_ctx - len(smallest))
            if room > reserve:
                fitted = fit(room)
        return fitted

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        system: str | None = None,
    ) -> Iterator[Event]:
        """Stream the assistant's reply to ``messages`` with the model's own chat template.

        ``system``: the system prompt when ``messages`` has none (None → the pt-PT default,
        "" → none). Oldest turns are dropped when the chat outgrows the context
        (``self.last_fit.dropped`` says how many); ContextOverflowError only when the system
        prompt and the last message alone do not fit.
        """
        fitted = self.fit_chat(messages, max_tokens, system)
        if fitted.dropped:
            log.info(
                "context: dropped the %d oldest message(s) to fit %d tokens",
                fitted.dropped,
                self.n_ctx,
            )
        self.last_fit = fitted
        return self.session.stream(
            fitted.prompt, sampling=sampling, max_tokens=max_tokens, stop=stop, cancel=cancel
        )

    def generate(
        self,
        prompt: str | Sequence[int] | Sequence[Message],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        system: str | None = None,
    ) -> Finished:
        """Run to completion and return the final record: a chat when given messages, a raw
        prompt when given text or token ids."""
        events: Iterator[Event]
        if isinstance(prompt, str) or not all(isinstance(m, Message) for m in prompt):
            raw = cast("str | Sequence[int]", prompt)
            events = self.stream(raw, sampling=sampling, max_tokens=max_tokens, stop=stop)
        else:
            msgs = cast("Sequence[Message]", prompt)
            events = self.stream_chat(
                msgs, sampling=sampling, max_tokens=max_tokens, stop=stop, system=system
            )
        last: Event | None = None
        for ev in events:
            last = ev
        assert isinstance(last, Finished), "a stream always ends with Finished"
        return last

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _probe_device() -> DeviceInfo | None:
    try:
        from amalia_edge.device import probe

        return probe()
    except AmaliaEdgeError as exc:
        log.warning("device probe failed (%s); memory fit will not be checked", exc)
        return None


def default_n_ctx(source: ModelSource) -> int:
    """:data:`DEFAULT_N_CTX`, or less when the model was trained on a shorter context."""
    trained = [a.shape.n_ctx_train for a in source.usable() if a.shape and a.shape.n_ctx_train]
    return min([DEFAULT_N_CTX, *trained])


def plan(
    path: str | os.PathLike[str] | ModelSource | None = None,
    *,
    backend: str | None = None,
    quant: str | None = None,
    n_ctx: int | None = DEFAULT_N_CTX,
    device: DeviceInfo | None = None,
    options: LoadOptions | None = None,
) -> tuple[ModelSource, Selection, DeviceInfo | None]:
    """Resolve and select without loading (``generate --explain``, ``doctor``).

    ``path`` None: the bundled demo model (:func:`~.artifacts.default_model_path`).
    ``n_ctx`` None: :func:`default_n_ctx` (2048, capped at the model's training context).
    """
    if n_ctx is not None and n_ctx < 16:
        raise ContextOverflowError(
            f"context size {n_ctx} is too small", fix="use --ctx 512 or more"
        )
    source = path if isinstance(path, ModelSource) else resolve_model(path)
    if n_ctx is None:
        n_ctx = default_n_ctx(source)
    device = device if device is not None else _probe_device()
    sel = select(source, device, n_ctx, backend=backend, quant=quant, options=options)
    return source, sel, device


def load_model(
    path: str | os.PathLike[str] | ModelSource | None = None,
    backend: str | None = None,
    quant: str | None = None,
    n_ctx: int | None = DEFAULT_N_CTX,
    device: DeviceInfo | None = None,
    autotune: bool = False,
    options: LoadOptions | None = None,
) -> Model:
    """Resolve MODEL, probe the device, select a candidate and load it.

    ``path`` None loads the bundled demo model (converted into the user cache on first use);
    ``n_ctx`` None means 2048 capped at the model's training context (:func:`default_n_ctx`).

    When a load fails (:class:`BackendError`), the next viable candidate is tried and the
    failure is recorded in ``model.selection`` (status ``failed`` with its reason). Raises
    the selection's one-line error when nothing can run.
    """
    source, sel, device = plan(
        path, backend=backend, quant=quant, n_ctx=n_ctx, device=device, options=options
    )
    if autotune and device is not None and sel.viable():
        sel = _autotune(sel, device, options)
    while (cand := sel.chosen) is not None:
        try:
            session = registry.get(cand.backend).load(cand.artifact, sel.n_ctx, options)
        except BackendError as exc:
            log.warning("%s %s failed to load: %s", cand.backend, cand.artifact.quant, exc)
            sel.mark_failed(cand, str(exc))
            continue
        return Model(session, sel, source)
    raise sel.error()


def _autotune(sel: Selection, device: DeviceInfo, options: LoadOptions | None) -> Selection:
    return autotune(sel, device, options=options)
