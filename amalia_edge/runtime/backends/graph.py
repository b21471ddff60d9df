"""What the ONNX Runtime and TensorRT backends share: both run the exported ONNX decoder.

* :class:`Tokenizer`: the vocabulary of a GGUF of the same model in the artifacts directory
  (llama.cpp, vocab only), so these backends and llama.cpp turn text into the same ids and
  end generation on the same tokens (``llama_vocab_is_eog``);
* :func:`artifact_graph_info`: the graph's :class:`~amalia_edge.artifacts.onnx.GraphInfo`
  (from the file, else from the manifest's model shape);
* :func:`decode_bytes_per_token`: the cost model selection ranks both backends with;
* :class:`GraphSession`: a loaded graph: the tokenizer plus a stepper, streaming through
  the shared decode loop (:mod:`amalia_edge.runtime.decode`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amalia_edge.artifacts.onnx import GraphInfo, read_graph_info
from amalia_edge.errors import ArtifactError, BackendUnavailableError
from amalia_edge.runtime.artifacts import Artifact
from amalia_edge.runtime.backend import kv_cache_bytes
from amalia_edge.runtime.decode import DecodingSession, Stepper

log = logging.getLogger(__name__)


class Tokenizer:
    """Tokenize / detokenize with the vocabulary of a GGUF file (llama.cpp, vocab only)."""

    def __init__(self, gguf_path: Path) -> None:
        try:
            from amalia_edge.runtime.native import import_llama_cpp

            llama_cpp = import_llama_cpp()
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


@functools.lru_cache(maxsize=32)
def _read_info(path: str, mtime_ns: int) -> GraphInfo:
    return read_graph_info(path)


def artifact_graph_info(artifact: Artifact) -> GraphInfo:
    """:class:`GraphInfo` of an ONNX artifact.

    From the graph's own metadata when the file and the ``onnx`` package are there (the
    authority), else from the model shape the manifest or a sibling GGUF gave.
    """
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


def kv_type(info: GraphInfo) -> str:
    """The graph's KV-cache element type in llama.cpp's names (for kv_cache_bytes)."""
    return "f32" if info.kv_dtype == "float32" else "f16"


def weight_bytes(artifact: Artifact) -> int:
    """Graph + external data bytes (the manifest's ``data_size`` rides in ``extra``)."""
    return int(artifact.size) + int(artifact.extra.get("data_size") or 0)


def decode_bytes_per_token(artifact: Artifact, n_ctx: int) -> int:
    """Every weight byte once (an upper bound: only the looked-up embedding rows are read),
    plus reading past and writing present KV at half fill."""
    info = artifact_graph_info(artifact)
    kv_half = kv_cache_bytes(
        info.num_layers, info.num_kv_heads, info.head_dim, n_ctx // 2, kv_type(info)
    )
    return weight_bytes(artifact) + 2 * kv_half


class GraphSession(DecodingSession):
    """A loaded ONNX decoder (ONNX Runtime or a TensorRT engine): tokenizer + stepper."""

    def __init__(
        self,
        artifact: Artifact,
        n_ctx: int,
        tok: Tokenizer,
        stepper: Stepper,
        providers: list[str],
        backend_name: str,
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

    def piece(self, token_id: int) -> bytes:
        return self.tok.piece(token_id)

    def is_eog(self, token_id: int) -> bool:
        return self.tok.is_eog(token_id)

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
