"""llama.cpp backend (llama-cpp-python): GGUF on CPU, or on CUDA with every layer offloaded.

``llama_cpp`` is imported only in :meth:`LlamaCppBackend.probe` and :meth:`~LlamaCppBackend.load`.

Generation runs the shared loop (:mod:`amalia_edge.runtime.decode`) over
:class:`LlamaStepper`, which steps ``Llama.generate`` (public API; the same token loop
``create_completion`` uses, with its KV-cache prefix reuse and llama.cpp's C sampler chain);
end of generation is llama.cpp's own set (``llama_vocab_is_eog``: EOS, ``<|im_end|>``, ...).
``benchmarks/runtime_overhead.py`` measures what this layer costs against calling
llama-cpp-python directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from amalia_edge.errors import BackendError
from amalia_edge.runtime.backend import (
    Availability,
    Backend,
    BackendSession,
    LoadOptions,
    MemoryEstimate,
    MiB,
    default_threads,
    kv_cache_bytes,
)
from amalia_edge.runtime.decode import DecodingSession, StepOutput, Stepper
from amalia_edge.runtime.sampling import SamplingParams

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo
    from amalia_edge.runtime.artifacts import Artifact

log = logging.getLogger(__name__)

# ggml type ids for the KV cache (ggml/include/ggml.h enum ggml_type; llama_cpp.GGML_TYPE_*;
# equal to gguf-py's GGMLQuantizationType, which sizes them: runtime.backend.kv_bytes_per_element).
KV_CACHE_GGML_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "bf16": 30,
}

# Runtime overhead besides weights and KV cache, as an estimate (llama.cpp does not report
# its compute buffers before loading). Base: host-side buffers, the vocabulary and the
# Python objects (assumption: a few tens of MiB, rounded up). CUDA: the CUDA context and
# cuBLAS workspace (assumption, order of magnitude of a CUDA context on Orin-class GPUs).
BASE_OVERHEAD = 64 * MiB
CUDA_CONTEXT_OVERHEAD = 384 * MiB


def _install_hint(device: DeviceInfo | None) -> str:
    """How to install llama-cpp-python on this machine (the CUDA build where there is a GPU)."""
    if device is not None and device.is_jetson:
        cc = str(device.cuda_cc or "8.7").replace(".", "")
        return (
            f'CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={cc}" pip install '
            "llama-cpp-python --no-binary llama-cpp-python --force-reinstall --no-cache-dir "
            "(with /usr/local/cuda/bin on PATH; or run jetson/setup.sh)"
        )
    if device is not None and getattr(device, "gpus", None):
        return (
            'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python --no-binary '
            "llama-cpp-python --force-reinstall --no-cache-dir"
        )
    return "pip install 'amalia-edge[llama]' (or: pip install llama-cpp-python)"


def gpu_offload(options: LoadOptions | None) -> bool:
    """Whether llama.cpp will offload: a CUDA build, not disabled with ``--cpu``. The backend
    and the server's batch engine both ask this."""
    if options is not None and options.gpu is False:
        return False
    try:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, OSError):
        return False


FLASH_ATTN_ENV = "AMALIA_EDGE_FLASH_ATTN"


def flash_attn_default(options: LoadOptions | None, gpu: bool) -> bool:
    """Flash attention unless said otherwise: ``LoadOptions.flash_attn``, else
    ``$AMALIA_EDGE_FLASH_ATTN`` (``on`` / ``off``), else on exactly when llama.cpp offloads;
    always on for a quantized KV cache, which llama.cpp refuses without it (llama-context.cpp).

    The variable is for a CUDA build made without the FlashAttention kernels
    (``-DGGML_CUDA_FA=OFF``, a quicker build): llama.cpp would then run the attention of a
    GPU model on the CPU. The backend, its memory estimate and the server's batch engine all
    ask this."""
    flash = _flash_attn_asked(options, gpu)
    kv_type = options.kv_cache_type if options is not None else "f16"
    if not flash and kv_type not in ("f16", "f32", "bf16"):
        log.debug("flash attention on: a quantized V cache (%s) needs it", kv_type)
        return True
    return flash


def _flash_attn_asked(options: LoadOptions | None, gpu: bool) -> bool:
    if options is not None and options.flash_attn is not None:
        return options.flash_attn
    value = os.environ.get(FLASH_ATTN_ENV, "").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    if value:
        raise BackendError(
            f"{FLASH_ATTN_ENV}={value!r} is not on or off",
            fix=f"set {FLASH_ATTN_ENV} to on or off, or unset it",
        )
    return gpu


class LlamaCppBackend(Backend):
    name: ClassVar[str] = "llama.cpp"
    artifact_kinds: ClassVar[tuple[str, ...]] = ("gguf",)
    description: ClassVar[str] = "llama-cpp-python (GGUF), CUDA offload when built with CUDA"

    def probe(self, device: DeviceInfo | None) -> Availability:
        try:
            from amalia_edge.runtime.native import import_llama_cpp

            llama_cpp = import_llama_cpp()
        except ImportError:
            return Availability(
                False, "llama-cpp-python is not installed", install_hint=_install_hint(device)
            )
        except OSError as exc:  # the shared library failed to load (missing CUDA libs, ...)
            return Availability(
                False,
                f"llama-cpp-python is installed but its library does not load ({exc})",
                install_hint=_install_hint(device),
            )
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        version = getattr(llama_cpp, "__version__", "?")
        details = {"version": version, "gpu_offload": gpu}
        has_gpu = bool(device is not None and getattr(device, "gpus", None))
        if gpu:
            return Availability(True, f"llama-cpp-python {version}, GPU offload", details=details)
        if has_gpu:
            return Availability(
                True,
                f"llama-cpp-python {version} is a CPU-only build although this machine has a "
                "GPU (runs on CPU, slower)",
                install_hint=_install_hint(device),
                details=details,
            )
        return Availability(True, f"llama-cpp-python {version}, CPU", details=details)

    def memory_estimate(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> MemoryEstimate:
        opts = options or LoadOptions()
        weights = artifact.weight_bytes or artifact.size
        shape = artifact.shape
        notes: list[str] = []
        if shape is None:
            kv = 0
            compute = 0
            notes.append("model shape unknown: KV cache not counted")
        else:
            kv = kv_cache_bytes(
                shape.n_layers, shape.n_kv_heads, shape.head_dim, n_ctx, opts.kv_cache_type
            )
            n_ub = min(opts.n_batch, n_ctx)
            flash = flash_attn_default(opts, gpu_offload(opts))
            # Compute graph, worst case llama.cpp reserves for one micro-batch (float32):
            # attention scores n_ub × n_ctx × heads (not materialised with flash attention),
            # FFN activations (gate, up, act) and the logits of every position in the batch.
            attn = 0 if flash else n_ub * n_ctx * shape.n_heads * 4
            ffn = n_ub * shape.n_ff * 3 * 4
            logits = n_ub * shape.n_vocab * 4
            compute = attn + ffn + logits
        gpu = gpu_offload(opts)
        overhead = BASE_OVERHEAD + compute + (CUDA_CONTEXT_OVERHEAD if gpu else 0)
        return MemoryEstimate(weights, kv, overhead, tuple(notes))

    def decode_bytes_per_token(self, artifact: Artifact, n_ctx: int) -> int:
        weights = artifact.decode_weight_bytes or artifact.weight_bytes or artifact.size
        shape = artifact.shape
        # The KV cache is read in full each step; count it at half fill (an average reply).
        kv = (
            kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.head_dim, n_ctx // 2)
            if shape
            else 0
        )
        return int(weights + kv)

    def load(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> BackendSession:
        avail = self.probe(None)
        if not avail.ok:
            raise BackendError(f"llama.cpp backend: {avail.reason}", fix=avail.install_hint)
        return LlamaCppSession(artifact, n_ctx, options or LoadOptions(), gpu_offload(options))


class LlamaStepper(Stepper):
    """llama.cpp through ``Llama.generate``: its KV-cache prefix reuse and its C sampler chain.

    ``generate`` is the token loop ``create_completion`` uses; it keeps the cached prefix a new
    prompt shares with the last one, so a chat's earlier turns are not evaluated again.
    """

    def __init__(self, llm: Any, default_seed: int) -> None:
        self.llm = llm
        self._default_seed = default_seed
        self._gen: Any = None

    def prefill(self, ids: Sequence[int], sampling: SamplingParams) -> tuple[int, StepOutput]:
        llm, sp = self.llm, sampling
        if self._gen is not None:
            self._gen.close()
        llm.set_seed(sp.seed if sp.seed is not None else self._default_seed)
        llm.last_n_tokens_size = sp.repeat_last_n
        self._gen = llm.generate(
            ids,
            top_k=sp.top_k,
            top_p=sp.top_p,
            min_p=sp.min_p,
            temp=sp.temperature,
            repeat_penalty=sp.repeat_penalty,
            reset=True,
        )
        # Count what the prompt's eval evaluates (the cached prefix is skipped), wrapping this
        # instance's eval only for the prefill: Llama.generate calls self.eval.
        evaluated = 0
        original_eval = llm.eval

        def counting_eval(tokens: Sequence[int]) -> None:
            nonlocal evaluated
            evaluated += len(tokens)
            original_eval(tokens)

        setattr(llm, "eval", counting_eval)  # noqa: B010 - mypy forbids assigning a method
        try:
            token = next(self._gen)
        finally:
            vars(llm).pop("eval", None)
        return evaluated, int(token)

    def step(self, token_id: int) -> StepOutput:
        return int(next(self._gen))

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self.llm.close()


class LlamaCppSession(DecodingSession):
    backend = LlamaCppBackend.name

    def __init__(self, artifact: Artifact, n_ctx: int, options: LoadOptions, gpu: bool) -> None:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()

        if options.kv_cache_type not in KV_CACHE_GGML_TYPES:
            raise BackendError(
                f"unknown KV cache type {options.kv_cache_type!r}",
                fix=f"choose one of {', '.join(KV_CACHE_GGML_TYPES)}",
            )
        kv_type = KV_CACHE_GGML_TYPES[options.kv_cache_type]
        flash = flash_attn_default(options, gpu)
        threads = options.n_threads or default_threads()
        self.artifact = artifact
        self.n_ctx = n_ctx
        self.gpu = gpu
        self.params: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_batch": options.n_batch,
            "n_ubatch": options.n_batch,
            "n_threads": threads,
            "n_threads_batch": threads,
            "n_gpu_layers": -1 if gpu else 0,
            "flash_attn": flash,
            "type_k": kv_type,
            "type_v": kv_type,
            "use_mmap": options.use_mmap,
            "verbose": options.verbose,
        }
        if options.seed is not None:
            self.params["seed"] = options.seed
        self.params.update(options.extra)
        try:
            self._llm = llama_cpp.Llama(model_path=str(artifact.path), **self.params)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(
                f"llama.cpp could not load {artifact.path.name} ({exc})",
                fix="check the file (re-run `amalia-edge quantize`) and the free memory; "
                "run with -vv to see llama.cpp's log",
            ) from None
        self._pieces: dict[int, bytes] = {}
        self._vocab = self._llm._model.vocab
        self._is_eog = (
            getattr(llama_cpp, "llama_vocab_is_eog", None) or llama_cpp.llama_token_is_eog
        )
        self.stepper = LlamaStepper(self._llm, llama_cpp.LLAMA_DEFAULT_SEED)

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and tests)."""
        return self._llm

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return bytes(self._llm.detokenize(list(token_ids))).decode("utf-8", errors="replace")

    def _special_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return bytes(self._llm.detokenize([token_id], special=True)).decode("utf-8", "replace")

    @property
    def chat_template(self) -> str | None:
        t = self._llm.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) and t else None

    @property
    def bos_token(self) -> str:
        return self._special_text(self._llm.token_bos())

    @property
    def eos_token(self) -> str:
        return self._special_text(self._llm.token_eos())

    def piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = bytes(self._llm.detokenize([token_id]))
            self._pieces[token_id] = piece
        return piece

    def is_eog(self, token_id: int) -> bool:
        return bool(self._is_eog(self._vocab, token_id))
