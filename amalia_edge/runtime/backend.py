"""The protocol every backend implements (llama.cpp, ONNX Runtime, TensorRT, plugins).

A backend is a small, import-cheap class: its module must not import its heavy library at
import time (``llama_cpp``, ``onnxruntime``, ``tensorrt``); ``probe`` and ``load`` do that.
The registry (:mod:`amalia_edge.runtime.registry`) instantiates it with no arguments.

Contract
--------
``name``, ``artifact_kinds``
    class attributes: the registry name and the manifest ``kind`` values it runs
    (``"gguf"``, ``"onnx"``, ``"tensorrt"``).
``probe(device) -> Availability``
    whether it can run here, with a one-line reason either way and, when it cannot, how to
    install what is missing *on this machine* (``install_hint``). Never raises for a missing
    library: that is ``Availability(ok=False, ...)``.
``memory_estimate(artifact, n_ctx, options) -> MemoryEstimate``
    bytes the loaded model needs: weights + KV cache for ``n_ctx`` + runtime overhead.
``decode_bytes_per_token(artifact, n_ctx) -> int``
    bytes read from memory per generated token (weights touched per token + KV cache at
    half fill); selection divides the device's memory bandwidth by this to rank candidates.
``load(artifact, n_ctx, options) -> BackendSession``
    loads the model; raises :class:`~amalia_edge.errors.BackendError` (one line, with the
    fix) when it cannot.

A :class:`BackendSession` streams :mod:`amalia_edge.runtime.events` (``Started``,
``PromptProcessed``, ``TokenEvent``..., ``Finished`` always last; see that module) for a
prompt given as text (special tokens parsed, BOS added when the model wants it unless the
text already starts with it) or as token ids (used as they are). The built-in backends do it
with the one decode loop (:mod:`amalia_edge.runtime.decode`), and :class:`EventBuilder`
turns its token ids into events (incremental UTF-8, stop strings, the final record).
"""

from __future__ import annotations

import codecs
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from amalia_edge.runtime.events import (
    Event,
    Finished,
    FinishReason,
    PromptProcessed,
    Started,
    TokenEvent,
)

if TYPE_CHECKING:
    import threading

    from amalia_edge.device import DeviceInfo
    from amalia_edge.runtime.artifacts import Artifact
    from amalia_edge.runtime.chat import Message
    from amalia_edge.runtime.sampling import SamplingParams

MiB = 1024 * 1024


def default_threads() -> int:
    """Decode threads when none are asked for: the physical cores (logical CPUs where psutil
    cannot tell), at least one. Every backend and the server use this one rule."""
    import os

    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform: fall back to logical CPUs
        n = None
    return max(1, n or os.cpu_count() or 1)


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and why (always a reason, both ways)."""

    ok: bool
    reason: str
    install_hint: str | None = None
    # Facts the backend found (e.g. {"gpu_offload": True, "version": "0.3.36"}), for --explain.
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """Backend-independent load options; a backend ignores those it has no use for.

    ``None`` means "the backend decides" (documented per backend).
    """

    n_threads: int | None = None  # decode threads; None -> physical cores
    n_batch: int = 512  # prompt tokens per forward pass
    flash_attn: bool | None = None  # None -> on where the build supports it (GPU)
    kv_cache_type: str = "f16"  # f16 | q8_0 | q4_0 (llama.cpp names)
    use_mmap: bool = True
    gpu: bool | None = None  # None -> offload everything when the backend can; False -> CPU
    seed: int | None = None
    verbose: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # backend-specific knobs


def kv_bytes_per_element(kv_type: str) -> float:
    """Bytes per KV-cache element of a ggml type named as llama.cpp does (``f16``, ``q8_0``,
    ...), from gguf-py's ``GGML_QUANT_SIZES`` (block bytes / block values); 2.0 if unknown."""
    import gguf

    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kv_type.upper()]]
    except KeyError:
        return 2.0
    return size / block


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs: weights + KV cache (for the requested context) + overhead."""

    weights: int
    kv_cache: int
    overhead: int
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "overhead": self.overhead,
            "total": self.total,
            "notes": list(self.notes),
        }


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, n_ctx: int, kv_type: str = "f16"
) -> int:
    """K and V for every layer and position: 2 × layers × ctx × kv_heads × head_dim × size."""
    per = kv_bytes_per_element(kv_type)
    return int(2 * n_layers * n_ctx * n_kv_heads * head_dim * per)


class BackendSession(ABC):
    """A loaded model. Not thread-safe: one stream at a time (the TUI runs it in one worker)."""

    backend: str
    artifact: Artifact
    n_ctx: int

    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids for ``text`` (``special``: parse ``<|im_start|>``-style special tokens)."""

    @abstractmethod
    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text for ``token_ids`` (special tokens rendered as text are not included)."""

    @property
    @abstractmethod
    def chat_template(self) -> str | None:
        """The model's own Jinja chat template (GGUF ``tokenizer.chat_template``), if any."""

    @property
    @abstractmethod
    def bos_token(self) -> str:
        """BOS token text ('' if none), passed to the chat template."""

    @property
    @abstractmethod
    def eos_token(self) -> str:
        """EOS token text ('' if none), passed to the chat template."""

    def apply_chat_template(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> str:
        """Render ``messages`` with the model's own template (ChatML when the model has none)."""
        from amalia_edge.runtime.chat import render_chat_template

        return render_chat_template(
            self.chat_template,
            messages,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
        )

    def prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids for a prompt: text is tokenized with special tokens parsed and BOS added
        when the model wants one, unless the text already starts with the BOS text (a chat
        template that writes it); ids are used as given."""
        if isinstance(prompt, str):
            bos = self.bos_token
            return self.tokenize(prompt, add_bos=not (bos and prompt.startswith(bos)), special=True)
        return [int(t) for t in prompt]

    @abstractmethod
    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Yield Started, PromptProcessed, TokenEvent..., Finished (always last, also on error).

        Raises :class:`~amalia_edge.errors.ContextOverflowError` before ``Started`` when the
        prompt alone does not fit in ``n_ctx``. When generation reaches ``n_ctx`` it finishes
        with ``reason="context_full"``.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Free the model (idempotent)."""

    def __enter__(self) -> BackendSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """One inference engine. Subclasses set ``name`` and ``artifact_kinds``; see module doc."""

    name: ClassVar[str]
    artifact_kinds: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    @abstractmethod
    def probe(self, device: DeviceInfo | None) -> Availability: ...

    @abstractmethod
    def memory_estimate(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> MemoryEstimate: ...

    @abstractmethod
    def decode_bytes_per_token(self, artifact: Artifact, n_ctx: int) -> int: ...

    @abstractmethod
    def load(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> BackendSession: ...

    def accepts(self, artifact: Artifact) -> bool:
        return artifact.kind in self.artifact_kinds


class EventBuilder:
    """Builds the event stream shared by all backends from prompt ids and sampled token ids.

    Driven by the one decode loop (:func:`amalia_edge.runtime.decode.decode`): ``started``,
    ``prompt_processed``, ``token`` per generated token (``end_token`` at an end-of-generation
    token), ``finish``.

    Stop strings: text that could be the beginning of a stop string is held back (that
    ``TokenEvent`` carries ``""`` or less text) until it is known not to be one; when a stop
    string completes, the event of that token carries the held text before it. Held text
    is released on the ``final`` token, and when an end-of-generation token arrives while
    text is held, ``end_token`` gives that token its own event carrying the text. So the
    concatenation of every ``TokenEvent.text`` always equals ``Finished.text``.
    """

    def __init__(
        self,
        backend: str,
        artifact: str,
        n_ctx: int,
        prompt_ids: Sequence[int],
        stop: Sequence[str],
        piece: Callable[[int], bytes],
    ) -> None:
        self._backend = backend
        self._artifact = artifact
        self._n_ctx = n_ctx
        self.prompt_tokens = len(prompt_ids)
        self._stop = tuple(s for s in stop if s)
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._emitted: list[str] = []
        self._pending = ""  # decoded text not yet emitted (a possible stop-string prefix)
        self._ids: list[int] = []
        self.stopped = False
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.prompt_seconds = 0.0

    def started(self) -> Started:
        return Started(self._backend, self._artifact, self.prompt_tokens, self._n_ctx, self.t_start)

    def prompt_processed(self, n_tokens: int, seconds: float) -> PromptProcessed:
        self.prompt_seconds = seconds
        return PromptProcessed(n_tokens, seconds, time.perf_counter())

    @property
    def completion_tokens(self) -> int:
        return len(self._ids)

    def token(self, token_id: int, *, final: bool = False) -> TokenEvent:
        """The event for a generated token; ``final``: no more tokens follow (flush all text)."""
        t = time.perf_counter()
        if self.t_first is None:
            self.t_first = t
        index = len(self._ids)
        self._ids.append(token_id)
        text = self._pending + self._decoder.decode(self._piece(token_id), final=final)
        self._pending = ""
        if self._stop:
            text, held = self._split_stop(text)
            if final and not self.stopped:
                text += held
            else:
                self._pending = held
        self._emitted.append(text)
        return TokenEvent(text, token_id, index, t)

    def end_token(self, token_id: int) -> TokenEvent | None:
        """At an end-of-generation token: an event carrying held-back text, or None if none."""
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if not tail:
            return None
        return self.token_text(token_id, tail)

    def token_text(self, token_id: int, text: str) -> TokenEvent:
        t = time.perf_counter()
        if self.t_first is None:
            self.t_first = t
        self._ids.append(token_id)
        self._emitted.append(text)
        return TokenEvent(text, token_id, len(self._ids) - 1, t)

    def _split_stop(self, text: str) -> tuple[str, str]:
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut], ""
        # Hold back the longest tail that is a proper prefix of some stop string.
        hold = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return (text[:-hold], text[-hold:]) if hold else (text, "")

    @property
    def text(self) -> str:
        return "".join(self._emitted)

    def finish(self, reason: FinishReason, error: str | None = None) -> Finished:
        """The final record. Text still held back is dropped only on ``error``."""
        return Finished(
            reason=reason,
            text=self.text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self._ids),
            t_start=self.t_start,
            t_first_token=self.t_first,
            t_end=time.perf_counter(),
            prompt_seconds=self.prompt_seconds,
            error=error,
            token_ids=tuple(self._ids),
        )
