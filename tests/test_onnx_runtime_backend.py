"""ONNX Runtime backend: providers, stepping with the KV cache, sampling, the event stream.

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

from amalia_edge.checkpoint.reader import open_checkpoint  # noqa: E402
from amalia_edge.convert import onnx as ox  # noqa: E402
from amalia_edge.reference import ReferenceModel  # noqa: E402
from amalia_edge.runtime.backends import onnxrt  # noqa: E402
from amalia_edge.runtime.sampling import SamplingParams  # noqa: E402

IDS = [1, 17, 42, 99, 5, 7, 200, 301, 64, 3, 1000, 12, 8, 9]


@pytest.fixture(scope="module")
def fp32_graph(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ort")
    return ox.write_onnx(open_checkpoint(tiny_checkpoint), out, "fp32").path


def cpu_stepper(path: Path, max_seq: int) -> onnxrt.OrtStepper:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return onnxrt.OrtStepper(sess, ox.read_graph_info(path), max_seq, None)


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
        last = st.step(prompt[start : start + max_seq], start)
    got.append(last)
    for t in range(9, len(IDS)):
        got.append(st.step([IDS[t]], t))
    want = ref[8:]
    np.testing.assert_allclose(np.stack(got), want, atol=1e-3)
    assert (np.stack(got).argmax(-1) == want.argmax(-1)).all()


def test_reset_starts_a_fresh_cache(fp32_graph: Path) -> None:
    st = cpu_stepper(fp32_graph, 8)
    a = st.step(IDS[:4], 0)
    st.step(IDS[4:6], 4)
    st.reset()
    np.testing.assert_array_equal(st.step(IDS[:4], 0), a)


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

    info = ox.GraphInfo("fp16", "float16", 1, 2, 8, 32, 128)
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


# --- sampling


def test_greedy_is_argmax_and_sampling_is_seeded() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=500).astype(np.float32)
    greedy = SamplingParams(temperature=0.0)
    assert onnxrt.sample_next(logits, greedy, [], rng) == int(logits.argmax())
    top1 = SamplingParams(temperature=1.0, top_k=1)
    assert onnxrt.sample_next(logits, top1, [], rng) == int(logits.argmax())
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    a = [onnxrt.sample_next(logits, p, [], np.random.default_rng(3)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw
    draws = {onnxrt.sample_next(logits, p, [], rng) for _ in range(50)}
    assert len(draws) > 5


def test_min_p_and_top_p_cut_the_tail() -> None:
    logits = np.array([10.0, 9.5, 0.0, -1.0, -2.0], np.float32)
    rng = np.random.default_rng(0)
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1)
    assert {onnxrt.sample_next(logits, p, [], rng) for _ in range(200)} == {0, 1}
    p = SamplingParams(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0)
    assert {onnxrt.sample_next(logits, p, [], rng) for _ in range(50)} == {0}


def test_repeat_penalty_demotes_recent_tokens() -> None:
    logits = np.array([2.0, 1.9, 0.0], np.float32)
    p = SamplingParams(temperature=0.0, repeat_penalty=1.5)
    assert onnxrt.sample_next(logits, p, [0], np.random.default_rng(0)) == 1


# --- the shared generation loop, with a scripted stepper and a byte tokenizer


class ByteTok:
    """Token id = byte value; 0 ends generation."""

    def piece(self, tid: int) -> bytes:
        return bytes([tid])

    def is_eog(self, tid: int) -> bool:
        return tid == 0


class Scripted:
    """Logits that pick ``script[k]`` as the k-th generated token."""

    max_seq = 4

    def __init__(self, script: list[int], prompt_len: int = 2) -> None:
        self.script = script
        self.prompt_len = prompt_len
        self.calls: list[tuple[list[int], int]] = []

    def reset(self) -> None:
        self.calls.clear()

    def step(self, ids: Any, past: int) -> np.ndarray:
        self.calls.append((list(ids), past))
        out = np.zeros(256, np.float32)
        k = past + len(ids) - self.prompt_len
        out[self.script[min(max(k, 0), len(self.script) - 1)]] = 1.0
        return out


def run(stepper: Scripted, prompt: list[int], **kw: Any) -> list[Any]:
    args: dict[str, Any] = dict(
        backend="test",
        artifact_label="onnx:fp32",
        n_ctx=64,
        tok=ByteTok(),
        stepper=stepper,
        prompt_ids=prompt,
        sampling=SamplingParams(temperature=0.0),
        max_tokens=10,
        stop=(),
        cancel=None,
    )
    args.update(kw)
    return list(onnxrt.generate(**args))


def test_stream_events_order_text_and_chunked_prefill() -> None:
    from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent

    st = Scripted([ord("o"), ord("l"), ord("a"), 0], prompt_len=10)
    evs = run(st, list(b"ola, mundo"))  # 10 prompt tokens: chunks 4 + 4 + 2
    assert isinstance(evs[0], Started) and isinstance(evs[1], PromptProcessed)
    assert [c[1] for c in st.calls[:3]] == [0, 4, 8]
    toks = [e for e in evs if isinstance(e, TokenEvent)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.reason == "stop"
    assert "".join(t.text for t in toks) == fin.text == "ola"
    assert st.calls[3:] == [([ord("o")], 10), ([ord("l")], 11), ([ord("a")], 12)]


def test_stream_stops_on_stop_string_length_and_full_context() -> None:
    evs = run(Scripted([ord("a"), ord("b"), ord("c")]), [1, 2], stop=("bc",))
    assert evs[-1].reason == "stop_string" and evs[-1].text == "a"
    evs = run(Scripted([ord("z")]), [1, 2], max_tokens=3)
    assert evs[-1].reason == "length" and evs[-1].text == "zzz"
    evs = run(Scripted([ord("z")]), [1, 2], n_ctx=5)
    assert evs[-1].reason == "context_full" and evs[-1].completion_tokens == 3


def test_cancel_and_errors_still_end_with_finished() -> None:
    import threading

    cancel = threading.Event()
    cancel.set()
    evs = run(Scripted([ord("z")]), [1, 2], cancel=cancel)
    assert evs[-1].reason == "cancelled" and evs[-1].completion_tokens == 1

    class Boom(Scripted):
        def step(self, ids: Any, past: int) -> np.ndarray:
            if past > 0:
                raise RuntimeError("device lost")
            return super().step(ids, past)

    evs = run(Boom([ord("z")]), [1, 2])
    assert evs[-1].reason == "error" and "device lost" in (evs[-1].error or "")


def test_prompt_that_fills_the_context_is_refused_before_started() -> None:
    from amalia_edge.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError, match="context holds 4"):
        run(Scripted([1]), [1, 2, 3, 4], n_ctx=4)
