"""Engines: what runs requests for the server, one thread, a bounded FIFO queue.

An engine owns the model and one worker thread. The HTTP side (:mod:`amalia_edge.serve.app`)
turns a request into a :class:`GenRequest` (prompt token ids, sampling, limits, a ``sink``
called from the worker thread with each :mod:`amalia_edge.runtime.events` event, and a
``cancel`` event) and calls :meth:`Engine.submit`. Every request gets the runtime's event
stream: ``Started``, ``PromptProcessed``, ``TokenEvent``..., ``Finished`` always last.

* :class:`SerialEngine` runs one request at a time through a loaded
  :class:`~amalia_edge.runtime.Model` (ONNX Runtime, TensorRT, any backend).
* :class:`~amalia_edge.serve.batch.LlamaBatchEngine` decodes up to ``parallel`` requests
  together in one ``llama_decode`` per step (continuous batching).

Past the slots, requests wait in a FIFO queue of ``max_queue``; past that :meth:`submit`
raises :class:`QueueFullError` (HTTP 429 with ``Retry-After``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from amalia_edge.errors import AmaliaEdgeError
from amalia_edge.runtime.chat import FittedChat, Message, fit_messages, with_system_prompt
from amalia_edge.runtime.events import Event, Finished
from amalia_edge.runtime.sampling import SamplingParams

if TYPE_CHECKING:
    from amalia_edge.runtime.model import Model

log = logging.getLogger(__name__)

# Room kept for the reply when fitting a chat into the context: as in runtime.model.
REPLY_RESERVE_SHARE = 0.25

_ids = itertools.count(1)


class ServeError(AmaliaEdgeError):
    """A request the server refuses; ``status`` and ``code`` become the OpenAI error object."""

    status = 400
    code: str | None = None
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code


class QueueFullError(ServeError):
    status = 429
    code = "queue_full"
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReadyError(ServeError):
    status = 503
    code = "model_loading"
    type = "service_unavailable"


@dataclass
class GenRequest:
    """One generation: token ids in, events out through ``sink`` (called on the engine thread)."""

    prompt_ids: list[int]
    sampling: SamplingParams
    max_tokens: int
    sink: Callable[[Event], None]
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=lambda: next(_ids))


@dataclass(frozen=True)
class EngineInfo:
    model: str  # the id clients send as "model"
    backend: str
    quant: str
    artifact: str
    n_ctx: int  # context per request (per slot)
    parallel: int
    batching: bool


class Engine(ABC):
    """Common queueing for the engines. Subclasses implement the worker loop and tokenizer."""

    info: EngineInfo

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._queue: deque[GenRequest] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.busy = 0  # requests being decoded now (read by /health and /metrics)
        # Mean seconds per finished request, for Retry-After (updated by the worker).
        self._mean_request_s = 1.0

    # -- API for the HTTP side -----------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Prompt ids for ``text`` (special tokens parsed; BOS as the model wants it)."""

    @abstractmethod
    def render_chat(self, messages: Sequence[Message]) -> str:
        """The prompt text for ``messages`` with the model's own chat template."""

    @property
    def supports_penalties(self) -> bool:
        return False

    def fit_chat(
        self, messages: Sequence[Message], max_tokens: int, system: str | None = None
    ) -> FittedChat:
        """As :meth:`amalia_edge.runtime.Model.fit_chat`: system prompt, template, context."""
        msgs = with_system_prompt(messages, system)
        n_ctx = self.info.n_ctx
        reserve = max(1, min(max_tokens, int(n_ctx * REPLY_RESERVE_SHARE)))
        return fit_messages(
            msgs,
            render=self.render_chat,
            count_tokens=lambda text: len(self.tokenize(text)),
            n_ctx=n_ctx,
            reserve=reserve,
        )

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    def submit(self, req: GenRequest) -> None:
        """Queue ``req``; raises QueueFullError when the slots and the queue are taken."""
        with self._cv:
            if self._closing:
                raise NotReadyError("the server is shutting down", code="shutting_down")
            free = self.info.parallel - self.busy
            if len(self._queue) >= self.max_queue + max(0, free):
                retry = max(1, round(self._mean_request_s * (len(self._queue) + 1) / 2))
                raise QueueFullError(
                    f"all {self.info.parallel} slots are busy and {len(self._queue)} "
                    "requests are waiting; try again later",
                    retry_after=retry,
                )
            self._queue.append(req)
            self._cv.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        _name_native_thread(THREAD_NAME)
        self._run()

    def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting, let queued and running requests finish; True when all did in time."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            return self._cv.wait_for(lambda: not self._queue and self.busy == 0, timeout)

    def close(self) -> None:
        """Cancel what is left (queued and running), stop the worker and free the model."""
        with self._cv:
            self._closing = True
            for r in self._queue:
                r.cancel.set()
            self._stopping = True
            self._cv.notify_all()
        self._cancel_running()
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():  # never free a model a decode may still be using
                log.error("the engine did not stop within 30 s; not freeing the model")
                return
        self._free()

    def _cancel_running(self) -> None:  # noqa: B027 - engines with running requests override
        """Set the cancel event of every request being decoded."""

    # -- worker side ---------------------------------------------------------------------------
    _stopping = False

    def _take(self, block: bool) -> GenRequest | None:
        """The next queued request (skipping cancelled ones, which get their Finished)."""
        with self._cv:
            while True:
                while self._queue:
                    req = self._queue.popleft()
                    if req.cancel.is_set():
                        _finish_unstarted(req, "cancelled")
                        continue
                    return req
                if not block or self._stopping:
                    return None
                self._cv.wait(0.5)

    def _done(self, seconds: float) -> None:
        with self._cv:
            self._mean_request_s = 0.8 * self._mean_request_s + 0.2 * seconds
            self._cv.notify_all()

    @abstractmethod
    def _run(self) -> None: ...

    def _free(self) -> None:  # noqa: B027 - optional hook
        """Release the model (after the worker stopped)."""


# The worker thread's name, also given to the OS thread (``top -H``, ``/proc/PID/task/*/comm``,
# where benchmarks/serve_load.py finds it to pin it to a core).
THREAD_NAME = "amalia-engine"


def _name_native_thread(name: str) -> None:
    """Name the calling OS thread (Linux ``prctl(PR_SET_NAME)``; elsewhere nothing)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME, at most 15 bytes
    except (OSError, AttributeError):
        pass


def _finish_unstarted(req: GenRequest, reason: str) -> None:
    import time

    t = time.perf_counter()
    req.sink(
        Finished(
            reason="cancelled" if reason == "cancelled" else "error",
            text="",
            prompt_tokens=len(req.prompt_ids),
            completion_tokens=0,
            t_start=t,
            t_first_token=None,
            t_end=t,
            prompt_seconds=0.0,
            error=None if reason == "cancelled" else reason,
        )
    )


class SerialEngine(Engine):
    """One request at a time through :meth:`Model.stream` (every backend)."""

    def __init__(self, model: Model, max_queue: int = 16, name: str | None = None) -> None:
        super().__init__(max_queue)
        self.model = model
        art = model.artifact
        self.info = EngineInfo(
            model=name or model.name,
            backend=model.backend_name,
            quant=art.quant,
            artifact=str(art.path),
            n_ctx=model.n_ctx,
            parallel=1,
            batching=False,
        )

    def tokenize(self, text: str) -> list[int]:
        return self.model.session.prompt_ids(text)

    def render_chat(self, messages: Sequence[Message]) -> str:
        return self.model.session.apply_chat_template(messages)

    _current: GenRequest | None = None

    def _cancel_running(self) -> None:
        if (req := self._current) is not None:
            req.cancel.set()

    def _run(self) -> None:
        import time

        while (req := self._take(block=True)) is not None:
            self._current = req
            self.busy = 1
            t0 = time.perf_counter()
            try:
                for ev in self.model.stream(
                    req.prompt_ids,
                    sampling=req.sampling,
                    max_tokens=req.max_tokens,
                    stop=req.stop,
                    cancel=req.cancel,
                ):
                    req.sink(ev)
            except AmaliaEdgeError as exc:  # refused before Started (context overflow)
                _finish_unstarted(req, str(exc))
            except Exception as exc:  # a backend bug must not kill the worker
                log.exception("generation failed")
                _finish_unstarted(req, f"{type(exc).__name__}: {exc}")
            finally:
                self._current = None
                self.busy = 0
                self._done(time.perf_counter() - t0)

    def _free(self) -> None:
        self.model.close()
