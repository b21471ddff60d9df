"""ONNX Runtime backend: the exported decoder graph on TensorRT → CUDA → CPU providers.

Runs the graphs written by :mod:`amalia_edge.convert.onnx` (inputs ``input_ids``,
``position_ids``, ``attention_mask``, ``past_key_values.*``; outputs ``logits``,
``present.*``). Providers are requested in the order TensorRT → CUDA → CPU, keeping those
the installed build offers *and* that this machine can use (the PyPI ``onnxruntime-gpu``
wheel lists CUDA and TensorRT even where there is no GPU); what the runtime then reports is
``InferenceSession.get_providers()`` — the providers the session actually runs on, after
ONNX Runtime dropped any that failed to initialise.

On a GPU provider the KV cache stays on the device between steps: ``present.*`` outputs are
bound as device OrtValues and fed back as the next step's ``past_key_values.*`` through
I/O binding, so only token ids go up and the last row of logits comes down.

Tokenization comes from a GGUF of the same model in the artifacts directory (llama.cpp,
vocab only), so this backend and the llama.cpp backend turn text into the same ids.

The decoding loop here (:func:`generate`, :func:`sample_next`) is shared with the native
TensorRT backend; both yield the common event stream via :class:`EventBuilder`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from amalia_edge.errors import (
    ArtifactError,
    BackendError,
    BackendUnavailableError,
    ContextOverflowError,
)
from amalia_edge.runtime.artifacts import Artifact
from amalia_edge.runtime.backend import (
    Availability,
    Backend,
    BackendSession,
    EventBuilder,
    LoadOptions,
    MemoryEstimate,
    kv_cache_bytes,
)
from amalia_edge.runtime.events import Event
from amalia_edge.runtime.sampling import SamplingParams

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo

log = logging.getLogger(__name__)

ORT_INSTALL_HINT = (
    "CPU: `pip install onnxruntime`; Jetson (JetPack 6): install the onnxruntime-gpu wheel "
    "for your JetPack from the Jetson AI Lab index (jetson/setup.sh does this); "
    "x86 + NVIDIA GPU: `pip install onnxruntime-gpu`"
)

# Provider preference, best first. Names: onnxruntime docs, "Execution Providers".
PROVIDER_ORDER: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
GPU_PROVIDERS = frozenset(PROVIDER_ORDER[:2])


# --------------------------------------------------------------------------------------
# Sampling (numpy; the same chain for every non-llama.cpp backend)
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Tokenizer (vocab-only llama.cpp model from a GGUF in the same artifacts directory)
# --------------------------------------------------------------------------------------


class Tokenizer:
    """Tokenize / detokenize with the vocabulary of a GGUF file (llama.cpp, vocab only)."""

    def __init__(self, gguf_path: Path) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the ONNX/TensorRT backends tokenize with llama-cpp-python, which is missing "
                f"({exc})",
                fix="pip install 'amalia-edge[llama]'",
            ) from None
        self.llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        self.metadata: dict[str, Any] = dict(self.llm.metadata)
        # Same end-of-generation test as the llama.cpp backend (llama_vocab_is_eog: EOS,
        # <|im_end|>, ...); older bindings name it llama_token_is_eog.
        self._vocab = self.llm._model.vocab
        self._is_eog = (
            getattr(llama_cpp, "llama_vocab_is_eog", None) or llama_cpp.llama_token_is_eog
        )
        self._pieces: dict[int, bytes] = {}
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = bytes(self.llm.detokenize([token_id]))
        return piece

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return bytes(self.llm.detokenize(list(token_ids), special=False)).decode(
            "utf-8", errors="replace"
        )

    def is_eog(self, token_id: int) -> bool:
        return bool(self._is_eog(self._vocab, token_id))

    def token_text(self, token_id: int | None) -> str:
        if token_id is None or token_id < 0:
            return ""
        return bytes(self.llm.detokenize([token_id], special=True)).decode(
            "utf-8", errors="replace"
        )

    @property
    def bos_id(self) -> int:
        return int(self.llm.token_bos())

    @property
    def eos_id(self) -> int:
        return int(self.llm.token_eos())


def find_tokenizer_gguf(artifact: Artifact) -> Path:
    """A GGUF listed in the same manifest as ``artifact`` (smallest first: cheapest to open)."""
    directory = artifact.path.parent
    try:
        from amalia_edge.artifacts.manifest import load_manifest

        entries = [e for e in load_manifest(directory).artifacts if e.kind == "gguf"]
    except ArtifactError:
        entries = []
    paths = [directory / e.file for e in sorted(entries, key=lambda e: e.size)]
    paths += sorted(directory.glob("*.gguf"), key=lambda p: p.stat().st_size)
    for p in paths:
        if p.exists():
            return p
    raise ArtifactError(
        f"{directory} has no GGUF file to take the tokenizer from",
        fix="run `amalia-edge quantize` with at least one GGUF type into the same directory",
    )


# --------------------------------------------------------------------------------------
# The shared decoding loop
# --------------------------------------------------------------------------------------


class Stepper(Protocol):
    """Runs the decoder on new tokens at absolute position ``past`` (the cache length)."""

    max_seq: int  # most tokens one call may take (the prefill chunk)

    def reset(self) -> None: ...

    def step(self, token_ids: Sequence[int], past: int) -> np.ndarray:
        """Feed ``token_ids``; return the float32 logits of the last one ``[vocab]``."""
        ...


def generate(
    *,
    backend: str,
    artifact_label: str,
    n_ctx: int,
    tok: Tokenizer,
    stepper: Stepper,
    prompt_ids: Sequence[int],
    sampling: SamplingParams | None,
    max_tokens: int,
    stop: Sequence[str],
    cancel: threading.Event | None,
) -> Iterator[Event]:
    """The event stream for one request (see :class:`EventBuilder` for the protocol)."""
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise BackendError("the prompt is empty", fix="pass some text or token ids")
    if len(prompt_ids) >= n_ctx:
        raise ContextOverflowError(
            f"the prompt is {len(prompt_ids)} tokens, the context holds {n_ctx} "
            "(one more is needed for the reply)",
            fix="shorten the prompt or load with a larger n_ctx",
        )
    params = sampling or SamplingParams()
    rng = np.random.default_rng(params.seed)
    eb = EventBuilder(backend, artifact_label, n_ctx, prompt_ids, stop, tok.piece)
    yield eb.started()
    history = list(prompt_ids)
    try:
        stepper.reset()
        t0 = time.perf_counter()
        logits: np.ndarray | None = None
        for start in range(0, len(prompt_ids), stepper.max_seq):
            logits = stepper.step(prompt_ids[start : start + stepper.max_seq], start)
        assert logits is not None
        yield eb.prompt_processed(len(prompt_ids), time.perf_counter() - t0)
        pos = len(prompt_ids)
        for i in range(max_tokens):
            tid = sample_next(logits, params, history, rng)
            if tok.is_eog(tid):
                ev = eb.end_token(tid)
                if ev is not None:
                    yield ev
                yield eb.finish("stop")
                return
            full = pos + 1 >= n_ctx
            cancelled = cancel is not None and cancel.is_set()
            last = i == max_tokens - 1 or full or cancelled
            yield eb.token(tid, final=last)
            history.append(tid)
            if eb.stopped:
                yield eb.finish("stop_string")
                return
            if last:
                yield eb.finish("cancelled" if cancelled else "context_full" if full else "length")
                return
            logits = stepper.step([tid], pos)
            pos += 1
        yield eb.finish("length")
    except Exception as exc:  # the stream must end with Finished, also on failure
        log.exception("%s generation failed", backend)
        yield eb.finish("error", error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _read_info(path: str, mtime_ns: int) -> Any:
    from amalia_edge.convert.onnx import read_graph_info

    return read_graph_info(path)


def artifact_graph_info(artifact: Artifact) -> Any:
    """:class:`~amalia_edge.convert.onnx.GraphInfo` of an ONNX artifact.

    From the graph's own metadata when the file and the ``onnx`` package are there (the
    authority), else from the model shape the manifest or a sibling GGUF gave.
    """
    from amalia_edge.convert.onnx import GraphInfo

    try:
        return _read_info(str(artifact.path), artifact.path.stat().st_mtime_ns)
    except (OSError, ImportError) as exc:
        log.debug("graph info of %s from the manifest instead: %s", artifact.path, exc)
    shape = artifact.shape
    if shape is None:
        raise ArtifactError(
            f"{artifact.path.name}: neither the graph nor the manifest gives the model shape",
            fix="re-run `amalia-edge quantize --onnx ...` for this directory",
        )
    quant = artifact.quant.lower()
    return GraphInfo(
        precision=quant,
        kv_dtype="float32" if quant == "fp32" else "float16",
        num_layers=shape.n_layers,
        num_kv_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.n_vocab,
        max_position_embeddings=shape.n_ctx_train or 1 << 30,
    )


def _graph_meta(artifact: Artifact) -> dict[str, Any]:
    """Layer count etc. of an ONNX artifact, for the memory estimates."""
    info = artifact_graph_info(artifact)
    return {
        "n_layers": info.num_layers,
        "n_kv": info.num_kv_heads,
        "head_dim": info.head_dim,
        "vocab": info.vocab_size,
        "kv_type": "f32" if info.kv_dtype == "float32" else "f16",
    }


def weight_bytes(artifact: Artifact) -> int:
    """Graph + external data bytes (the manifest's ``data_size`` rides in ``extra``)."""
    return int(artifact.size) + int(artifact.extra.get("data_size") or 0)


def has_cuda_gpu(device: Any) -> bool:
    """The probe found an NVIDIA GPU (Jetson iGPU or discrete card)."""
    if device is None:
        return False
    return bool(getattr(device, "has_cuda", False) or getattr(device, "cuda_cc", None))


def choose_providers(
    available: Sequence[str], device: DeviceInfo | None, gpu: bool | None
) -> tuple[list[str], list[str]]:
    """``(providers to request, reasons)`` in PROVIDER_ORDER.

    GPU providers are requested only when the build lists them *and* the device has a CUDA
    GPU (``device.cuda_cc``) and the caller did not ask for CPU (``gpu=False``).
    """
    reasons = []
    has_gpu = has_cuda_gpu(device)
    chosen = []
    for name in PROVIDER_ORDER:
        if name not in available:
            continue
        if name in GPU_PROVIDERS:
            if gpu is False:
                reasons.append(f"{name} skipped: CPU requested")
                continue
            if not has_gpu:
                reasons.append(f"{name} skipped: listed by the wheel but this machine has no GPU")
                continue
        chosen.append(name)
    return chosen, reasons


@functools.lru_cache(maxsize=8)
def active_providers(requested: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Providers an InferenceSession really initialises from ``requested`` (one-node graph).

    ONNX Runtime silently drops a provider whose libraries fail to load (no CUDA, wrong
    cuDNN), so only ``InferenceSession.get_providers()`` says what will run. Returns
    ``(active, problem)``; ``problem`` names requested providers that did not initialise.
    """
    import onnxruntime as ort

    try:
        from onnx import TensorProto, helper
    except ImportError:
        return list(requested), "onnx is not installed: providers not verified by a session"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(
            model.SerializeToString(), sess_options=so, providers=list(requested)
        )
    except Exception as exc:
        return ["CPUExecutionProvider"], f"provider initialisation failed: {exc}"
    active = list(sess.get_providers())
    dropped = [p for p in requested if p not in active]
    return active, (f"did not initialise: {', '.join(dropped)}" if dropped else None)


def trt_provider_options(
    cache_dir: Path, shapes: dict[str, tuple[tuple[int, ...], ...]]
) -> dict[str, Any]:
    """TensorRT EP options: FP16, engine + timing caches, explicit dynamic-shape profile.

    Option names: onnxruntime docs, "TensorRT Execution Provider" → "Configurations".
    Without explicit profile shapes the EP rebuilds its engine whenever a new input shape
    exceeds what it has seen, i.e. on nearly every decode step.
    """

    def fmt(i: int) -> str:
        return ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in shapes.items())

    return {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": fmt(0),
        "trt_profile_opt_shapes": fmt(1),
        "trt_profile_max_shapes": fmt(2),
    }


class OrtStepper:
    """One InferenceSession; numpy I/O on CPU, device-resident KV cache via I/O binding on GPU."""

    def __init__(self, session: Any, info: Any, max_seq: int, device_type: str | None) -> None:
        self.sess = session
        self.info = info
        self.max_seq = max_seq
        self.device_type = device_type  # "cuda" when a GPU provider runs, else None (numpy)
        self.kv_dtype = np.dtype(info.kv_dtype)
        self.past_names = info.past_names()
        self.present_names = info.present_names()
        self.output_names = ["logits", *self.present_names]
        self.cache: list[Any] = []

    def reset(self) -> None:
        self.cache = []

    def _empty(self) -> np.ndarray:
        return np.zeros((1, self.info.num_kv_heads, 0, self.info.head_dim), self.kv_dtype)

    def step(self, token_ids: Sequence[int], past: int) -> np.ndarray:
        n = len(token_ids)
        ids = np.asarray([token_ids], dtype=np.int64)
        pos = np.arange(past, past + n, dtype=np.int64)[None]
        mask = np.ones((1, past + n), dtype=np.int64)
        if self.device_type is None:
            feeds: dict[str, Any] = {"input_ids": ids, "position_ids": pos, "attention_mask": mask}
            for j, name in enumerate(self.past_names):
                feeds[name] = self.cache[j] if self.cache else self._empty()
            out = self.sess.run(self.output_names, feeds)
            self.cache = out[1:]
            return np.asarray(out[0][0, -1], dtype=np.float32)
        return self._step_bound(ids, pos, mask)

    def _step_bound(self, ids: np.ndarray, pos: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        io = self.sess.io_binding()
        for name, arr in (("input_ids", ids), ("position_ids", pos), ("attention_mask", mask)):
            io.bind_cpu_input(name, arr)
        for j, name in enumerate(self.past_names):
            if self.cache:
                io.bind_ortvalue_input(name, self.cache[j])
            else:
                io.bind_ortvalue_input(
                    name, ort.OrtValue.ortvalue_from_numpy(self._empty(), self.device_type, 0)
                )
        io.bind_output("logits", "cpu")
        for name in self.present_names:
            io.bind_output(name, self.device_type, 0)
        self.sess.run_with_iobinding(io)
        outs = io.get_outputs()
        self.cache = list(outs[1:])  # device OrtValues, fed back next step without a copy
        logits = outs[0].numpy()
        return np.asarray(logits[0, -1], dtype=np.float32)


class OnnxRuntimeSession(BackendSession):
    """A loaded ONNX model; see module docstring."""

    backend = "onnxruntime"

    def __init__(
        self,
        artifact: Artifact,
        n_ctx: int,
        tok: Tokenizer,
        stepper: Stepper,
        providers: list[str],
        backend_name: str = "onnxruntime",
    ) -> None:
        self.artifact = artifact
        self.n_ctx = n_ctx
        self.tok = tok
        self.stepper = stepper
        self.providers = providers  # what the session actually runs on
        self.backend = backend_name

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.tok.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.tok.detokenize(token_ids)

    @property
    def chat_template(self) -> str | None:
        t = self.tok.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    @property
    def bos_token(self) -> str:
        return self.tok.token_text(self.tok.bos_id)

    @property
    def eos_token(self) -> str:
        return self.tok.token_text(self.tok.eos_id)

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        if isinstance(prompt, str):
            add_bos = not prompt.startswith(self.bos_token) if self.bos_token else True
            ids = self.tokenize(prompt, add_bos=add_bos, special=True)
        else:
            ids = list(prompt)
        return generate(
            backend=self.backend,
            artifact_label=self.artifact.label,
            n_ctx=self.n_ctx,
            tok=self.tok,
            stepper=self.stepper,
            prompt_ids=ids,
            sampling=sampling,
            max_tokens=max_tokens,
            stop=stop,
            cancel=cancel,
        )

    def close(self) -> None:
        closer = getattr(self.stepper, "close", None)
        if closer is not None:
            closer()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime over the exported decoder graph (see module docstring)."""

    name: ClassVar[str] = "onnxruntime"
    artifact_kinds: ClassVar[tuple[str, ...]] = ("onnx",)
    description: ClassVar[str] = "ONNX Runtime: TensorRT / CUDA / CPU execution providers"

    def probe(self, device: DeviceInfo | None) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not installed ({exc})", ORT_INSTALL_HINT)
        available = list(ort.get_available_providers())
        chosen, reasons = choose_providers(available, device, None)
        active, failure = active_providers(tuple(chosen))
        if failure:
            reasons.append(failure)
        details = {
            "version": ort.__version__,
            # What a session actually initialises (get_providers), not what the wheel lists.
            "providers": active,
            "providers_requested": chosen,
            "providers_listed_by_build": available,
            "notes": reasons,
        }
        gpu = [p for p in active if p in GPU_PROVIDERS]
        where = f"GPU via {', '.join(gpu)}" if gpu else "CPU only"
        hint = None
        if not gpu and has_cuda_gpu(device):
            hint = "this machine has a GPU but the installed onnxruntime has no working CUDA " + (
                "provider: " + ORT_INSTALL_HINT
            )
        return Availability(True, f"onnxruntime {ort.__version__}: {where}", hint, details)

    def memory_estimate(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> MemoryEstimate:
        m = _graph_meta(artifact)
        # past and present caches are alive together during a step
        kv = 2 * kv_cache_bytes(m["n_layers"], m["n_kv"], m["head_dim"], n_ctx, m["kv_type"])
        n_batch = (options or LoadOptions()).n_batch
        logits = min(n_batch, n_ctx) * m["vocab"] * 4
        w = weight_bytes(artifact)
        return MemoryEstimate(
            weights=w,
            kv_cache=kv,
            overhead=logits + w // 10,
            notes=(
                "KV cache counted twice: the graph returns past+new in a fresh tensor each step",
                "overhead: prefill logits + 10% of weights for ONNX Runtime's arena "
                "(an allowance, not a measurement)",
            ),
        )

    def decode_bytes_per_token(self, artifact: Artifact, n_ctx: int) -> int:
        m = _graph_meta(artifact)
        kv_half = kv_cache_bytes(m["n_layers"], m["n_kv"], m["head_dim"], n_ctx // 2, m["kv_type"])
        # read past + write present, and every weight byte once (an upper bound: only the
        # looked-up rows of the embedding table are read)
        return weight_bytes(artifact) + 2 * kv_half

    def load(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> BackendSession:
        options = options or LoadOptions()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                f"onnxruntime is not installed ({exc})", fix=ORT_INSTALL_HINT
            ) from None
        from amalia_edge.convert.onnx import read_graph_info
        from amalia_edge.convert.tensorrt import (
            DEFAULT_MAX_PREFILL,
            engine_dir,
            profile_for,
            sha256_file,
        )

        path = artifact.path
        if artifact.sha256 and sha256_file(path) != artifact.sha256:
            raise ArtifactError(
                f"{path.name} does not match the manifest's sha256",
                fix="the file is corrupt or was replaced; copy the artifacts directory again",
            )
        data_file, data_size = artifact.extra.get("data_file"), artifact.extra.get("data_size")
        if data_file:
            data = path.parent / str(data_file)
            size = data.stat().st_size if data.exists() else -1
            if data_size is not None and size != int(data_size):
                raise ArtifactError(
                    f"{data.name} is {size if size >= 0 else 'missing'} bytes, the manifest "
                    f"says {data_size}",
                    fix="the copy is incomplete; copy the artifacts directory again",
                )
        info = read_graph_info(path)
        if n_ctx > info.max_position_embeddings:
            raise ContextOverflowError(
                f"n_ctx {n_ctx} exceeds the model's trained context "
                f"({info.max_position_embeddings})",
                fix=f"use n_ctx <= {info.max_position_embeddings}",
            )
        max_seq = max(1, min(options.n_batch or DEFAULT_MAX_PREFILL, n_ctx))
        tok = Tokenizer(find_tokenizer_gguf(artifact))
        device = options.extra.get("device")
        if device is None and options.gpu is not False:
            try:
                from amalia_edge.device.probe import probe as probe_device

                device = probe_device()
            except Exception as exc:  # the device probe is best effort here
                log.debug("device probe failed: %s", exc)
        chosen, reasons = choose_providers(ort.get_available_providers(), device, options.gpu)
        for r in reasons:
            log.info("onnxruntime: %s", r)
        provider_args: list[Any] = []
        for name in chosen:
            if name == "TensorrtExecutionProvider":
                cache = engine_dir(path.parent) / "ort-trt"
                cache.mkdir(parents=True, exist_ok=True)
                shapes = profile_for(n_ctx, info, max_seq).shapes(info)
                provider_args.append((name, trt_provider_options(cache, shapes)))
            else:
                provider_args.append(name)
        so = ort.SessionOptions()
        if options.n_threads:
            so.intra_op_num_threads = options.n_threads
        so.log_severity_level = 3 if not options.verbose else 1
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=provider_args)
        except Exception as exc:
            raise BackendError(
                f"onnxruntime could not load {path.name}: {exc}",
                fix="check that the .onnx.data file beside it is complete",
            ) from None
        active = list(sess.get_providers())
        device_type = "cuda" if any(p in GPU_PROVIDERS for p in active) else None
        log.info("onnxruntime session providers: %s", ", ".join(active))
        stepper = OrtStepper(sess, info, max_seq, device_type)
        s = OnnxRuntimeSession(artifact, n_ctx, tok, stepper, active)
        return s
