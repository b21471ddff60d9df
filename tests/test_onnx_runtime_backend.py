"""ONNX Runtime backend: providers and stepping with the KV cache (the loop: test_decode.py).

Real onnxruntime on CPU with graphs exported from tiny checkpoints; llama.cpp (vocab-only)
provides the tokenizer where the stream is exercised end to end.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from amalia_edge.artifacts.onnx import GraphInfo, read_graph_info  # noqa: E402
from amalia_edge.checkpoint.reader import open_checkpoint  # noqa: E402
from amalia_edge.convert import onnx as ox  # noqa: E402
from amalia_edge.reference import ReferenceModel  # noqa: E402
from amalia_edge.runtime.backends import onnxrt  # noqa: E402

IDS = [1, 17, 42, 99, 5, 7, 200, 301, 64, 3, 1000, 12, 8, 9]


@pytest.fixture(scope="module")
def fp32_graph(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ort")
    return ox.write_onnx(open_checkpoint(tiny_checkpoint), out, "fp32").path


def cpu_stepper(path: Path, max_seq: int) -> onnxrt.OrtStepper:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return onnxrt.OrtStepper(sess, read_graph_info(path), max_seq, None)


@pytest.mark.parametrize("max_seq", [1, 5, 64])
def test_chunked_prefill_then_decode_matches_the_reference(
    fp32_graph: Path, tiny_checkpoint: Path, max_seq: int
) -> None:
    ref = ReferenceModel(open_checkpoint(tiny_checkpoint)).logits(IDS)
    st = cpu_stepper(fp32_graph, max_seq)
    st.reset()
    got = []
    prompt = IDS[:9]
    for start in range(0, len(prompt), max_seq):
        last = st.forward(prompt[start : start + max_seq], start)
    got.append(last)
    for t in range(9, len(IDS)):
        got.append(st.forward([IDS[t]], t))
    want = ref[8:]
    np.testing.assert_allclose(np.stack(got), want, atol=1e-3)
    assert (np.stack(got).argmax(-1) == want.argmax(-1)).all()


def test_reset_starts_a_fresh_cache(fp32_graph: Path) -> None:
    st = cpu_stepper(fp32_graph, 8)
    a = st.forward(IDS[:4], 0)
    st.forward(IDS[4:6], 4)
    st.reset()
    np.testing.assert_array_equal(st.forward(IDS[:4], 0), a)


# --- providers


def test_gpu_providers_are_not_requested_without_a_gpu() -> None:
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    no_gpu: Any = SimpleNamespace(has_cuda=False, cuda_cc=None)
    chosen, reasons = onnxrt.choose_providers(listed, no_gpu, None)
    assert chosen == ["CPUExecutionProvider"]
    assert all("no GPU" in r for r in reasons) and len(reasons) == 2


def test_providers_are_ordered_tensorrt_cuda_cpu_on_a_gpu() -> None:
    orin: Any = SimpleNamespace(has_cuda=True, cuda_cc="8.7")
    listed = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert onnxrt.choose_providers(listed, orin, None)[0] == list(onnxrt.PROVIDER_ORDER)
    assert onnxrt.choose_providers(listed, orin, False)[0] == ["CPUExecutionProvider"]
    assert onnxrt.choose_providers(["CPUExecutionProvider"], orin, None)[0] == [
        "CPUExecutionProvider"
    ]


def test_tensorrt_provider_options_carry_the_profile_and_caches(tmp_path: Path) -> None:
    from amalia_edge.convert.tensorrt import EngineProfile

    info = GraphInfo("fp16", "float16", 1, 2, 8, 32, 128)
    opts = onnxrt.trt_provider_options(tmp_path, EngineProfile(128, 16).shapes(info))
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    assert "input_ids:1x16" in opts["trt_profile_max_shapes"]
    assert "past_key_values.0.key:1x2x0x8" in opts["trt_profile_min_shapes"]
    assert "past_key_values.0.value:1x2x127x8" in opts["trt_profile_max_shapes"]


def test_probe_reports_cpu_here_and_never_claims_a_gpu_it_lacks() -> None:
    cpu_box: Any = SimpleNamespace(has_cuda=False, cuda_cc=None)
    av = onnxrt.OnnxRuntimeBackend().probe(cpu_box)
    assert av.ok and "CPU only" in av.reason
    assert av.details["providers_requested"] == ["CPUExecutionProvider"]
    assert av.details["providers"] == ["CPUExecutionProvider"]


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_active_providers_come_from_a_real_session_not_the_wheel_listing() -> None:
    """Asking for CUDA where it cannot initialise yields what the session really runs on."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    active, problem = onnxrt.active_providers(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert active == ["CPUExecutionProvider"]
    assert problem is not None and "CUDAExecutionProvider" in problem


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_active_providers_need_no_onnx_package_and_never_echo_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the onnx package the probe still asks a real session (it used to report the
    requested list, CUDA included, as active)."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # import onnx -> ImportError
    onnxrt.active_providers.cache_clear()
    try:
        active, problem = onnxrt.active_providers(("CUDAExecutionProvider", "CPUExecutionProvider"))
    finally:
        onnxrt.active_providers.cache_clear()
    assert active == ["CPUExecutionProvider"] and "CUDAExecutionProvider" not in active
    assert problem is not None and "CUDAExecutionProvider" in problem
