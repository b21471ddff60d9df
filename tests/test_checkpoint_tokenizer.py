"""Tokenizer data (GGUF tokenizer.ggml.*) built from SentencePiece and BPE checkpoints."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.checkpoint.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    UNUSED,
    USER_DEFINED,
    looks_special,
)
from tests import factory

PT_TEXT = "«Olá!», disse a avó — são 1234 maçãs e 56,7 % de açúcar. Pôr-do-sol às 19h30."


def test_spm_vocab_mirrors_sentencepiece(tiny_checkpoint: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))
    v = open_checkpoint(tiny_checkpoint).vocab
    assert (v.model, v.pre) == ("llama", "default")
    assert len(v.tokens) == len(v.token_types) == len(v.scores or []) == sp.vocab_size()
    for i in range(sp.vocab_size()):
        assert v.tokens[i] == sp.IdToPiece(i).encode()
    for i in range(6, sp.vocab_size()):
        assert v.scores is not None and v.scores[i] == pytest.approx(sp.GetScore(i))
        want = BYTE if sp.IsByte(i) else NORMAL
        assert v.token_types[i] == want, (i, sp.IdToPiece(i))
    assert v.token_types[6] == BYTE and v.tokens[6] == b"<0x00>"
    # <unk> <s> </s> <pad> <|im_start|> <|im_end|> are special in tokenizer_config.json, so
    # llama.cpp's converter makes them all control tokens with score -1000.
    assert v.token_types[:6] == [CONTROL] * 6
    assert v.scores is not None and v.scores[:6] == [-1000.0] * 6


def test_spm_special_tokens_and_template(tiny_checkpoint: Path) -> None:
    v = open_checkpoint(tiny_checkpoint).vocab
    assert (v.bos_id, v.eos_id, v.pad_id) == (1, 2, 3)
    assert v.add_bos is True and v.add_eos is False
    assert v.token_id("<|im_end|>") == 5 and v.chat_eos_id == 5
    assert v.generation_eos_ids == [2, 5]
    assert v.chat_template == factory.CHATML_TEMPLATE
    assert v.merges == []


def test_chat_template_from_jinja_file(make_checkpoint: Callable[..., Path]) -> None:
    v = open_checkpoint(make_checkpoint(chat_template_in="jinja")).vocab
    assert v.chat_template == factory.CHATML_TEMPLATE
    assert open_checkpoint(make_checkpoint(chat_template_in="none")).vocab.chat_template is None


def test_vocab_padded_to_config_size(make_checkpoint: Callable[..., Path]) -> None:
    v = open_checkpoint(make_checkpoint(extra_vocab=64)).vocab
    assert len(v.tokens) == 1536 + 64
    assert v.tokens[1536] == b"[PAD1536]" and v.token_types[1536] == UNUSED
    assert v.scores is not None and v.scores[-1] == -10000.0


def test_added_tokens_json_and_user_defined(tmp_path: Path) -> None:
    path = factory.build_checkpoint(tmp_path / "c", extra_vocab=4)
    (path / "added_tokens.json").write_text(json.dumps({"<tool>": 1536, "</tool>": 1537}))
    tc = json.loads((path / "tokenizer_config.json").read_text())
    tc["added_tokens_decoder"]["1538"] = {"content": "▁olá▁mundo", "special": False}
    tc["added_tokens_decoder"]["1539"] = {"content": "<|eot|>", "special": False}
    (path / "tokenizer_config.json").write_text(json.dumps(tc))
    v = open_checkpoint(path).vocab
    assert v.tokens[1536:1538] == [b"<tool>", b"</tool>"]
    assert v.token_types[1536:1538] == [USER_DEFINED, USER_DEFINED]
    # user-defined pieces are pre-normalised (▁ -> space); <|...|> looks special -> control
    assert v.tokens[1538] == " olá mundo".encode() and v.token_types[1538] == USER_DEFINED
    assert v.token_types[1539] == CONTROL
    assert v.scores is not None and v.scores[1536:1540] == [-1000.0] * 4


def test_looks_special() -> None:
    assert looks_special("<|im_start|>") and looks_special("<pad>") and looks_special("<unused3>")
    assert not looks_special("<s>") and not looks_special("olá")


def test_bpe_vocab(make_checkpoint: Callable[..., Path]) -> None:
    from tokenizers import Tokenizer

    path = make_checkpoint(tokenizer="bpe")
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    v = open_checkpoint(path).vocab
    assert (v.model, v.pre) == ("gpt2", "llama-bpe")
    assert v.scores is None
    assert len(v.tokens) == tok.get_vocab_size() == 1536
    for text, i in tok.get_vocab().items():
        assert v.tokens[i] == text.encode()
    assert v.token_types[:4] == [CONTROL] * 4 and set(v.token_types[4:]) == {NORMAL}
    assert len(v.merges) > 1000 and all(len(m.split(" ")) == 2 for m in v.merges)
    assert (v.bos_id, v.eos_id) == (0, 1) and v.add_bos is True
    assert v.chat_eos_id == v.token_id("<|im_end|>") == 3
    # tokens + merges are a complete BPE: applying the merges by rank to each pre-tokenized
    # word gives the tokenizers package's own ids
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(v.merges)}
    ids_of = {t: i for i, t in enumerate(v.tokens)}
    assert tok.pre_tokenizer is not None
    for text in [PT_TEXT, *factory.corpus_lines(3000)]:
        got: list[int] = []
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(text):
            parts = list(word)
            while len(parts) > 1:
                pairs = [
                    (ranks.get((a, b), 1 << 30), k)
                    for k, (a, b) in enumerate(itertools.pairwise(parts))
                ]
                best, k = min(pairs)
                if best == 1 << 30:
                    break
                parts[k : k + 2] = [parts[k] + parts[k + 1]]
            got += [ids_of[p.encode()] for p in parts]
        assert got == tok.encode(text, add_special_tokens=False).ids, text


def _vocab_only_gguf(ckpt_dir: Path, out: Path) -> Path:
    """A GGUF holding only our tokenizer arrays (plus the shape keys llama.cpp insists on),
    written with gguf-py directly, so these tests depend on nothing but the Vocab."""
    import gguf
    import numpy as np

    ckpt = open_checkpoint(ckpt_dir)
    v, c = ckpt.vocab, ckpt.config
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_tokenizer_model(v.model)
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    if v.scores is not None:
        w.add_token_scores(v.scores)
    w.add_token_types(v.token_types)
    if v.merges:
        w.add_token_merges(v.merges)
    for kind, tid in v.special_ids.items():
        getattr(w, f"add_{kind}_token_id")(tid)
    for kind, flag in v.add_special.items():
        getattr(w, f"add_add_{kind}_token")(flag)
    h, ff, hd = c.hidden_size, c.intermediate_size, c.head_dim
    shapes = {
        "token_embd.weight": (c.vocab_size, h),
        "output_norm.weight": (h,),
        "output.weight": (c.vocab_size, h),
        "blk.0.attn_norm.weight": (h,),
        "blk.0.attn_q.weight": (c.num_attention_heads * hd, h),
        "blk.0.attn_k.weight": (c.num_key_value_heads * hd, h),
        "blk.0.attn_v.weight": (c.num_key_value_heads * hd, h),
        "blk.0.attn_output.weight": (h, c.num_attention_heads * hd),
        "blk.0.ffn_norm.weight": (h,),
        "blk.0.ffn_gate.weight": (ff, h),
        "blk.0.ffn_up.weight": (ff, h),
        "blk.0.ffn_down.weight": (h, ff),
    }
    for name, shape in shapes.items():
        w.add_tensor(name, np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _texts() -> list[str]:
    # held-out text is fine here: nothing is trained on it, it only exercises the tokenizer
    lines = factory.corpus_lines(20_000, factory.CORPUS_DIR / "pt_pt_eval.txt")[:40]
    return [PT_TEXT, "  espaços  duplos\te tab\n\nnova linha", "Ñ ü € 😀 〜 ½", *lines]


def test_spm_vocab_reproduces_sentencepiece_in_llama_cpp(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """llama.cpp, given only our vocab arrays, tokenizes pt-PT text like sentencepiece."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import sentencepiece as spm

    gguf_path = _vocab_only_gguf(tiny_checkpoint, tmp_path / "vocab.gguf")
    sp = spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    for text in _texts():
        want = [1, *sp.encode(text)]
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == want, text
    # ChatML markers are control tokens: parsed only when special tokens are allowed
    assert llm.tokenize(b"<|im_start|>user", add_bos=False, special=True)[0] == 4


def test_bpe_vocab_reproduces_tokenizers_in_llama_cpp(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """llama.cpp with our gpt2 vocab, merges and pre-tokenizer name tokenizes like HF."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from tokenizers import Tokenizer

    path = make_checkpoint(tokenizer="bpe")
    gguf_path = _vocab_only_gguf(path, tmp_path / "vocab.gguf")
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    for text in _texts():
        want = tok.encode(text).ids  # the post-processor adds <|begin_of_text|>
        assert want[0] == 0
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == want, text
