"""Shared pytest fixtures (models): GGUF files made by amalia-edge's own converter.

* ``tiny_artifacts``: an artifacts directory (GGUF files + ``manifest.json``) converted from
  ``tiny_checkpoint`` with :func:`amalia_edge.convert.pipeline.quantize`: F32, F16, BF16,
  Q8_0, and Q4_K_M when llama-cpp-python is installed. Read-only: shared by the session.
* ``tiny_gguf``: ``{quant: path}`` of the files in ``tiny_artifacts``.
* ``tiny_imatrix``: a llama.cpp GGUF importance matrix for ``tiny_checkpoint``, accumulated
  from the numpy reference forward pass over pt-PT training text (what ``llama-imatrix``
  computes: per weight, the sum over tokens of each input column squared, and the token count).
* ``demo_artifacts``: the bundled demo model (``amalia_edge/data/demo``) converted to F16,
  Q8_0 and Q4_K_M; skipped while the demo model is not there.

``write_imatrix_gguf`` writes that GGUF imatrix format (``tools/imatrix/imatrix.cpp``
``save_imatrix``) for tests that need their own.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def write_imatrix_gguf(
    path: Path,
    stats: Mapping[str, tuple[np.ndarray[Any, Any], int]],
    *,
    dataset: str = "pt_pt_train.txt",
    chunk_count: int = 1,
    chunk_size: int = 512,
) -> Path:
    """Write ``{gguf_weight_name: (sum of squares per input column, token count)}`` as a
    llama.cpp GGUF imatrix: ``general.type = imatrix``, ``imatrix.datasets``,
    ``imatrix.chunk_count``, ``imatrix.chunk_size``; tensors ``<name>.in_sum2`` (F32,
    ggml shape {n_in, 1}) and ``<name>.counts`` (F32, {1, 1})."""
    import gguf

    w = gguf.GGUFWriter(path, arch="imatrix")
    # llama-imatrix writes no general.architecture; gguf-py always adds it, llama.cpp ignores it.
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", [dataset])
    w.add_uint32("imatrix.chunk_count", chunk_count)
    w.add_uint32("imatrix.chunk_size", chunk_size)
    for name, (sum2, count) in stats.items():
        w.add_tensor(f"{name}.in_sum2", np.asarray(sum2, dtype=np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.full((1, 1), float(count), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reference_imatrix(checkpoint: Path, path: Path, n_tokens: int = 256) -> Path:
    """Accumulate an imatrix for ``checkpoint`` from the reference forward on pt-PT text."""
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert import tensor_names
    from amalia_edge.reference import ReferenceModel
    from tests import factory

    ckpt = open_checkpoint(checkpoint)
    spec = tensor_names.spec_for(ckpt.config.architecture)
    text = "\n".join(factory.corpus_lines(max_chars=20_000))
    ids = _encode(ckpt, text)[:n_tokens]
    sums: dict[str, list[Any]] = {}

    def hook(hf_name: str, x: np.ndarray[Any, Any]) -> None:
        # llama-imatrix keys by the weight's GGUF name (a tied head stays token_embd.weight).
        name = tensor_names.gguf_name(spec, hf_name)
        if name is None:
            return
        acc = sums.setdefault(name, [np.zeros(x.shape[1], dtype=np.float64), 0])
        acc[0] += (x.astype(np.float64) ** 2).sum(axis=0)
        acc[1] += x.shape[0]

    ReferenceModel(ckpt).forward(ids, on_matmul=hook)
    stats = {n: (s.astype(np.float32), c) for n, (s, c) in sums.items()}
    return write_imatrix_gguf(path, stats, chunk_count=1, chunk_size=len(ids))


def _encode(ckpt: Any, text: str) -> list[int]:
    model = ckpt.path / "tokenizer.model"
    if model.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model))
        return [int(i) for i in sp.encode(text)]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt.path / "tokenizer.json"))
    return list(tok.encode(text).ids)


def tiny_types() -> list[str]:
    return ["F32", "F16", "BF16", "Q8_0", *(["Q4_K_M"] if HAVE_LLAMA_CPP else [])]


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    from amalia_edge.convert.pipeline import quantize

    out = tmp_path_factory.mktemp("tiny_artifacts")
    quantize(tiny_checkpoint, out, tiny_types(), imatrix="none", threads=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_gguf(tiny_artifacts: Path) -> dict[str, Path]:
    from amalia_edge.artifacts.manifest import load_manifest

    manifest = load_manifest(tiny_artifacts)
    return {a.quant: tiny_artifacts / a.file for a in manifest.artifacts if a.kind == "gguf"}


@pytest.fixture(scope="session")
def tiny_imatrix(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    return reference_imatrix(tiny_checkpoint, tmp_path_factory.mktemp("imatrix") / "tiny.gguf")


@pytest.fixture(scope="session")
def demo_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from amalia_edge.checkpoint import DEMO_DIR
    from amalia_edge.convert.pipeline import quantize

    if not (DEMO_DIR / "config.json").is_file():
        pytest.skip(f"the bundled demo model is not in {DEMO_DIR} yet")
    out = tmp_path_factory.mktemp("demo_artifacts")
    types = ["F16", "Q8_0", *(["Q4_K_M"] if HAVE_LLAMA_CPP else [])]
    quantize(None, out, types, imatrix="none", threads=2, progress=False)
    return out
