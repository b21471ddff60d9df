"""ONNX Runtime against llama.cpp F32 on the same checkpoint, end to end through the backends.

Artifacts are made by the real pipeline (``quantize(..., ["F32"], onnx_types=...)``); both
backends load through the registry; llama.cpp runs on the CPU. Skipped where
llama-cpp-python is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
llama_cpp = pytest.importorskip("llama_cpp")

from amalia_edge.runtime import registry  # noqa: E402
from amalia_edge.runtime.artifacts import resolve_model  # noqa: E402
from amalia_edge.runtime.backend import LoadOptions  # noqa: E402
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent  # noqa: E402
from amalia_edge.runtime.sampling import SamplingParams  # noqa: E402

PROMPT = "A Torre de Belém fica em Lisboa, junto ao rio"
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def make_artifacts(source: Path | None, out: Path) -> Path:
    from amalia_edge.convert.pipeline import quantize

    quantize(source, out, ["F32"], imatrix="none", onnx_types=PRECISIONS, threads=2, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_onnx_artifacts(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tiny_checkpoint, tmp_path_factory.mktemp("onnx_llama"))


@pytest.fixture(scope="module")
def demo_onnx_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from amalia_edge.checkpoint import DEMO_DIR

    if not (DEMO_DIR / "config.json").is_file():
        pytest.skip(f"the bundled demo model is not in {DEMO_DIR} yet")
    return make_artifacts(None, tmp_path_factory.mktemp("onnx_llama_demo"))


def artifact(art_dir: Path, kind: str, quant: str) -> Any:
    return next(
        a
        for a in resolve_model(art_dir).artifacts
        if a.kind == kind and a.quant.upper() == quant.upper()
    )


def llama_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=256, logits_all=True, n_threads=2, verbose=False
    )
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return out


def ort_logits(onnx_path: Path, ids: list[int]) -> np.ndarray:
    import onnxruntime as ort

    from amalia_edge.artifacts.onnx import read_graph_info

    info = read_graph_info(onnx_path)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds: dict[str, Any] = {
        "input_ids": np.array([ids], np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None],
        "attention_mask": np.ones((1, len(ids)), np.int64),
    }
    for n in info.past_names():
        feeds[n] = np.zeros((1, info.num_kv_heads, 0, info.head_dim), info.kv_dtype)
    return np.asarray(sess.run(["logits"], feeds)[0][0])


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    def ls(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = ls(p_logits), ls(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def greedy(art: Any, backend: str, ids: list[int], n: int) -> Finished:
    sess = registry.get(backend).load(art, 256, LoadOptions(gpu=False, n_threads=2))
    try:
        events = list(sess.stream(ids, sampling=SamplingParams(temperature=0.0), max_tokens=n))
    finally:
        sess.close()
    assert isinstance(events[0], Started) and isinstance(events[1], PromptProcessed)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.error is None
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == fin.text
    return fin


def prompt_ids(art_dir: Path) -> list[int]:
    sess = registry.get("onnxruntime").load(
        artifact(art_dir, "onnx", "fp32"), 256, LoadOptions(gpu=False)
    )
    try:
        return sess.tokenize(PROMPT, add_bos=True)
    finally:
        sess.close()


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_ort_logits_match_llamacpp_f32_and_the_reference(
    which: str, request: pytest.FixtureRequest, record_property: Callable[[str, Any], None]
) -> None:
    from amalia_edge.checkpoint.reader import open_checkpoint
    from amalia_edge.reference import ReferenceModel

    art_dir: Path = request.getfixturevalue(f"{which}_onnx_artifacts")
    ids = prompt_ids(art_dir)
    gguf = artifact(art_dir, "gguf", "F32").path
    # source.path is relative to the artifacts folder (issue 12)
    source = art_dir / resolve_model(art_dir).manifest.source["path"]
    ref_l = ReferenceModel(open_checkpoint(source)).logits(ids)
    ll = llama_logits(gguf, ids)
    ort_l = ort_logits(artifact(art_dir, "onnx", "fp32").path, ids)
    np.testing.assert_array_equal(ort_l.argmax(-1), ll.argmax(-1))
    np.testing.assert_array_equal(ort_l.argmax(-1), ref_l.argmax(-1))
    d_llama, d_ref = float(np.abs(ort_l - ll).max()), float(np.abs(ort_l - ref_l).max())
    print(f"{which}: max |ORT - llama.cpp F32| {d_llama:.2e}, max |ORT - reference| {d_ref:.2e}")
    record_property("max_abs_vs_llamacpp", d_llama)
    assert d_ref < 1e-3
    assert d_llama < 2e-2 * max(1.0, float(np.abs(ll).max()))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_greedy_64_tokens_identical_to_llamacpp_f32(
    which: str, request: pytest.FixtureRequest
) -> None:
    art_dir: Path = request.getfixturevalue(f"{which}_onnx_artifacts")
    ids = prompt_ids(art_dir)
    a = greedy(artifact(art_dir, "gguf", "F32"), "llama.cpp", ids, 64)
    b = greedy(artifact(art_dir, "onnx", "fp32"), "onnxruntime", ids, 64)
    assert b.token_ids == a.token_ids
    assert b.text == a.text


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_reduced_precisions_kl_against_llamacpp_f32(
    which: str, request: pytest.FixtureRequest
) -> None:
    art_dir: Path = request.getfixturevalue(f"{which}_onnx_artifacts")
    ids = prompt_ids(art_dir)
    ll = llama_logits(artifact(art_dir, "gguf", "F32").path, ids)
    kls = {p: kl(ll, ort_logits(artifact(art_dir, "onnx", p).path, ids)) for p in PRECISIONS}
    print(which, "KL vs llama.cpp F32:", {p: f"{v:.2e}" for p, v in kls.items()})
    assert kls["fp32"] < 1e-4
    assert kls["fp16"] < 1e-3
    assert kls["int8"] < 2e-2
    assert kls["int4"] < 0.5
    assert kls["fp32"] <= kls["fp16"] <= kls["int8"] <= kls["int4"]


def test_ort_session_reports_the_providers_it_runs_on(tiny_onnx_artifacts: Path) -> None:
    sess = registry.get("onnxruntime").load(
        artifact(tiny_onnx_artifacts, "onnx", "fp16"), 128, LoadOptions(gpu=False)
    )
    try:
        assert sess.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
        assert sess.chat_template and "<|im_start|>" in sess.chat_template
        fin = list(sess.stream("Olá", sampling=SamplingParams(seed=1), max_tokens=8))[-1]
        assert isinstance(fin, Finished) and fin.completion_tokens >= 1
    finally:
        sess.close()


def test_onnx_file_not_matching_the_manifest_is_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from amalia_edge.convert.pipeline import quantize
    from amalia_edge.errors import ArtifactError

    quantize(
        tiny_checkpoint, tmp_path, ["F32"], imatrix="none", onnx_types=("fp32",), progress=False
    )
    graph = tmp_path / "model-fp32.onnx"
    graph.write_bytes(graph.read_bytes().replace(b"amalia-edge", b"amalia-EDGE"))
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        registry.get("onnxruntime").load(
            artifact(tmp_path, "onnx", "fp32"), 128, LoadOptions(gpu=False)
        )
