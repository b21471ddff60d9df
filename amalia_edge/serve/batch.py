"""Continuous batching on llama.cpp: ``parallel`` slots decoded together, one ``llama_decode``
per step, through llama-cpp-python's low-level API (``llama_batch_init``, ``llama_decode``,
``llama_memory_seq_rm``, ``llama_sampler_sample``).

This is what ``llama-server`` does in C++ (``tools/server/server.cpp``, ``update_slots``):

* every slot is one llama.cpp sequence (``seq_id`` = slot index) with its own KV cells
  (``n_seq_max = parallel``, non-unified cache: each sequence gets ``n_ctx`` cells);
* a step's batch carries the next token of every generating slot first, then as many
  prompt tokens of newly admitted slots as fit in ``n_batch`` (long prompts are split over
  steps while the others keep decoding);
* logits are requested only where a token will be sampled (each generating slot's token, a
  prompt's last token); each slot samples from its own row with its own sampler chain;
* a request joins at the next step, a finished or cancelled one leaves at once; a slot keeps
  the tokens of its last conversation in its KV cells, and a new request is given the free
  slot that shares the longest prefix with it, so the next turn of a chat evaluates only the
  new tokens (``llama_memory_seq_rm`` trims the rest).

Token text, stop strings and the final record come from the runtime's
:class:`~amalia_edge.runtime.backend.EventBuilder`, so every request yields exactly the event
stream of :meth:`amalia_edge.runtime.Model.stream`. The sampler chain is the one
llama-cpp-python's ``Llama`` builds (penalties, then greedy; or top-k, typical, top-p, min-p,
temperature, dist(seed)), so a request's output equals what ``Llama.generate`` gives alone.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amalia_edge.errors import BackendError
from amalia_edge.runtime.backend import EventBuilder, default_threads, kv_cache_bytes
from amalia_edge.runtime.backends.llamacpp import flash_attn_default
from amalia_edge.runtime.chat import Message, render_chat_template
from amalia_edge.runtime.events import Event, FinishReason
from amalia_edge.serve.engine import Engine, EngineInfo, GenRequest

if TYPE_CHECKING:
    from amalia_edge.runtime.artifacts import Artifact
    from amalia_edge.runtime.backend import LoadOptions

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# Slots when nothing else limits them: llama-server's default (`-np` auto = 4, common/arg.cpp).
# On a bandwidth-bound board a decode step reads every weight once whatever the batch holds,
# so four users cost little more than one; more slots mainly add KV cache.
DEFAULT_MAX_PARALLEL = 4
# Share of the free memory (after weights and runtime overhead) the KV caches may take.
KV_MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class ParallelChoice:
    n: int
    reasons: tuple[str, ...]


def choose_parallel(
    artifact: Artifact,
    n_ctx: int,
    mem_available: int | None,
    *,
    other_bytes: int = 0,
    cap: int = DEFAULT_MAX_PARALLEL,
) -> ParallelChoice:
    """Default slots: ``cap``, fewer when ``n_ctx``-token KV caches do not fit in free memory.

    ``other_bytes``: the weights and runtime overhead already counted against
    ``mem_available`` (None: unknown; then the cap alone decides and the reason says so).
    """
    shape = artifact.shape
    if shape is None:
        return ParallelChoice(1, ("model shape unknown: one slot",))
    per_slot = kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.head_dim, n_ctx)
    reasons = [f"KV cache {per_slot / MiB:.1f} MiB per slot of {n_ctx} tokens"]
    if mem_available is None:
        reasons.append(f"free memory unknown: {cap} slots (the default cap)")
        return ParallelChoice(cap, tuple(reasons))
    budget = int((mem_available - other_bytes) * KV_MEMORY_SHARE)
    fits = budget // per_slot if per_slot else cap
    n = max(1, min(cap, fits))
    reasons.append(
        f"{mem_available / MiB:.0f} MiB free − {other_bytes / MiB:.0f} MiB weights and "
        f"overhead, {int(KV_MEMORY_SHARE * 100)}% of the rest fits {fits} slot(s); "
        f"cap {cap} (llama-server's default)"
    )
    return ParallelChoice(n, tuple(reasons))


@dataclass
class _Slot:
    seq: int
    cache: list[int] = field(default_factory=list)  # tokens whose K/V are in this sequence
    req: GenRequest | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    n_prompt_eval: int = 0
    eb: EventBuilder | None = None
    sampler: Any = None
    next_tok: int | None = None  # sampled, to be evaluated in the next step
    limit: int = 0
    t_admit: float = 0.0
    last_used: float = 0.0


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return " amx_int8" in f.read()
    except OSError:
        return False


def _build_uses_amx(L: Any) -> bool:
    """Whether this llama.cpp build has AMX kernels (``AMX_INT8 = 1`` in its system info)."""
    try:
        return b"AMX_INT8 = 1" in L.llama_print_system_info()
    except (AttributeError, OSError):
        return True  # unknown: assume the build that crashed


def _holding_the_gil(L: Any, name: str) -> Any:
    """llama.cpp's function ``name`` called without releasing the GIL (``ctypes.PyDLL``).

    Every ``ctypes.CDLL`` call releases the GIL and takes it back. When the event loop thread
    is waiting for the GIL, a release hands it over, and the decode thread then waits for the
    loop's whole turn (building and writing SSE chunks) even after a call of microseconds.
    Short per-token calls (sampling one row) keep the GIL; ``llama_decode`` (the long one)
    lets go (and on a GPU the engine waits for the step in ``llama_synchronize`` first, so a
    held call never waits for the GPU). Falls back to the ordinary binding when the library
    cannot be opened this way."""
    fn = getattr(L, name)
    try:
        import llama_cpp.llama_cpp as LL

        held = getattr(ctypes.PyDLL(LL._lib._name), name)
        held.argtypes, held.restype = fn.argtypes, fn.restype
        return held
    except (AttributeError, OSError):
        return fn


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaBatchEngine(Engine):
    """``parallel`` requests decoded together on one llama.cpp context (see module doc)."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        n_ctx: int,
        parallel: int,
        options: LoadOptions,
        gpu: bool,
        max_queue: int = 16,
        name: str | None = None,
    ) -> None:
        super().__init__(max_queue)
        from amalia_edge.runtime.native import import_llama_cpp

        L = import_llama_cpp()

        from amalia_edge.runtime.backends.llamacpp import KV_CACHE_GGML_TYPES

        self._L = L
        if parallel < 1:
            raise BackendError(f"--parallel must be >= 1, got {parallel}", fix="use 1 or more")
        self.parallel = parallel
        self.n_batch = max(options.n_batch, parallel)
        from llama_cpp import _logger

        _logger.set_verbose(options.verbose)  # llama.cpp's own log on stderr only with -vv
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = -1 if gpu else 0
        mparams.use_mmap = options.use_mmap
        # llama-cpp-python 0.3.36 built with AMX (GGML_NATIVE on a Xeon with amx_int8)
        # segfaults in its first llama_decode when quantized weights are repacked for AMX
        # (seen Dec 2026: Q8_0 and Q4_K_M crash, F16 runs); without extra buffer types it
        # runs. Only that build: elsewhere the extra buffer types (the CPU repack of Q4_0,
        # Q4_K, Q8_0 weights into interleaved blocks) stay on, as `generate` has them: with
        # them the AVX2 build decoded a 180M model at Q4_0 50 instead of 37 tokens/s and at
        # Q4_K_M 63 instead of 51 (raw llama_decode, 1 thread, Dec 2026).
        if not gpu and _cpu_has_amx() and _build_uses_amx(L):
            mparams.use_extra_bufts = False
        self._model = L.llama_model_load_from_file(str(artifact.path).encode(), mparams)
        if not self._model:
            raise BackendError(
                f"llama.cpp could not load {artifact.path.name}",
                fix="check the file (re-run `amalia-edge quantize`) and the free memory",
            )
        self._vocab = L.llama_model_get_vocab(self._model)
        threads = options.n_threads or default_threads()  # as the llama.cpp backend does
        kv_type = KV_CACHE_GGML_TYPES.get(options.kv_cache_type, 1)
        flash = flash_attn_default(options, gpu)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx * parallel
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = parallel
        cparams.kv_unified = False  # one KV stream per slot: attention reads only its own cells
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.type_k = kv_type
        cparams.type_v = kv_type
        cparams.flash_attn_type = (
            L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise BackendError(
                f"llama.cpp could not create a context of {parallel} × {n_ctx} tokens",
                fix="lower --parallel or --ctx",
            )
        self._mem = L.llama_get_memory(self._ctx)
        self.n_ctx = int(L.llama_n_ctx_seq(self._ctx))
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        self._n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self._slots = [_Slot(seq=i) for i in range(parallel)]
        self._pieces: dict[int, bytes] = {}
        self._sample = _holding_the_gil(L, "llama_sampler_sample")
        # llama_decode returns before a GPU has finished the step and sampling would wait for
        # it, holding the GIL (the event loop frozen for the rest of the step): on a GPU the
        # wait happens here instead, in llama_synchronize, which releases the GIL.
        self._gpu = gpu
        self._eog: dict[int, bool] = {}
        self._chat_template = self._meta("tokenizer.chat_template")
        self._bos_text = self._special_text(int(L.llama_vocab_bos(self._vocab)))
        self._eos_text = self._special_text(int(L.llama_vocab_eos(self._vocab)))
        self.steps = 0  # llama_decode calls (tests and benchmarks)
        self.info = EngineInfo(
            model=name or artifact.path.stem,
            backend="llama.cpp",
            quant=artifact.quant,
            artifact=str(artifact.path),
            n_ctx=self.n_ctx,
            parallel=parallel,
            batching=True,
        )

    # -- tokenizer and template ----------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        L = self._L
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = L.llama_model_meta_val_str(self._model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            n = L.llama_model_meta_val_str(self._model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", "replace") or None

    def _token_bytes(self, tok: int, special: bool) -> bytes:
        L = self._L
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self._vocab, tok, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, tok, buf, -n, 0, special)
        return buf.raw[:n]

    def _special_text(self, tok: int) -> str:
        return "" if tok < 0 else self._token_bytes(tok, True).decode("utf-8", "replace")

    def _is_eog(self, tok: int) -> bool:
        # Cached: every ctypes call lets the event loop thread take the GIL in between.
        eog = self._eog.get(tok)
        if eog is None:
            eog = self._eog[tok] = bool(self._L.llama_vocab_is_eog(self._vocab, tok))
        return eog

    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = self._token_bytes(tok, False)
        return piece

    def tokenize(self, text: str) -> list[int]:
        """As :meth:`BackendSession.prompt_ids`: special tokens parsed, BOS unless written."""
        L = self._L
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        data = text.encode("utf-8")
        n_max = len(data) + 8
        arr = (L.llama_token * n_max)()
        n = L.llama_tokenize(self._vocab, data, len(data), arr, n_max, add_bos, True)
        if n < 0:
            n_max = -n
            arr = (L.llama_token * n_max)()
            n = L.llama_tokenize(self._vocab, data, len(data), arr, n_max, add_bos, True)
        return list(arr[:n])

    def render_chat(self, messages: Sequence[Message]) -> str:
        return render_chat_template(
            self._chat_template, messages, bos_token=self._bos_text, eos_token=self._eos_text
        )

    @property
    def supports_penalties(self) -> bool:
        return True

    # -- sampling --------------------------------------------------------------------------------
    def _make_sampler(self, req: GenRequest) -> Any:
        L, sp = self._L, req.sampling
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

        def add(s: Any) -> None:
            L.llama_sampler_chain_add(chain, s)

        if sp.repeat_penalty != 1.0 or req.presence_penalty or req.frequency_penalty:
            add(
                L.llama_sampler_init_penalties(
                    self._n_vocab,
                    sp.repeat_last_n,
                    sp.repeat_penalty,
                    req.frequency_penalty,
                    req.presence_penalty,
                )
            )
        if sp.greedy:
            add(L.llama_sampler_init_greedy())
        else:
            add(L.llama_sampler_init_top_k(sp.top_k))
            add(L.llama_sampler_init_typical(1.0, 1))
            add(L.llama_sampler_init_top_p(sp.top_p, 1))
            add(L.llama_sampler_init_min_p(sp.min_p, 1))
            add(L.llama_sampler_init_temp(sp.temperature))
            seed = sp.seed if sp.seed is not None else L.LLAMA_DEFAULT_SEED
            add(L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # -- the step loop -----------------------------------------------------------------------------
    def _emit(self, req: GenRequest, ev: Event) -> None:
        try:
            req.sink(ev)
        except Exception:  # a broken client must not stop the other slots
            log.exception("delivering an event failed; cancelling request %d", req.id)
            req.cancel.set()

    def _admit(self, req: GenRequest) -> None:
        free = [s for s in self._slots if s.req is None]
        slot = max(free, key=lambda s: (_common_prefix(s.cache, req.prompt_ids), -s.last_used))
        ids = req.prompt_ids
        common = min(_common_prefix(slot.cache, ids), len(ids) - 1)
        if common < len(slot.cache) and not self._L.llama_memory_seq_rm(
            self._mem, slot.seq, common, -1
        ):
            self._L.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
            common = 0
        slot.cache = slot.cache[:common]
        slot.pending = list(ids[common:])
        slot.n_prompt_eval = len(slot.pending)
        slot.req = req
        slot.eb = EventBuilder(
            "llama.cpp", f"gguf:{self.info.quant}", self.n_ctx, ids, req.stop, self._piece
        )
        slot.sampler = self._make_sampler(req)
        slot.next_tok = None
        slot.limit = min(req.max_tokens, self.n_ctx - len(ids))
        slot.t_admit = time.perf_counter()
        self.busy += 1
        self._emit(req, slot.eb.started())
        if common:
            log.debug("slot %d reuses %d cached tokens", slot.seq, common)

    def _release(self, slot: _Slot, reason: FinishReason, error: str | None = None) -> None:
        req, eb = slot.req, slot.eb
        assert req is not None and eb is not None
        self._L.llama_sampler_free(slot.sampler)
        slot.sampler = None
        slot.req = None
        slot.eb = None
        slot.next_tok = None
        slot.pending = []
        slot.last_used = time.perf_counter()
        with self._cv:
            self.busy -= 1  # before Finished: whoever sees it finds the slot free
        self._done(slot.last_used - slot.t_admit)
        self._emit(req, eb.finish(reason, error=error))

    def _cancel_running(self) -> None:
        for s in self._slots:
            if (req := s.req) is not None:
                req.cancel.set()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # keep the contract: every admitted request gets Finished
            log.exception("the batch engine failed")
            for s in self._slots:
                if s.req is not None:
                    self._release(s, "error", f"{type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        L = self._L
        batch = self._batch
        while True:
            # Admit: fill free slots from the queue (block only when nothing is running).
            while any(s.req is None for s in self._slots):
                active = any(s.req is not None for s in self._slots)
                req = self._take(block=not active)
                if req is None:
                    break
                self._admit(req)
            if not any(s.req is not None for s in self._slots):
                return  # _take returned None while idle: stopping
            # Cancelled requests (client gone) leave before the step.
            for s in self._slots:
                if s.req is not None and s.req.cancel.is_set():
                    self._release(s, "cancelled")
            # Build the batch: one token of every generating slot, then prompt tokens.
            n = 0
            sample: list[tuple[_Slot, int]] = []  # (slot, row of its logits)
            gen = [s for s in self._slots if s.req is not None and s.next_tok is not None]
            for s in gen:
                assert s.next_tok is not None
                n = self._add(batch, n, s.next_tok, len(s.cache), s.seq, True)
                sample.append((s, n - 1))
            prefill = sorted(
                (s for s in self._slots if s.req is not None and s.pending),
                key=lambda s: s.t_admit,
            )
            taken: list[tuple[_Slot, int]] = []
            for s in prefill:
                k = min(self.n_batch - n, len(s.pending))
                if k <= 0:
                    break
                pos0, done = len(s.cache), k == len(s.pending)
                for j in range(k):
                    n = self._add(batch, n, s.pending[j], pos0 + j, s.seq, done and j == k - 1)
                taken.append((s, k))
                if done:
                    sample.append((s, n - 1))
            if n == 0:
                continue
            batch.n_tokens = n
            rc = L.llama_decode(self._ctx, batch)
            if self._gpu:
                L.llama_synchronize(self._ctx)
            self.steps += 1
            if rc != 0:
                msg = f"llama_decode returned {rc}"
                for s in self._slots:
                    if s.req is not None:
                        self._release(s, "error", msg)
                        L.llama_memory_seq_rm(self._mem, s.seq, -1, -1)
                        s.cache = []
                continue
            now = time.perf_counter()
            for s in gen:
                assert s.next_tok is not None
                s.cache.append(s.next_tok)
            for s, k in taken:
                s.cache.extend(s.pending[:k])
                s.pending = s.pending[k:]
                if not s.pending and s.req is not None and s.eb is not None:
                    self._emit(s.req, s.eb.prompt_processed(s.n_prompt_eval, now - s.t_admit))
            for s, row in sample:
                tok = int(self._sample(s.sampler, self._ctx, row))
                self._on_token(s, tok)

    @staticmethod
    def _add(batch: Any, n: int, tok: int, pos: int, seq: int, logits: bool) -> int:
        batch.token[n] = tok
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq
        batch.logits[n] = logits
        return n + 1

    def _on_token(self, s: _Slot, tok: int) -> None:
        req, eb = s.req, s.eb
        assert req is not None and eb is not None
        if not req.sampling.ignore_eos and self._is_eog(tok):
            ev = eb.end_token(tok)
            if ev is not None:
                self._emit(req, ev)
            self._release(s, "stop")
            return
        i = eb.completion_tokens
        cancelled = req.cancel.is_set()
        last = cancelled or i + 1 >= s.limit
        self._emit(req, eb.token(tok, final=last))
        if eb.stopped:
            self._release(s, "stop_string")
        elif last:
            reason: FinishReason = (
                "cancelled"
                if cancelled
                else "length"
                if i + 1 >= req.max_tokens
                else "context_full"
            )
            self._release(s, reason)
        else:
            s.next_tok = tok

    def _free(self) -> None:
        L = self._L
        for s in self._slots:
            if s.sampler is not None:
                L.llama_sampler_free(s.sampler)
                s.sampler = None
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None
