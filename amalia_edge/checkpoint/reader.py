"""Open a Hugging Face checkpoint directory: config, safetensors index, tokenizer.

:func:`open_checkpoint` validates everything it can without reading weights (config,
every safetensors header, the shard index, tensor names and shapes against the config, the
tokenizer), so a bad checkpoint fails before anything is written anywhere. Weights are then
read one tensor at a time on demand. Nothing here writes to the checkpoint directory.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.checkpoint import safetensors as st
from amalia_edge.checkpoint.architectures import (
    GLOBAL_TENSORS,
    IGNORED_SUFFIXES,
    LAYER_TENSORS,
    LM_HEAD,
    OPTIONAL_LAYER_TENSORS,
)
from amalia_edge.checkpoint.config import ModelConfig, load_config
from amalia_edge.checkpoint.hub import looks_like_repo_id, resolve_or_download
from amalia_edge.checkpoint.safetensors import SafetensorsHeader, TensorInfo
from amalia_edge.checkpoint.tokenizer import TOKENIZER_FILES, Vocab, load_vocab
from amalia_edge.errors import CheckpointError
from amalia_edge.safeio import load_json_file

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
INDEX_FILE = "model.safetensors.index.json"
# Pickle-based PyTorch weight files: refused by name, never opened (unpickling runs code).
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_PICKLE_FIX = (
    "amalia-edge never unpickles weights (a pickle can run arbitrary code); use the "
    "safetensors files of this model (most Hub repos ship model*.safetensors), or convert it "
    "in a trusted environment with transformers' save_pretrained(..., safe_serialization=True)"
)


def _pickle_error(files: list[Path]) -> CheckpointError:
    names = ", ".join(sorted(p.name for p in files)[:3])
    return CheckpointError(f"weights are PyTorch pickles ({names})", fix=_PICKLE_FIX)


class Checkpoint:
    """A validated, lazily read Hugging Face checkpoint. Build it with :func:`open_checkpoint`.

    ``tensor_infos`` maps HF tensor names to where they are; :meth:`read` reads one tensor
    (memory bounded by that tensor). ``vocab`` is the GGUF-ready tokenizer data.
    """

    def __init__(self, path: Path, *, repo_id: str | None = None, tokenizer: bool = True) -> None:
        self.path = path
        self.repo_id = repo_id
        if not (path / INDEX_FILE).is_file() and not any(path.glob("*.safetensors")):
            pickles = [p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise _pickle_error(pickles)
        self.config: ModelConfig = load_config(path)
        self.headers: list[SafetensorsHeader] = self._load_headers()
        self.tensor_infos: dict[str, TensorInfo] = {}
        for header in self.headers:
            self.tensor_infos.update(header.tensors)
        if self._index is not None:
            # The index decides which tensors belong to the model; extras in shards are ignored.
            self.tensor_infos = {n: self.tensor_infos[n] for n in self._index}
        self._validate_tensors()
        if tokenizer:
            _ = self.vocab

    # -- weights -------------------------------------------------------------------------

    _index: dict[str, str] | None = None

    def _load_headers(self) -> list[SafetensorsHeader]:
        d = self.path
        index_path = d / INDEX_FILE
        if index_path.is_file():
            index = load_json_file(
                index_path, CheckpointError, fix="download model.safetensors.index.json again"
            )
            try:
                weight_map = index["weight_map"]
                if not isinstance(weight_map, dict) or not all(
                    isinstance(v, str) for v in weight_map.values()
                ):
                    raise TypeError("weight_map is not {tensor: file}")
            except (KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"{index_path}: malformed shard index ({exc})",
                    fix="download model.safetensors.index.json again",
                ) from None
            self._index = dict(weight_map)
            headers: dict[str, SafetensorsHeader] = {}
            for shard in sorted(set(weight_map.values())):
                shard_path = d / shard
                if Path(shard).name != shard or not shard_path.is_file():
                    raise CheckpointError(
                        f"shard {shard} listed in {INDEX_FILE} is missing from {d}",
                        fix="download the missing shard (all model-*-of-*.safetensors files)",
                    )
                headers[shard] = st.read_header(shard_path)
            for name, shard in weight_map.items():
                if name not in headers[shard].tensors:
                    raise CheckpointError(
                        f"tensor {name} is listed in {INDEX_FILE} under {shard} but is not in "
                        "that file",
                        fix="the shard or the index is from another revision; download both again",
                    )
            return list(headers.values())
        files = sorted(d.glob("*.safetensors"))
        hf_files = [f for f in files if f.name.startswith("model")]
        if hf_files:
            # Mistral repos ship consolidated.safetensors (Mistral's own tensor names) beside
            # the HF files; the HF ones are the checkpoint.
            files = hf_files
        if not files:
            pickles = [p for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise _pickle_error(pickles)
            raise CheckpointError(
                f"{d} has no *.safetensors weights", fix="download the model's safetensors files"
            )
        headers_list = [st.read_header(f) for f in files]
        seen: dict[str, Path] = {}
        for h in headers_list:
            for name in h.tensors:
                if name in seen:
                    raise CheckpointError(
                        f"tensor {name} is in both {seen[name].name} and {h.path.name}",
                        fix=f"remove the stray file, or add the {INDEX_FILE} saying which is used",
                    )
                seen[name] = h.path
        return headers_list

    def _validate_tensors(self) -> None:
        c = self.config
        infos = self.tensor_infos

        def need(name: str, shape: tuple[int, ...]) -> None:
            info = infos.get(name)
            if info is None:
                raise CheckpointError(
                    f"tensor {name} is missing from the checkpoint",
                    fix=f"the weights do not match config.json ({c.architecture}, "
                    f"{c.num_hidden_layers} layers); download the complete checkpoint",
                )
            if info.dtype not in ("F32", "F16", "BF16"):
                raise CheckpointError(
                    f"tensor {name} is {info.dtype}",
                    fix="only F32, F16 and BF16 checkpoints are read; use an unquantized one",
                )
            if info.shape != shape:
                raise CheckpointError(
                    f"tensor {name} has shape {list(info.shape)}, config.json implies "
                    f"{list(shape)}",
                    fix="config.json and the weights disagree; use the model's own config.json",
                )

        emb = infos.get("model.embed_tokens.weight")
        if emb is not None and len(emb.shape) == 2 and emb.shape[0] != c.vocab_size:
            raise CheckpointError(
                f"config.json vocab_size is {c.vocab_size} but the embedding has "
                f"{emb.shape[0]} rows",
                fix="config.json and the weights disagree; use the model's own config.json",
            )
        h, q, kv, ff = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        )
        need("model.embed_tokens.weight", (c.vocab_size, h))
        need("model.norm.weight", (h,))
        if LM_HEAD in infos:
            need(LM_HEAD, (c.vocab_size, h))
        elif not c.tie_word_embeddings:
            log.info("no %s and tie_word_embeddings is false: using the embedding", LM_HEAD)
        shapes = {
            "input_layernorm.weight": (h,),
            "post_attention_layernorm.weight": (h,),
            "self_attn.q_proj.weight": (q, h),
            "self_attn.k_proj.weight": (kv, h),
            "self_attn.v_proj.weight": (kv, h),
            "self_attn.o_proj.weight": (h, q),
            "mlp.gate_proj.weight": (ff, h),
            "mlp.up_proj.weight": (ff, h),
            "mlp.down_proj.weight": (h, ff),
            "self_attn.q_proj.bias": (q,),
            "self_attn.k_proj.bias": (kv,),
            "self_attn.v_proj.bias": (kv,),
            "self_attn.o_proj.bias": (h,),
            "mlp.gate_proj.bias": (ff,),
            "mlp.up_proj.bias": (ff,),
            "mlp.down_proj.bias": (h,),
        }
        known = set(GLOBAL_TENSORS) | {LM_HEAD}
        for i in range(c.num_hidden_layers):
            for pattern in LAYER_TENSORS:
                name = pattern.format(i=i)
                need(name, shapes[name.split(".", 3)[3]])
                known.add(name)
            for pattern in OPTIONAL_LAYER_TENSORS:
                name = pattern.format(i=i)
                if name in infos:
                    need(name, shapes[name.split(".", 3)[3]])
                    known.add(name)
        extra = [n for n in infos if n not in known and not n.endswith(IGNORED_SUFFIXES)]
        if extra:
            log.warning(
                "%d tensor(s) not part of %s are ignored, e.g. %s",
                len(extra),
                c.architecture,
                extra[0],
            )
        self.extra_tensors = extra

    def weight_names(self) -> list[str]:
        """Model tensors (no ignored extras) in file and offset order: sequential disk reads."""
        skip = set(self.extra_tensors)
        return [
            i.name
            for i in sorted(self.tensor_infos.values(), key=lambda t: (str(t.file), t.offset))
            if i.name not in skip and not i.name.endswith(IGNORED_SUFFIXES)
        ]

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensor_infos[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path}") from None

    def read(self, name: str, dtype: str | None = None) -> np.ndarray[Any, Any]:
        """One tensor: native dtype (BF16 as uint16 bits) or ``"float32"``/``"float16"``."""
        return st.read_tensor(self._info(name), dtype)

    def read_rows(self, name: str, rows: Any, dtype: str = "float32") -> np.ndarray[Any, Any]:
        """Selected rows of a 2-D tensor (embedding lookup) without reading the rest."""
        return st.read_rows(self._info(name), np.asarray(rows), dtype)

    def read_row_block(
        self, name: str, start: int, stop: int, dtype: str = "float32"
    ) -> np.ndarray[Any, Any]:
        """Rows ``start:stop`` of a tensor in one read (chunked work on big matrices)."""
        return st.read_row_block(self._info(name), start, stop, dtype)

    @property
    def largest_tensor_nbytes(self) -> int:
        return max(i.nbytes for i in self.tensor_infos.values())

    @property
    def param_count(self) -> int:
        """Number of weights in the model tensors (what llama.cpp's size label counts)."""
        return sum(self.tensor_infos[n].numel for n in self.weight_names())

    @property
    def dtype(self) -> str:
        """Dominant storage dtype of the weights (by bytes): BF16, F16 or F32."""
        by: dict[str, int] = {}
        for n in self.weight_names():
            i = self.tensor_infos[n]
            by[i.dtype] = by.get(i.dtype, 0) + i.nbytes
        return max(by, key=lambda k: by[k])

    # -- tokenizer and metadata -------------------------------------------------------------

    @cached_property
    def vocab(self) -> Vocab:
        return load_vocab(self.path, self.config.vocab_size)

    @cached_property
    def card(self) -> dict[str, Any]:
        """The model card's YAML front matter (README.md), read as convert_hf_to_gguf.py does
        (gguf-py ``Metadata.load_model_card``); ``{}`` when there is none or it is not YAML."""
        from gguf.metadata import Metadata

        try:
            card = Metadata.load_model_card(self.path)
        except Exception as exc:  # yaml.YAMLError and friends: a card is optional
            log.debug("model card of %s not read: %s", self.path, exc)
            return {}
        return card if isinstance(card, dict) else {}

    def card_list(self, *keys: str) -> list[str]:
        """Values of list-or-scalar card keys (``language: pt`` or ``[pt, en]``), in key order."""
        out: list[str] = []
        for key in keys:
            value = self.card.get(key)
            if value is not None:
                out += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        return out

    @property
    def name(self) -> str:
        """Model name: model card ``model_name``, else the repo name, else the directory name."""
        if self.card.get("model_name"):
            return str(self.card["model_name"])
        if self.repo_id:
            return self.repo_id.partition("@")[0].split("/")[-1]
        return self.path.name

    @property
    def license(self) -> str | None:
        value = self.card.get("license")
        return None if value is None else str(value)

    @property
    def size_label(self) -> str:
        """llama.cpp's size label for the parameter count, e.g. ``"9.2B"``, ``"39M"``."""
        from gguf.utility import size_label

        return size_label(self.param_count, 0, 0, 0)

    def fingerprint(self) -> str:
        """sha256 over config.json, the tokenizer files and every safetensors header and size.

        Cheap (no weight bytes are hashed) yet changes whenever a file is replaced by another
        revision: headers hold every tensor's name, dtype, shape and offsets.
        """
        h = hashlib.sha256()

        def add(label: str, data: bytes) -> None:
            h.update(f"{label}\0{len(data)}\0".encode())
            h.update(data)

        add("config.json", (self.path / "config.json").read_bytes())
        for fname in TOKENIZER_FILES:
            p = self.path / fname
            if p.is_file():
                add(fname, p.read_bytes())
        for header in sorted(self.headers, key=lambda x: x.path.name):
            add(f"{header.path.name}:{header.file_size}", header.header_bytes)
        return h.hexdigest()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Checkpoint({str(self.path)!r}, {c.architecture}, {c.num_hidden_layers} layers, "
            f"hidden {c.hidden_size}, vocab {c.vocab_size}, {self.dtype})"
        )


def open_checkpoint(source: str | Path | None = None, *, tokenizer: bool = True) -> Checkpoint:
    """Open and validate a checkpoint.

    ``source``: a checkpoint directory; a repo id (``org/name[@rev]``) found in the local
    Hugging Face cache (offline, honours ``HF_HOME`` / ``HF_HUB_CACHE``); or ``None`` for the
    demo model bundled in ``amalia_edge/data/demo``. ``tokenizer=False`` skips loading the
    tokenizer (it then loads on first use of ``.vocab``). Raises :class:`CheckpointError`
    (one line, with the fix) for anything unusable.
    """
    repo_id: str | None = None
    if source is None:
        path = DEMO_DIR
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"the bundled demo model is missing from {path}",
                fix="reinstall amalia-edge, or pass a checkpoint directory or repo id",
            )
    else:
        text = str(source)
        path = Path(text).expanduser()
        if not path.exists() and looks_like_repo_id(text):
            repo_id = text
            path = resolve_or_download(text)
        elif not path.exists():
            raise CheckpointError(
                f"{text} does not exist",
                fix="pass a checkpoint directory, or a repo id (org/name) in the local "
                "Hugging Face cache",
            )
        elif path.is_file():
            if path.suffix in PICKLE_SUFFIXES:
                raise _pickle_error([path])
            raise CheckpointError(
                f"{text} is a file", fix="pass the checkpoint directory that holds config.json"
            )
    return Checkpoint(path, repo_id=repo_id, tokenizer=tokenizer)


__all__ = ["DEMO_DIR", "Checkpoint", "open_checkpoint"]
