"""Tokenizer data of a checkpoint, in the form llama.cpp's GGUF files carry it.

Two tokenizer kinds, producing what llama.cpp's ``convert_hf_to_gguf.py`` writes for the same
checkpoint:

* SentencePiece ``tokenizer.model`` (EuroLLM, AMÁLIA, Llama 2, Mistral) -> GGUF model
  ``"llama"``, pre ``"default"``: one entry per id up to ``config.vocab_size`` with piece
  bytes, score and type (normal / unknown / control / unused / byte), then the added tokens of
  ``added_tokens.json`` (user-defined) and ``tokenizer_config.json`` ``added_tokens_decoder``
  (control when ``special`` or when they look special, else user-defined with ``▁`` written as
  a space), score -1000; ids the tokenizer lacks become ``[PAD<i>]`` (unused, score -10000).
  Mirrors ``TextModel._create_vocab_sentencepiece``.
* BPE ``tokenizer.json`` (Llama 3, Qwen style) -> GGUF model ``"gpt2"`` with merges and a
  pre-tokenizer name llama.cpp knows, recognised from the pre-tokenizer's split regex (see
  :data:`BPE_PRE_TOKENIZERS`). Mirrors ``TextModel.get_vocab_base`` without transformers.
* SentencePiece-style BPE ``tokenizer.json`` alone (byte fallback, ``▁`` for spaces, no
  ``tokenizer.model``; what recent transformers versions save for Llama tokenizers) -> GGUF
  model ``"llama"`` like the SentencePiece file would give: the same pieces and types, and as
  scores the negated rank of the merge that makes each piece, so llama.cpp's SentencePiece
  merger (highest score first) merges in the BPE order. Upstream's ``_set_vocab_llama_hf``
  writes -1000 for every score instead; HF tokenization parity is the proof here.

``tokenizer.ggml.add_space_prefix`` is written as ``tokenizer_config.json``'s
``add_prefix_space`` when that is set (as ``LlamaModel.set_vocab``); for a ``tokenizer.json``-only
Llama tokenizer that does not prepend ``▁`` it is written ``false`` (llama.cpp's default is true).

Special ids, ``add_*_token`` flags, merges and the chat template come from
:class:`gguf.SpecialVocab` — the same code the llama.cpp converter calls — so they match it by
construction. The chat stop token comes from ``generation_config.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.errors import CheckpointError
from amalia_edge.safeio import load_json_file

log = logging.getLogger(__name__)

CHATML_END = "<|im_end|>"

# gguf.TokenType values (gguf-py constants.py); repeated here so reading needs no gguf import.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Files that define the tokenizer; the checkpoint fingerprint hashes those present.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)

# Split regex of a tokenizer.json pre-tokenizer -> llama.cpp tokenizer.ggml.pre name.
# Source: llama.cpp src/llama-vocab.cpp (LLAMA_VOCAB_PRE_TYPE_* regexes) and the
# tokenizer.json files of the models named per row.
BPE_PRE_TOKENIZERS: dict[str, str] = {
    # meta-llama/Meta-Llama-3-8B tokenizer.json; llama.cpp "llama-bpe"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    # Qwen/Qwen2-7B tokenizer.json (single digits); llama.cpp "qwen2"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


@dataclass
class Vocab:
    """GGUF-ready tokenizer data (``tokenizer.ggml.*``).

    ``tokens``/``token_types`` (and ``scores`` for ``model == "llama"``) have exactly
    ``config.vocab_size`` entries. ``special_ids`` / ``add_special`` are what
    ``gguf.SpecialVocab`` found (keys bos, eos, unk, sep, pad, cls, mask, eot, eom);
    ``bos_id`` etc. are shortcuts into them. ``chat_eos_id`` is the id chat generation should
    stop at: ``generation_config.json``'s eos (the first one differing from ``eos_id`` when it
    lists several), else ``eos_id``.
    """

    model: str
    pre: str
    tokens: list[bytes]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)
    add_special: dict[str, bool] = field(default_factory=dict)
    chat_template: str | list[dict[str, str]] | None = None
    generation_eos_ids: list[int] = field(default_factory=list)
    chat_eos_id: int | None = None
    add_space_prefix: bool | None = None  # None: leave llama.cpp's default (true for "llama")

    @property
    def bos_id(self) -> int | None:
        return self.special_ids.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_ids.get("eos")

    @property
    def unk_id(self) -> int | None:
        return self.special_ids.get("unk")

    @property
    def pad_id(self) -> int | None:
        return self.special_ids.get("pad")

    @property
    def add_bos(self) -> bool | None:
        return self.add_special.get("bos")

    @property
    def add_eos(self) -> bool | None:
        return self.add_special.get("eos")

    def token_id(self, text: str) -> int | None:
        """Id of the token whose text is exactly ``text`` (first match), or None."""
        want = text.encode("utf-8")
        for i, t in enumerate(self.tokens):
            if t == want:
                return i
        return None


def looks_special(text: str) -> bool:
    """Added tokens not marked special that llama.cpp still makes control tokens.

    Source: convert_hf_to_gguf.py ``ModelBase.does_token_look_special``.
    """
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))  # deepseek-coder
        or (text.startswith("<unused") and text.endswith(">"))  # gemma
    )


def _load_json(path: Path) -> Any:
    # Every tokenizer side file is a JSON object; a list, deep nesting, bad UTF-8 or a FIFO
    # in its place is a one-line CheckpointError (amalia_edge.safeio).
    return load_json_file(path, CheckpointError, fix="restore the original file")


def _valid_decoder(decoder: Any, path: Path) -> dict[str, dict[str, Any]]:
    """``added_tokens_decoder`` checked: ``{"<non-negative id>": {"content": str, ...}}``."""
    if decoder is None:
        return {}
    fix = "restore the original tokenizer_config.json"
    if not isinstance(decoder, dict):
        raise CheckpointError(f"{path}: added_tokens_decoder is not an object", fix=fix)
    for key, data in decoder.items():
        if not (key.isascii() and key.isdigit()):
            raise CheckpointError(
                f"{path}: added_tokens_decoder key {key[:40]!r} is not a token id", fix=fix
            )
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise CheckpointError(f"{path}: added token {key} has no text ('content')", fix=fix)
    return decoder


def _sentencepiece_vocab(
    directory: Path, vocab_size: int
) -> tuple[list[bytes], list[float], list[int]]:
    import sentencepiece  # lazy: heavy native module

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(directory / "tokenizer.model"))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{directory / 'tokenizer.model'}: not a SentencePiece model ({exc})",
            fix="restore the original tokenizer.model",
        ) from None
    n_sp = sp.vocab_size()
    if n_sp > vocab_size:
        raise CheckpointError(
            f"tokenizer.model has {n_sp} pieces but config.json vocab_size is {vocab_size}",
            fix="the tokenizer does not belong to this model; use the matching tokenizer.model",
        )
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(n_sp):
        if sp.IsUnknown(i):
            tt = UNKNOWN
        elif sp.IsControl(i):
            tt = CONTROL
        elif sp.IsUnused(i):
            tt = UNUSED
        elif sp.IsByte(i):
            tt = BYTE
        else:
            tt = NORMAL
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = float(sp.GetScore(i))
        types[i] = tt

    added_file = directory / "added_tokens.json"
    if added_file.is_file():
        added = _load_json(added_file)
        for text, tid in dict(added).items():
            if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < vocab_size:
                log.warning("ignoring added token %r: id %r is out of range", text, tid)
                continue
            tokens[tid] = text.encode("utf-8")
            scores[tid] = -1000.0
            types[tid] = USER_DEFINED

    tc_file = directory / "tokenizer_config.json"
    if tc_file.is_file():
        decoder = _valid_decoder(_load_json(tc_file).get("added_tokens_decoder"), tc_file)
        for key, data in decoder.items():
            tid = int(key)
            text = str(data["content"])
            if tid >= vocab_size:
                log.warning("ignoring added token %r: id %d is out of range", text, tid)
                continue
            if data.get("special") or looks_special(text):
                types[tid] = CONTROL
            else:
                # llama.cpp expects user-defined tokens pre-normalised: SentencePiece's "▁"
                # stands for a space.
                text = text.replace("\u2581", " ")
                types[tid] = USER_DEFINED
            scores[tid] = -1000.0
            tokens[tid] = text.encode("utf-8")
    return tokens, scores, types


def _known_pre() -> list[str]:
    return sorted({*BPE_PRE_TOKENIZERS.values(), "gpt-2"})


def _bpe_pre_name(tok: dict[str, Any], path: Path) -> str:
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for part in parts:
        if part.get("type") == "Split":
            pattern = (part.get("pattern") or {}).get("Regex")
            if pattern in BPE_PRE_TOKENIZERS:
                return BPE_PRE_TOKENIZERS[pattern]
            raise CheckpointError(
                f"{path}: BPE pre-tokenizer regex {pattern!r} is not one llama.cpp is known to "
                "implement",
                fix=f"supported BPE pre-tokenizers: {', '.join(_known_pre())}",
            )
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt-2"  # GPT-2's own regex, applied inside ByteLevel
    raise CheckpointError(
        f"{path}: cannot tell which pre-tokenizer this BPE tokenizer uses",
        fix="only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen 2 style) are supported",
    )


def _bpe_vocab(directory: Path, vocab_size: int) -> tuple[list[bytes], list[int], str]:
    path = directory / "tokenizer.json"
    tok = _load_json(path)
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise CheckpointError(
            f"{path}: tokenizer model is {model.get('type')!r}, not BPE",
            fix="provide tokenizer.model (SentencePiece) or a BPE tokenizer.json",
        )
    by_id: dict[int, str] = {int(i): t for t, i in (model.get("vocab") or {}).items()}
    added = {int(a["id"]): a for a in tok.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = str(a["content"])
    if by_id and max(by_id) >= vocab_size:
        raise CheckpointError(
            f"tokenizer.json has token id {max(by_id)} but config.json vocab_size is {vocab_size}",
            fix="the tokenizer does not belong to this model; use the matching tokenizer.json",
        )
    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]".encode())
            types.append(UNUSED)
            continue
        text = by_id[i]
        if i in added:
            if added[i].get("special") or looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text.encode("utf-8"))
    return tokens, types, _bpe_pre_name(tok, path)


def is_llama_json(tok: dict[str, Any]) -> bool:
    """A SentencePiece-style BPE ``tokenizer.json`` (byte fallback, decoder sequence): the
    tokenizers gguf-py's ``LlamaHfVocab`` accepts (Llama 3's ``ignore_merges`` ones excluded)."""
    model = tok.get("model") or {}
    decoder = tok.get("decoder") or {}
    return (
        model.get("type") == "BPE"
        and bool(model.get("byte_fallback", False))
        and not model.get("ignore_merges", False)
        and isinstance(decoder, dict)
        and decoder.get("type") == "Sequence"
    )


def _json_prepends_space(tok: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer.json puts ``▁`` before the text: a ``Prepend``
    normalizer (transformers' legacy Llama conversion) or a ``Metaspace`` pre-tokenizer whose
    ``prepend_scheme`` is not ``never`` (its newer one)."""

    def parts(node: Any, key: str) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        if node.get("type") == "Sequence":
            return [p for p in node.get(key, []) if isinstance(p, dict)]
        return [node]

    for n in parts(tok.get("normalizer"), "normalizers"):
        if n.get("type") == "Prepend" and n.get("prepend") == "\u2581":
            return True
    for p in parts(tok.get("pre_tokenizer"), "pretokenizers"):
        if p.get("type") == "Metaspace":
            scheme = p.get(
                "prepend_scheme", "always" if p.get("add_prefix_space", True) else "never"
            )
            return scheme != "never"
    return False


def _llama_json_vocab(
    tok: dict[str, Any], path: Path, vocab_size: int
) -> tuple[list[bytes], list[float], list[int]]:
    """tokens, scores, types of a SentencePiece-style BPE tokenizer.json (see module doc)."""
    model = tok.get("model") or {}
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    if vocab and max(vocab.values()) >= vocab_size:
        raise CheckpointError(
            f"{path} has token id {max(vocab.values())} but config.json vocab_size is {vocab_size}",
            fix="the tokenizer does not belong to this model; use the matching tokenizer.json",
        )
    rank: dict[str, int] = {}
    for r, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    unk = model.get("unk_token")
    for text, tid in vocab.items():
        tokens[tid] = text.encode("utf-8")
        scores[tid] = -float(rank[text]) if text in rank else 0.0
        if text == unk:
            types[tid] = UNKNOWN
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types[tid] = BYTE
        else:
            types[tid] = NORMAL
    for added in tok.get("added_tokens") or []:
        tid, text = int(added["id"]), str(added["content"])
        if tid >= vocab_size:
            log.warning("ignoring added token %r: id %d is out of range", text, tid)
            continue
        if added.get("special") or looks_special(text):
            types[tid] = UNKNOWN if text == unk else CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[tid] = USER_DEFINED
        if tid not in vocab.values():
            scores[tid] = -1000.0
        tokens[tid] = text.encode("utf-8")
    return tokens, scores, types


def _generation_eos(directory: Path) -> list[int]:
    path = directory / "generation_config.json"
    if not path.is_file():
        return []
    try:
        gen = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # llama.cpp's gguf-py (Metadata.load_generation_config) ignores a broken file too
        log.warning("%s is unreadable; ignoring it", path)
        return []
    eos = gen.get("eos_token_id") if isinstance(gen, dict) else None
    if isinstance(eos, int):
        return [eos]
    if isinstance(eos, list):
        return [e for e in eos if isinstance(e, int)]
    return []


def load_vocab(directory: Path, vocab_size: int) -> Vocab:
    """Build the GGUF tokenizer data of the checkpoint in ``directory``.

    Prefers ``tokenizer.model`` (SentencePiece) like llama.cpp's Llama converter; falls back
    to a BPE ``tokenizer.json``.
    """
    import gguf  # lazy: SpecialVocab is the converter's own reader of special tokens

    merges: list[str] = []
    scores: list[float] | None
    for side in ("tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"):
        if (directory / side).exists():  # gguf.SpecialVocab below assumes objects
            _load_json(directory / side)
    add_space_prefix: bool | None = None
    json_path = directory / "tokenizer.json"
    if (directory / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece_vocab(directory, vocab_size)
        model, pre = "llama", "default"
        load_merges = False
    elif json_path.is_file():
        tok_json = _load_json(json_path)
        try:
            if is_llama_json(tok_json):
                tokens, scores, types = _llama_json_vocab(tok_json, json_path, vocab_size)
                model, pre = "llama", "default"
                load_merges = False
                if not _json_prepends_space(tok_json):
                    add_space_prefix = False
            else:
                tokens, types, pre = _bpe_vocab(directory, vocab_size)
                scores = None
                model = "gpt2"
                load_merges = True
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{json_path} is malformed ({type(exc).__name__})",
                fix="restore the original tokenizer.json",
            ) from None
    else:
        raise CheckpointError(
            f"{directory} has neither tokenizer.model nor tokenizer.json",
            fix="copy the tokenizer files of the model into the checkpoint directory",
        )
    try:
        special = gguf.SpecialVocab(directory, load_merges=load_merges, n_vocab=len(tokens))
    except (ValueError, OSError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(
            f"{directory}: tokenizer files are inconsistent ({exc})",
            fix="restore the original tokenizer_config.json / tokenizer.json",
        ) from None
    merges = list(special.merges)
    if load_merges and not merges:
        raise CheckpointError(
            f"{directory / 'tokenizer.json'} has no merges", fix="restore the original file"
        )
    tc_file = directory / "tokenizer_config.json"
    if tc_file.is_file():
        # LlamaModel.set_vocab: add_prefix_space, when set, decides (any tokenizer kind).
        prefix = dict(_load_json(tc_file)).get("add_prefix_space")
        if prefix is not None:
            add_space_prefix = bool(prefix)
    template = special.chat_template
    gen_eos = _generation_eos(directory)
    eos = special.special_token_ids.get("eos")
    chat_eos = next((e for e in gen_eos if e != eos and 0 <= e < len(tokens)), None)
    im_end = CHATML_END.encode("utf-8")
    if isinstance(template, str) and CHATML_END in template and im_end in tokens:
        # A ChatML turn ends at <|im_end|>, whatever generation_config.json lists: EuroLLM-1.7B-
        # Instruct's says </s> (2) while its config.json and tokenizer end turns with id 4.
        chat_eos = tokens.index(im_end)
    if chat_eos is None:
        chat_eos = eos
    return Vocab(
        model=model,
        pre=pre,
        tokens=tokens,
        token_types=types,
        scores=scores,
        merges=merges,
        special_ids=dict(special.special_token_ids),
        add_special=dict(special.add_special_token),
        chat_template=template,  # type: ignore[arg-type]
        generation_eos_ids=gen_eos,
        chat_eos_id=chat_eos,
        add_space_prefix=add_space_prefix,
    )
