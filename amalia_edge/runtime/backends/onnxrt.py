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

Tokenization comes from a GGUF of the same model in the artifacts directory, and the
session streams through the shared decode loop with :class:`OrtStepper` as its stepper
(both in :mod:`amalia_edge.runtime.backends.graph`, shared with the TensorRT backend).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from amalia_edge.artifacts.onnx import GraphInfo, check_external_data, read_graph_info
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
    LoadOptions,
    MemoryEstimate,
    kv_cache_bytes,
)
from amalia_edge.runtime.backends.graph import (
    GraphSession,
    Tokenizer,
    artifact_graph_info,
    decode_bytes_per_token,
    find_tokenizer_gguf,
    kv_type,
    weight_bytes,
)
from amalia_edge.runtime.cuda import has_cuda_gpu
from amalia_edge.runtime.decode import ChunkedStepper

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


# The smallest ONNX model (y = Relu(x), opset 17, IR 8), serialized by onnx.helper; a session
# on it tells which providers initialise without needing the onnx package.
_PROBE_MODEL = bytes.fromhex(
    "08083a370a0c0a0178120179220452656c75120570726f62655a0f0a0178120a0a08080112040a0208"
    "01620f0a0179120a0a08080112040a02080142040a001011"
)


@functools.lru_cache(maxsize=8)
def active_providers(requested: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Providers an InferenceSession really initialises from ``requested`` (one-node graph).

    ONNX Runtime silently drops a provider whose libraries fail to load (no CUDA, wrong
    cuDNN), so only ``InferenceSession.get_providers()`` says what will run; the requested
    list is never reported as active. Returns ``(active, problem)``; ``problem`` names
    requested providers that did not initialise.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(_PROBE_MODEL, sess_options=so, providers=list(requested))
    except Exception as exc:
        return [], f"provider initialisation failed: {exc}"
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


class OrtStepper(ChunkedStepper):
    """One InferenceSession; numpy I/O on CPU, device-resident KV cache via I/O binding on GPU."""

    def __init__(
        self, session: Any, info: GraphInfo, max_seq: int, device_type: str | None
    ) -> None:
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

    def forward(self, token_ids: Sequence[int], past: int) -> np.ndarray:
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
        if not active:
            return Availability(
                False, f"onnxruntime {ort.__version__}: {failure}", ORT_INSTALL_HINT, details
            )
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
        info = artifact_graph_info(artifact)
        # past and present caches are alive together during a step
        kv = 2 * kv_cache_bytes(
            info.num_layers, info.num_kv_heads, info.head_dim, n_ctx, kv_type(info)
        )
        n_batch = (options or LoadOptions()).n_batch
        logits = min(n_batch, n_ctx) * info.vocab_size * 4
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
        return decode_bytes_per_token(artifact, n_ctx)

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
        from amalia_edge.artifacts.manifest import sha256_file
        from amalia_edge.convert.tensorrt import DEFAULT_MAX_PREFILL, engine_dir, profile_for

        path = artifact.path
        if artifact.sha256 and sha256_file(path) != artifact.sha256:
            raise ArtifactError(
                f"{path.name} does not match the manifest's sha256",
                fix="the file is corrupt or was replaced; copy the artifacts directory again",
            )
        check_external_data(path, dict(artifact.extra))
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
        return GraphSession(artifact, n_ctx, tok, stepper, active, self.name)
