"""Native TensorRT backend: runs an engine built on this device from the exported ONNX.

The engine comes from :func:`amalia_edge.convert.tensorrt.ensure_engine` (cached per GPU,
TensorRT version, ONNX hash, precision and profile; built on first use, stale engines are
rebuilt with the reason and never loaded). Device memory is managed with NVIDIA's
cuda-python runtime bindings:

* the KV cache lives in two device buffers per layer and direction, each sized for the
  profile's whole context; step *k* reads ``past_key_values.*`` from one and writes
  ``present.*`` into the other, and the next step swaps them, so the cache never leaves the
  GPU (``present`` is ``concat(past, new)`` laid out contiguously for its new length, which
  is exactly the layout the next step's ``past`` expects);
* token ids, positions and the attention mask go up each step (a few bytes); only the last
  row of logits comes down.

The tokenizer, the session and the decode loop are shared with the ONNX Runtime backend
(:mod:`amalia_edge.runtime.backends.graph`, :mod:`amalia_edge.runtime.decode`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from amalia_edge.artifacts.onnx import GraphInfo
from amalia_edge.errors import BackendError, BackendUnavailableError
from amalia_edge.runtime import cuda
from amalia_edge.runtime.artifacts import Artifact
from amalia_edge.runtime.backend import (
    Availability,
    Backend,
    BackendSession,
    LoadOptions,
    MemoryEstimate,
)
from amalia_edge.runtime.backends.graph import (
    GraphSession,
    Tokenizer,
    artifact_graph_info,
    decode_bytes_per_token,
    find_tokenizer_gguf,
    weight_bytes,
)
from amalia_edge.runtime.decode import ChunkedStepper

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo

log = logging.getLogger(__name__)

# ONNX precisions selection hands to TensorRT (sources: amalia_edge.convert.onnx.PRECISIONS).
# int4 (DequantizeLinear-21) is left out until it is verified on TensorRT 10.3; it can still
# be built explicitly with `amalia-edge build-engine --precision int4`.
TRT_PRECISIONS = ("fp16", "int8", "fp32")


class DeviceBuffer:
    """One cudaMalloc'd allocation, freed on close."""

    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.cudart = cudart
        self.nbytes = max(nbytes, 1)
        self.ptr = int(cuda.cuda_check(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def close(self) -> None:
        if self.ptr:
            self.cudart.cudaFree(self.ptr)
            self.ptr = 0


class TrtStepper(ChunkedStepper):
    """Executes the engine one call at a time with a device-resident, ping-pong KV cache."""

    def __init__(self, engine_path: Path, meta: Any, info: GraphInfo) -> None:
        trt = cuda.import_tensorrt()
        self.cudart = cudart = cuda.import_cudart()
        self._check = cuda.cuda_check
        self.info = info
        self.n_ctx = int(meta.key.profile.n_ctx)
        self.max_seq = int(meta.key.profile.max_seq)
        self._log: list[str] = []
        self.runtime = trt.Runtime(cuda.trt_logger(trt, self._log))
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT could not deserialize {engine_path.name}: "
                + (" | ".join(self._log[-2:]) or "no log"),
                fix="rebuild it: `amalia-edge build-engine ARTIFACTS --force`",
            )
        self.ctx = self.engine.create_execution_context()
        self.stream = cuda.cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.np_types = {
            name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            for name in (self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
        }
        kv_item = np.dtype(info.kv_dtype).itemsize
        kv_bytes = info.num_kv_heads * self.n_ctx * info.head_dim * kv_item
        self.past_names = info.past_names()
        self.present_names = info.present_names()
        self.kv = [[DeviceBuffer(cudart, kv_bytes) for _ in self.past_names] for _ in range(2)]
        self.cur = 0  # index of the buffer set holding the current past
        self.d_ids = DeviceBuffer(cudart, self.max_seq * 8)
        self.d_pos = DeviceBuffer(cudart, self.max_seq * 8)
        self.d_mask = DeviceBuffer(cudart, self.n_ctx * 8)
        self.d_logits = DeviceBuffer(cudart, self.max_seq * info.vocab_size * 4)
        self.h_logits = np.empty(info.vocab_size, dtype=self.np_types.get("logits", np.float32))

    def reset(self) -> None:
        self.cur = 0

    def _upload(self, buf: DeviceBuffer, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.cudart.cudaMemcpyAsync(buf.ptr, arr.ctypes.data, arr.nbytes, kind, self.stream),
            "cudaMemcpyAsync (upload)",
        )

    def forward(self, token_ids: Sequence[int], past: int) -> np.ndarray:
        from amalia_edge.convert.tensorrt import EngineProfile, check_fits

        n = len(token_ids)
        if n > self.max_seq:
            raise BackendError(
                f"{n} tokens in one call exceed the engine's prefill chunk ({self.max_seq})",
                fix="this is a bug in the caller: feed at most max_seq tokens per step",
            )
        check_fits(EngineProfile(self.n_ctx, self.max_seq), past + n)
        t = self.np_types
        ids = np.asarray([token_ids], dtype=t.get("input_ids", np.int64))
        pos = np.arange(past, past + n, dtype=t.get("position_ids", np.int64))[None]
        mask = np.ones((1, past + n), dtype=t.get("attention_mask", np.int64))
        # Keep host arrays alive until the stream is synchronised (async copies).
        self._pinned = (ids, pos, mask)
        for name, buf, arr in (
            ("input_ids", self.d_ids, ids),
            ("position_ids", self.d_pos, pos),
            ("attention_mask", self.d_mask, mask),
        ):
            self._upload(buf, arr)
            self.ctx.set_input_shape(name, arr.shape)
            self.ctx.set_tensor_address(name, buf.ptr)
        kv_shape = (1, self.info.num_kv_heads, past, self.info.head_dim)
        src, dst = self.kv[self.cur], self.kv[1 - self.cur]
        for j, name in enumerate(self.past_names):
            self.ctx.set_input_shape(name, kv_shape)
            self.ctx.set_tensor_address(name, src[j].ptr)
        for j, name in enumerate(self.present_names):
            self.ctx.set_tensor_address(name, dst[j].ptr)
        self.ctx.set_tensor_address("logits", self.d_logits.ptr)
        # execute_async_v3 takes the stream handle as an integer (cudaStream_t address).
        if not self.ctx.execute_async_v3(int(self.stream)):
            raise BackendError(
                "TensorRT execution failed: " + (" | ".join(self._log[-2:]) or "no log"),
                fix="run with -v for TensorRT's log",
            )
        row = self.h_logits.nbytes
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.cudart.cudaMemcpyAsync(
                self.h_logits.ctypes.data, self.d_logits.ptr + (n - 1) * row, row, kind, self.stream
            ),
            "cudaMemcpyAsync (logits)",
        )
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self.cur = 1 - self.cur
        return self.h_logits.astype(np.float32, copy=True)

    def close(self) -> None:
        for buf in [*self.kv[0], *self.kv[1], self.d_ids, self.d_pos, self.d_mask, self.d_logits]:
            buf.close()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class TensorRTBackend(Backend):
    """Native TensorRT engines, built on this device from the ONNX export (module docstring)."""

    name: ClassVar[str] = "tensorrt"
    artifact_kinds: ClassVar[tuple[str, ...]] = ("onnx",)
    description: ClassVar[str] = "TensorRT engines built on this device (FP16 / INT8 weights)"

    def accepts(self, artifact: Artifact) -> bool:
        return artifact.kind == "onnx" and artifact.quant.lower() in TRT_PRECISIONS

    def probe(self, device: DeviceInfo | None) -> Availability:
        try:
            import tensorrt as trt
        except ImportError as exc:
            return Availability(
                False, f"TensorRT is not installed ({exc})", cuda.TENSORRT_INSTALL_HINT
            )
        try:
            cuda.import_cudart()
        except BackendUnavailableError as exc:
            return Availability(False, exc.problem, cuda.CUDA_PYTHON_HINT)
        if device is not None and not cuda.has_cuda_gpu(device):
            return Availability(
                False,
                f"TensorRT {trt.__version__} is installed but this machine has no CUDA GPU",
                None,
                {"version": trt.__version__},
            )
        try:
            gpu = cuda.current_gpu()
        except Exception as exc:  # a driver problem is a reason, not a crash
            return Availability(False, f"CUDA device query failed: {exc}", None)
        return Availability(
            True,
            f"TensorRT {trt.__version__} on {gpu.name} (sm {gpu.compute_capability}); "
            "engines are built on first use and cached",
            None,
            {"version": trt.__version__, "gpu": gpu.name, "cc": gpu.compute_capability},
        )

    def memory_estimate(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> MemoryEstimate:
        from amalia_edge.convert.tensorrt import estimate_memory, profile_for

        info = artifact_graph_info(artifact)
        n_batch = (options or LoadOptions()).n_batch
        est = estimate_memory(weight_bytes(artifact), info, profile_for(n_ctx, info, n_batch))
        return MemoryEstimate(
            weights=est.weights,
            kv_cache=est.kv_cache,
            overhead=est.activations,
            notes=(
                "KV cache: past and present buffers, each for the whole context",
                "overhead: prefill logits + 25% of weights for TensorRT's workspace "
                "(an allowance; the engine reports the exact figure once built)",
            ),
        )

    def decode_bytes_per_token(self, artifact: Artifact, n_ctx: int) -> int:
        return decode_bytes_per_token(artifact, n_ctx)

    def load(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> BackendSession:
        from amalia_edge.convert.tensorrt import (
            DEFAULT_MAX_PREFILL,
            EngineProfileError,
            check_fits,
            engine_dir,
            ensure_engine,
            find_engine,
        )

        options = options or LoadOptions()
        if not self.accepts(artifact):
            raise BackendError(
                f"TensorRT does not run {artifact.label}",
                fix=f"use an ONNX export in one of {', '.join(TRT_PRECISIONS)}",
            )
        cuda.import_tensorrt()
        artifacts_dir = artifact.path.parent
        max_prefill = max(1, min(options.n_batch or DEFAULT_MAX_PREFILL, n_ctx))
        if options.extra.get("build_engine", True):
            meta, path = ensure_engine(
                artifacts_dir, artifact.quant.lower(), n_ctx, max_prefill=max_prefill
            )
        else:
            # No building allowed: use the cached engine, and say so if it is too small.
            from amalia_edge.convert.tensorrt import profile_for, verified_onnx, wanted_key

            onnx_art = verified_onnx(artifacts_dir, artifact.quant.lower())
            # The smallest profile, which every cached engine covers; check_fits checks n_ctx.
            want = wanted_key(onnx_art, profile_for(2, onnx_art.info, 1), cuda.current_gpu())
            found = find_engine(engine_dir(artifacts_dir), want)
            if found.meta is None or found.path is None:
                raise EngineProfileError(
                    "no usable TensorRT engine is cached"
                    + (f" ({found.describe_stale()})" if found.stale else ""),
                    fix=f"build one: `amalia-edge build-engine {artifacts_dir} --ctx {n_ctx}`",
                )
            meta, path = found.meta, found.path
            check_fits(meta.key.profile, n_ctx, f"engine {path.name}")
        info = artifact_graph_info(artifact)
        stepper = TrtStepper(path, meta, info)
        tok = Tokenizer(find_tokenizer_gguf(artifact))
        return GraphSession(
            artifact, n_ctx, tok, stepper, [f"TensorRT {meta.key.tensorrt_version}"], self.name
        )
