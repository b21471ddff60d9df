"""The native TensorRT stepper's plumbing, with TensorRT and CUDA faked at their import points.

What cannot run here is the GPU. The fakes keep everything else real: "device memory" is host
memory addressed by raw pointers (``cudaMemcpyAsync`` is a ``memmove``), and the fake
engine's ``execute_async_v3`` reads its inputs from the addresses and shapes the stepper set,
runs the same ONNX graph with ONNX Runtime, and writes the outputs to the bound addresses.
So the stepper's shape/address bookkeeping, its ping-pong KV buffers and its logits copy
are exercised for real, and its logits must equal ONNX Runtime's own.
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from amalia_edge.artifacts.onnx import read_graph_info  # noqa: E402
from amalia_edge.checkpoint.reader import open_checkpoint  # noqa: E402
from amalia_edge.convert import onnx as ox  # noqa: E402
from amalia_edge.convert import tensorrt as trt_mod  # noqa: E402
from amalia_edge.runtime import cuda  # noqa: E402
from amalia_edge.runtime.backends.onnxrt import OrtStepper  # noqa: E402
from amalia_edge.runtime.backends.tensorrt import TrtStepper  # noqa: E402

IDS = [1, 17, 42, 99, 5, 7, 200, 301, 64, 3, 1000, 12]


class FakeCudart:
    """cuda-python's runtime API surface the stepper uses; memory is host memory."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        buf = np.zeros(n, np.uint8)
        self.live[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cudaFree(self, ptr: int) -> tuple[int]:
        self.live.pop(ptr)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, Any]:
        return 0, 7

    def cudaStreamDestroy(self, s: Any) -> tuple[int]:
        return (0,)

    def cudaStreamSynchronize(self, s: Any) -> tuple[int]:
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, s: Any) -> tuple[int]:
        ctypes.memmove(dst, src, n)
        return (0,)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addr: dict[str, int] = {}
        self.calls = 0

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self.shapes[name] = tuple(int(d) for d in shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return True

    def _view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        dt = self.engine.dtypes[name]
        n = int(np.prod(shape)) * dt.itemsize
        raw = (ctypes.c_uint8 * max(n, 1)).from_address(self.addr[name])
        return np.frombuffer(memoryview(raw), dtype=np.uint8, count=n).view(dt).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        self.calls += 1
        feeds = {n: self._view(n, s).copy() for n, s in self.shapes.items()}
        outs = self.engine.sess.run(self.engine.outputs, feeds)
        for name, val in zip(self.engine.outputs, outs, strict=True):
            self._view(name, val.shape)[...] = val
        return True


class FakeEngine:
    def __init__(self, onnx_path: str) -> None:
        self.sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.sess.get_outputs()]
        types = {
            "tensor(int64)": np.int64,
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
        }
        self.dtypes = {
            t.name: np.dtype(types[t.type])
            for t in [*self.sess.get_inputs(), *self.sess.get_outputs()]
        }
        self.names = list(self.dtypes)
        self.num_io_tensors = len(self.names)
        self.context: FakeContext | None = None

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def create_execution_context(self) -> FakeContext:
        self.context = FakeContext(self)
        return self.context


class FakeILogger:
    Severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

    def __init__(self) -> None:
        pass


def fake_trt(engines: list[FakeEngine]) -> Any:
    def deserialize(blob: bytes) -> FakeEngine:
        engines.append(FakeEngine(blob.decode()))
        return engines[-1]

    return SimpleNamespace(
        __version__="10.3.0",
        ILogger=FakeILogger,
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=deserialize),
        nptype=lambda dt: dt,
    )


def install_fake_tensorrt(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[FakeEngine], FakeCudart, list[trt_mod.EngineKey]]:
    """TensorRT, cuda-python, the GPU and the engine build faked where the code imports them;
    returns (engines deserialized, the fake CUDA runtime, the keys of engines built)."""
    engines: list[FakeEngine] = []
    cud = FakeCudart()
    gpu = cuda.GpuIdentity("Fake GPU", "8.7")
    builds: list[trt_mod.EngineKey] = []

    def fake_build(
        onnx_path: Path, sha: str, info: Any, profile: Any, cache: Path, **kw: Any
    ) -> tuple[trt_mod.EngineMeta, Path]:
        key = trt_mod.EngineKey(
            gpu.name, gpu.compute_capability, "10.3.0", sha, info.precision, profile
        )
        builds.append(key)
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"{key.digest()}.engine"
        path.write_bytes(str(onnx_path).encode())
        meta = trt_mod.EngineMeta(
            key, path.name, path.stat().st_size, "", onnx_path.name, 1, 1.0, time.time()
        )
        (cache / f"{key.digest()}.json").write_text(json.dumps(meta.to_dict()))
        return meta, path

    for mod in (trt_mod, cuda):
        monkeypatch.setattr(mod, "import_tensorrt", lambda: fake_trt(engines))
        monkeypatch.setattr(mod, "current_gpu", lambda device=0: gpu)
    monkeypatch.setattr(cuda, "import_cudart", lambda: cud)
    monkeypatch.setattr(trt_mod, "build_engine", fake_build)
    return engines, cud, builds


@pytest.fixture(scope="module")
def fp16_graph(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ox.write_onnx(
        open_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("trt"), "fp16"
    ).path


@pytest.fixture
def stepper(fp16_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    engines, cud, _ = install_fake_tensorrt(monkeypatch)
    info = read_graph_info(fp16_graph)
    engine = tmp_path / "fake.engine"
    engine.write_bytes(str(fp16_graph).encode())  # the fake "engine" names its graph
    key = trt_mod.EngineKey("Fake", "8.7", "10.3.0", "0" * 64, "fp16", trt_mod.EngineProfile(32, 4))
    meta = trt_mod.EngineMeta(key, engine.name, 1, "", fp16_graph.name, 1, 1.0, time.time())
    json.dumps(meta.to_dict())
    st = TrtStepper(engine, meta, info)
    yield st, engines, cud
    st.close()
    assert cud.live == {}  # every device buffer freed


def test_stepper_logits_equal_onnxruntime_through_prefill_chunks_and_decode(
    stepper: Any, fp16_graph: Path
) -> None:
    st, engines, _ = stepper
    sess = ort.InferenceSession(str(fp16_graph), providers=["CPUExecutionProvider"])
    ref = OrtStepper(sess, read_graph_info(fp16_graph), 4, None)
    for s in (st, ref):
        s.reset()
    got, want = [], []
    prompt = IDS[:9]
    for start in range(0, len(prompt), 4):  # chunks of the profile's max_seq
        a = st.forward(prompt[start : start + 4], start)
        b = ref.forward(prompt[start : start + 4], start)
    got.append(a)
    want.append(b)
    for t in range(9, len(IDS)):
        got.append(st.forward([IDS[t]], t))
        want.append(ref.forward([IDS[t]], t))
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    ctx = engines[0].context
    assert ctx.shapes["past_key_values.0.key"][2] == len(IDS) - 1  # cache grew to T-1 past
    assert ctx.shapes["attention_mask"] == (1, len(IDS))


def test_reset_reuses_the_buffers_for_a_new_conversation(stepper: Any) -> None:
    st, _, cud = stepper
    n_buffers = len(cud.live)
    st.reset()
    a = st.forward(IDS[:4], 0)
    st.forward(IDS[4:6], 4)
    st.reset()
    np.testing.assert_array_equal(st.forward(IDS[:4], 0), a)
    assert len(cud.live) == n_buffers  # no allocation per step


def test_context_past_the_engine_profile_is_a_clear_error(stepper: Any) -> None:
    st, _, _ = stepper
    st.reset()
    with pytest.raises(trt_mod.EngineProfileError, match=r"at most 32.*--ctx 33"):
        st.forward([1], 32)
    from amalia_edge.errors import BackendError

    with pytest.raises(BackendError, match="prefill chunk"):
        st.forward(IDS[:5], 0)


# --- the whole backend: load (engine built on first use) → stream, with the same fakes


@pytest.mark.slow
def test_backend_load_builds_on_first_use_and_streams_like_onnxruntime(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp")
    from amalia_edge.convert.pipeline import quantize
    from amalia_edge.runtime import registry
    from amalia_edge.runtime.artifacts import resolve_model
    from amalia_edge.runtime.backend import LoadOptions
    from amalia_edge.runtime.events import Finished, Started
    from amalia_edge.runtime.sampling import SamplingParams

    quantize(
        tiny_checkpoint, tmp_path, ["F32"], imatrix="none", onnx_types=("fp16",), progress=False
    )
    _, cud, builds = install_fake_tensorrt(monkeypatch)
    art = next(a for a in resolve_model(tmp_path).artifacts if a.kind == "onnx")
    greedy = SamplingParams(temperature=0.0)
    trt_sess = registry.get("tensorrt").load(art, 128, LoadOptions(n_batch=16))
    ort_sess = registry.get("onnxruntime").load(art, 128, LoadOptions(gpu=False, n_batch=16))
    try:
        ids = trt_sess.tokenize("A Torre de Belém fica em Lisboa, junto ao rio Tejo")
        a = list(trt_sess.stream(ids, sampling=greedy, max_tokens=24))
        b = list(ort_sess.stream(ids, sampling=greedy, max_tokens=24))
    finally:
        trt_sess.close()
        ort_sess.close()
    assert isinstance(a[0], Started) and a[0].backend == "tensorrt"
    fa, fb = a[-1], b[-1]
    assert isinstance(fa, Finished) and isinstance(fb, Finished) and fa.error is None
    assert fa.token_ids == fb.token_ids and fa.text == fb.text
    assert len(builds) == 1 and builds[0].profile == trt_mod.EngineProfile(128, 16)
    assert cud.live == {}
    # second load: the cached engine is reused, nothing is built
    registry.get("tensorrt").load(art, 64, LoadOptions(n_batch=16)).close()
    assert len(builds) == 1
