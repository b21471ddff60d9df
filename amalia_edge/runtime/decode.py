"""The one decode loop: every backend supplies steps, this module decides everything else.

A backend's session implements :class:`Stepper` (a forward pass with its KV cache) and
:class:`DecodingSession` runs the same loop over it for every backend:

* ``prefill(ids, sampling)`` brings the cache to hold exactly ``ids`` (a stepper may keep a
  prefix it already holds, as llama.cpp does for a chat's earlier turns) and returns how
  many tokens it evaluated and the output for the next position;
* ``step(token)`` appends one token and returns the output for the next position.

An output is either logits (``np.ndarray[vocab]``, sampled here by :func:`sample_next`, the one
sampler) or a token id (the backend sampled natively: llama.cpp's C sampler chain, which is
both faster and what llama-cpp-python called directly would pick).

The policy, once for all backends: the request is checked before ``Started`` (empty prompt,
``max_tokens < 1`` and a prompt that fills the context raise); generation ends at an
end-of-generation token unless ``ignore_eos``, at a stop string, after ``max_tokens``, when
the context is full, or when ``cancel`` is set; ``Finished`` is always last, also on a failed
step (``reason="error"``). :class:`~amalia_edge.runtime.backend.EventBuilder` turns token
ids into the event stream.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Union

from amalia_edge.errors import AmaliaEdgeError, BackendError, ContextOverflowError
from amalia_edge.runtime.backend import BackendSession, EventBuilder
from amalia_edge.runtime.events import Event, FinishReason
from amalia_edge.runtime.sampling import SamplingParams

if TYPE_CHECKING:
    import threading

    import numpy as np

log = logging.getLogger(__name__)

# Logits for the next position, or a token id the backend sampled itself.
# (numpy is imported on first use, so loading a backend module stays cheap for `doctor`)
StepOutput = Union["np.ndarray", int]


class Stepper(ABC):
    """A model's forward pass over its KV cache (see the module docstring)."""

    @abstractmethod
    def prefill(self, ids: Sequence[int], sampling: SamplingParams) -> tuple[int, StepOutput]:
        """Make the cache hold exactly ``ids``; return (tokens evaluated, next output)."""

    @abstractmethod
    def step(self, token_id: int) -> StepOutput:
        """Append ``token_id`` to the cache; return the output for the next position."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the stepper holds (idempotent)."""


class ChunkedStepper(Stepper):
    """A stepper over ``forward(ids, past) -> logits`` that starts each request afresh.

    ``forward`` runs the decoder on ``ids`` at absolute position ``past`` (the cache length)
    and returns the float32 logits of the last one; the prompt is fed in chunks of at most
    ``max_seq`` tokens (ONNX Runtime, TensorRT).
    """

    max_seq: int
    _pos = 0

    @abstractmethod
    def reset(self) -> None:
        """Forget the cache (a new request)."""

    @abstractmethod
    def forward(self, token_ids: Sequence[int], past: int) -> np.ndarray: ...

    def prefill(self, ids: Sequence[int], sampling: SamplingParams) -> tuple[int, StepOutput]:
        self.reset()
        logits: np.ndarray | None = None
        for start in range(0, len(ids), self.max_seq):
            logits = self.forward(ids[start : start + self.max_seq], start)
        self._pos = len(ids)
        assert logits is not None  # check_request refused an empty prompt
        return len(ids), logits

    def step(self, token_id: int) -> StepOutput:
        logits = self.forward([token_id], self._pos)
        self._pos += 1
        return logits


def sample_next(
    logits: np.ndarray,
    params: SamplingParams,
    history: Sequence[int],
    rng: np.random.Generator,
) -> int:
    """Pick the next token from ``logits[vocab]``.

    Chain and order as llama.cpp's default sampler (common/sampling.cpp): repeat penalty
    over the last ``repeat_last_n`` tokens, top-k, top-p, min-p, temperature, then a draw.
    ``temperature == 0`` is argmax (ties go to the lowest id, like numpy and llama.cpp).
    """
    import numpy as np

    x = logits.astype(np.float64, copy=True)
    if params.repeat_penalty != 1.0 and history:
        recent = np.unique(np.asarray(history[-params.repeat_last_n :], dtype=np.int64))
        vals = x[recent]
        x[recent] = np.where(vals > 0, vals / params.repeat_penalty, vals * params.repeat_penalty)
    if params.temperature <= 0:
        return int(np.argmax(x))
    order = np.argsort(-x, kind="stable")
    if params.top_k > 0:
        order = order[: params.top_k]
    cand = x[order]
    p = np.exp(cand - cand[0])
    p /= p.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        order, cand = order[:keep], cand[:keep]
        p = p[:keep] / p[:keep].sum()
    if params.min_p > 0.0:
        keep_mask = p >= params.min_p * p[0]
        order, cand = order[keep_mask], cand[keep_mask]
    z = (cand - cand[0]) / params.temperature
    q = np.exp(z)
    q /= q.sum()
    return int(order[rng.choice(len(order), p=q)])


def check_request(prompt_ids: Sequence[int], max_tokens: int, n_ctx: int) -> None:
    """Refuse, before anything is yielded, a request no backend can serve."""
    if max_tokens < 1:
        raise AmaliaEdgeError(f"max_tokens must be >= 1, got {max_tokens}", fix="raise it")
    if not prompt_ids:
        raise AmaliaEdgeError("the prompt is empty", fix="give some text or token ids")
    if len(prompt_ids) >= n_ctx:
        raise ContextOverflowError(
            f"the prompt has {len(prompt_ids)} tokens but the context holds {n_ctx} "
            "(one more is needed for the reply)",
            fix="shorten the prompt or raise --ctx",
        )


def decode(
    stepper: Stepper,
    eb: EventBuilder,
    prompt_ids: list[int],
    *,
    is_eog: Callable[[int], bool],
    n_ctx: int,
    sampling: SamplingParams,
    max_tokens: int,
    cancel: threading.Event | None,
) -> Iterator[Event]:
    """The event stream for one checked request (:func:`check_request`)."""
    yield eb.started()
    sp = sampling
    limit = min(max_tokens, n_ctx - len(prompt_ids))
    ignore_eos = sp.ignore_eos
    rng: np.random.Generator | None = None
    history = prompt_ids
    reason: FinishReason = "length"
    try:
        t0 = time.perf_counter()
        n_eval, out = stepper.prefill(prompt_ids, sp)
        yield eb.prompt_processed(n_eval, time.perf_counter() - t0)
        for i in range(limit):
            if isinstance(out, int):
                tid = out
            else:
                if rng is None:
                    import numpy as np

                    rng, history = np.random.default_rng(sp.seed), list(prompt_ids)
                tid = sample_next(out, sp, history, rng)
                history.append(tid)
            if not ignore_eos and is_eog(tid):
                ev = eb.end_token(tid)
                if ev is not None:
                    yield ev
                reason = "stop"
                break
            cancelled = cancel is not None and cancel.is_set()
            last = cancelled or i + 1 >= limit
            yield eb.token(tid, final=last)
            if eb.stopped:
                reason = "stop_string"
                break
            if last:
                full = i + 1 < max_tokens
                reason = "cancelled" if cancelled else "context_full" if full else "length"
                break
            out = stepper.step(tid)
    except Exception as exc:  # a failed step mid-stream: still end with Finished
        log.debug("generation failed", exc_info=True)
        yield eb.finish("error", error=f"{type(exc).__name__}: {exc}")
        return
    yield eb.finish(reason)


class DecodingSession(BackendSession):
    """A session whose ``stream`` is the shared loop over its :attr:`stepper`.

    Subclasses provide the tokenizer half of :class:`BackendSession`, ``piece(token) ->
    bytes`` (a token's text, for incremental UTF-8) and ``is_eog(token)``.
    """

    stepper: Stepper
    _closed = False

    @abstractmethod
    def piece(self, token_id: int) -> bytes: ...

    @abstractmethod
    def is_eog(self, token_id: int) -> bool: ...

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        if self._closed:
            raise BackendError("this model was closed", fix="load it again with load_model()")
        ids = self.prompt_ids(prompt)
        check_request(ids, max_tokens, self.n_ctx)
        eb = EventBuilder(self.backend, self.artifact.label, self.n_ctx, ids, stop, self.piece)
        return decode(
            self.stepper,
            eb,
            ids,
            is_eog=self.is_eog,
            n_ctx=self.n_ctx,
            sampling=sampling or SamplingParams(),
            max_tokens=max_tokens,
            cancel=cancel,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stepper.close()
