"""The bundled pt-PT demo model: a real checkpoint that converts, loads and speaks Portuguese."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.checkpoint import DEMO_DIR, Checkpoint, open_checkpoint
from tests import factory

DEMO = Path(os.environ.get("AMALIA_EDGE_TEST_DEMO", DEMO_DIR))
PROMPT = "O rapaz entrou na casa e"
WORD = re.compile(r"[a-záàâãäéèêëíìîïóòôõöúùûüç]+")


@pytest.fixture(scope="module")
def demo() -> Checkpoint:
    return open_checkpoint(DEMO)


@pytest.fixture(scope="module")
def demo_gguf(demo: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from amalia_edge.convert.gguf import write_gguf

    path = tmp_path_factory.mktemp("demo-gguf") / "demo-F32.gguf"
    write_gguf(demo, path, "f32")
    return path


@pytest.fixture(scope="module")
def train_words(corpus_dir: Path) -> set[str]:
    with open(corpus_dir / "pt_pt_train.txt", encoding="utf-8") as fh:
        return set(WORD.findall(fh.read(3_000_000).lower()))


def _single_thread_blas() -> None:
    """OpenBLAS threads spin against each other on a shared 2-core machine: use one."""
    import ctypes

    with open("/proc/self/maps", encoding="utf-8") as fh:
        paths = [ln.split()[-1] for ln in fh if "openblas" in ln.lower()]
    for path in paths[:1]:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(lib, sym):
                getattr(lib, sym)(1)
                return


def test_is_a_llama_with_k_quant_friendly_shapes_and_chatml(demo: Checkpoint) -> None:
    c = demo.config
    assert c.architecture == "LlamaForCausalLM"
    assert c.hidden_size % 256 == 0 and c.intermediate_size % 256 == 0
    assert c.num_key_value_heads < c.num_attention_heads  # GQA
    assert 4000 <= c.vocab_size <= 8192
    v = demo.vocab
    assert (v.bos_id, v.eos_id, v.pad_id) == (1, 2, 3)
    assert v.tokens[0] == b"<unk>"
    im_end = v.token_id("<|im_end|>")
    assert v.token_id("<|im_start|>") is not None and im_end is not None
    assert v.chat_eos_id == im_end
    assert v.tokens[v.token_id("<0x0A>") or 0] == b"<0x0A>"  # byte fallback pieces
    assert "<|im_start|>assistant" in str(v.chat_template)
    size = sum(p.stat().st_size for p in DEMO.iterdir() if p.is_file())
    assert size < 25_000_000


def test_model_card_states_the_measured_numbers(demo: Checkpoint) -> None:
    metrics = json.loads((DEMO / "metrics.json").read_text(encoding="utf-8"))
    card = (DEMO / "README.md").read_text(encoding="utf-8")
    assert f"{metrics['eval_ppl_trained']:.2f}" in card
    assert f"{metrics['eval_ppl_untrained']:.1f}" in card
    assert f"{metrics['parameters']:,}" in card
    losses = [r["train_loss"] for r in metrics["loss_curve"]]
    assert losses[-1] < losses[0] - 2.0
    assert metrics["parameters"] == demo.param_count


def test_card_licence_reaches_gguf_metadata(demo: Checkpoint, demo_gguf: Path) -> None:
    """The card's YAML front matter is what fills general.license / general.languages."""
    import gguf

    assert demo.license == "apache-2.0"
    fields = gguf.GGUFReader(demo_gguf).fields
    assert fields["general.license"].contents() == "apache-2.0"
    assert fields["general.languages"].contents() == ["pt"]


def test_llama_cpp_logits_match_the_numpy_reference(demo: Checkpoint, demo_gguf: Path) -> None:
    """Same logits through convert_hf-style Q/K permutation + llama.cpp's RoPE as in HF."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from amalia_edge.reference import ReferenceModel

    _single_thread_blas()
    llm = llama_cpp.Llama(
        model_path=str(demo_gguf), n_ctx=64, logits_all=True, n_threads=1, verbose=False
    )
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    want = ReferenceModel(demo).logits(ids)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3 * float(np.abs(want).max()), rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_greedy_generation_is_mostly_portuguese(demo_gguf: Path, train_words: set[str]) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(demo_gguf), n_ctx=128, n_threads=1, verbose=False)
    out = llm.create_completion(PROMPT, max_tokens=40, temperature=0.0, top_k=1)
    text = out["choices"][0]["text"]
    words = WORD.findall(text.lower())
    assert len(words) >= 8, text
    known = sum(w in train_words for w in words)
    assert known / len(words) >= 0.7, text


def _untrained_copy(demo: Checkpoint, directory: Path) -> Path:
    """The demo's config and tokenizer with fresh N(0, 0.02) weights (norms 1), F32."""
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        shutil.copy(DEMO / name, directory / name)
    cfg = json.loads((directory / "config.json").read_text())
    cfg["torch_dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    entries = [(n, "F32", tuple(i.shape)) for n, i in demo.tensor_infos.items()]
    shapes = {n: s for n, _, s in entries}

    def make(name: str) -> np.ndarray[Any, Any]:
        if name.endswith("norm.weight"):
            return np.ones(shapes[name], dtype=np.float32)
        return rng.normal(0.0, 0.02, shapes[name]).astype(np.float32)

    factory.write_safetensors(directory / "model.safetensors", entries, make)
    return directory


@pytest.mark.slow
def test_held_out_perplexity_is_far_below_an_untrained_model(
    demo: Checkpoint, corpus_dir: Path, tmp_path: Path
) -> None:
    import sentencepiece as spm

    from amalia_edge.reference import ReferenceModel

    _single_thread_blas()
    text = (corpus_dir / "pt_pt_eval.txt").read_text(encoding="utf-8")[20_000:26_000]
    sp = spm.SentencePieceProcessor(model_file=str(DEMO / "tokenizer.model"))
    ids = sp.encode(text)
    windows = [[1, *ids[i * 127 : (i + 1) * 127]] for i in range(2)]

    def ppl(ckpt: Checkpoint) -> float:
        ref = ReferenceModel(ckpt)
        nll, n = 0.0, 0
        for w in windows:
            logits = ref.logits(w[:-1]).astype(np.float64)
            logits -= logits.max(-1, keepdims=True)
            lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            nll -= float(lp[np.arange(len(w) - 1), w[1:]].sum())
            n += len(w) - 1
        return math.exp(nll / n)

    trained = ppl(demo)
    untrained = ppl(open_checkpoint(_untrained_copy(demo, tmp_path)))
    assert untrained > 0.5 * demo.config.vocab_size  # ~uniform over the vocabulary
    assert trained < untrained / 5, (trained, untrained)
