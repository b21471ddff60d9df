"""Build tiny Hugging Face checkpoints for tests and benchmarks.

Every checkpoint is a real HF directory: ``config.json``, safetensors weights (single file or
sharded with ``model.safetensors.index.json``; F32, F16 or BF16), a tokenizer trained here on a
slice of the pt-PT corpus (``../shared/corpus/pt_pt_train.txt``), ``tokenizer_config.json``
with a ChatML chat template and ``generation_config.json``. Weights are random (seeded, so a
spec always gives the same bytes) with a spread large enough that top-1 tokens are not ties.

Two tokenizer kinds:

* ``"spm"``: SentencePiece BPE model (like EuroLLM/AMÁLIA) with ``<unk> <s> </s> <pad>``,
  ChatML ``<|im_start|> <|im_end|>`` as user-defined symbols (marked special in
  ``tokenizer_config.json``, so llama.cpp makes them control tokens), byte fallback, identity
  normalisation;
* ``"bpe"``: byte-level BPE ``tokenizer.json`` (Llama 3 style pre-tokenizer) trained with the
  ``tokenizers`` package.

Trained tokenizers are cached per process (they depend only on their parameters).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO.parent / "shared" / "corpus"
TRAIN_TEXT = CORPUS_DIR / "pt_pt_train.txt"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Llama 3's pre-tokenizer split (meta-llama/Meta-Llama-3-8B tokenizer.json).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama-3.1's rope_scaling shape, with a short original context so tiny tests reach the
# low-, mid- and high-frequency bands. Several test files build checkpoints with it.
LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

SPM_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")
# Added after a SentencePiece vocabulary by Spec.added_tokens: (text, special). The first looks
# special to llama.cpp even unmarked; the last is a plain (user-defined) piece.
ADDED_TOKENS = (("<|tool_call|>", True), ("<|nota|>", False), ("amalia▁edge", False))
# A second named template for chat_template_in="list" (transformers' list-of-dicts form).
TOOL_TEMPLATE = (
    "{% for message in messages %}{{ '<|tool_call|>' + message['content'] }}{% endfor %}"
)
BPE_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>")


# A config_overrides value that removes the key from config.json (None writes null).
ABSENT = "<absent>"


@dataclass(frozen=True)
class Spec:
    """What to build. ``vocab_size=None``: the tokenizer's size plus ``extra_vocab`` padding."""

    dtype: str = "F32"  # F32 | F16 | BF16
    shards: int = 1
    tokenizer: str = "spm"  # spm | bpe
    tokenizer_vocab: int = 1536
    extra_vocab: int = 0
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    architecture: str = "LlamaForCausalLM"
    attention_bias: bool = False
    seed: int = 0
    config_overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    chat_template_in: str = "tokenizer_config"  # tokenizer_config | jinja | list | none
    # tokenizer_config.json keys to set (None: remove the key), e.g. {"add_prefix_space": False}
    tokenizer_config_overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    # generation_config.json eos_token_id: None = the default list [</s>, <|im_end|>]
    generation_eos: Any = None
    # generation_config.json written as given instead (a real model's file, verbatim)
    generation_config: dict[str, Any] | None = field(default=None, hash=False)
    # further JSON files written verbatim, name -> content (e.g. special_tokens_map.json)
    extra_json: dict[str, Any] = field(default_factory=dict, hash=False)
    # added tokens (SentencePiece kinds) after the tokenizer's own ids: "none" | "json"
    # (added_tokens.json) | "decoder" (tokenizer_config.json added_tokens_decoder) | "both"
    added_tokens: str = "none"
    # spm only: an existing SentencePiece model file (same special ids as SPM_SPECIALS) used
    # instead of training one on the corpus (benchmarks/gpu_check.py: the demo's tokenizer).
    tokenizer_model: str | None = None


# About 0.63B parameters in BF16 with a 128k vocabulary (EuroLLM's size): the checkpoint the
# conversion benchmark of issue 2 asks for. 24 layers x 15.2M + 2 x 128000 x 1024.
BENCH_0_6B = Spec(
    dtype="BF16",
    shards=2,
    extra_vocab=128000 - 1536,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=4,
)


def corpus_lines(max_chars: int = 1_000_000, path: Path = TRAIN_TEXT) -> list[str]:
    """Non-empty paragraphs from the start of the training text, about ``max_chars`` long."""
    out: list[str] = []
    n = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            out.append(line)
            n += len(line)
            if n >= max_chars:
                break
    return out


@cache
def spm_model_bytes(vocab_size: int = 1536, pad: bool = True) -> bytes:
    """A SentencePiece BPE model trained on the pt-PT corpus (about 0.5 s, cached).

    ``pad=False``: no ``<pad>`` piece, so ``<|im_start|> <|im_end|>`` are ids 3 and 4, EuroLLM's
    layout (its GGUF token list starts ``<unk> <s> </s> <|im_start|> <|im_end|>``)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3 if pad else -1,
        pad_piece="<pad>",
        user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        byte_fallback=True,
        # Like Llama/EuroLLM: no NFKC, keep whitespace runs, digits split one by one.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


@cache
def bpe_tokenizer_json(vocab_size: int = 1536) -> str:
    """A byte-level BPE tokenizer.json (Llama 3 pre-tokenizer) trained on the corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))],
    )
    return str(tok.to_str())


@cache
def spm_as_tokenizer_json(vocab_size: int = 1536, pad: bool = True) -> str:
    """The SentencePiece model of :func:`spm_model_bytes` as the ``tokenizer.json`` that
    transformers' own converter writes for it (what ``save_pretrained`` of a Llama tokenizer
    ships): SentencePiece-style BPE with byte fallback. Needs transformers (parity tests)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "tokenizer.model").write_bytes(spm_model_bytes(vocab_size, pad))
        _write_spm_config(d, Spec(tokenizer_vocab=vocab_size))
        if not pad:  # the EuroLLM layout: no <pad> piece, ChatML markers at 3 and 4
            cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
            names = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
            cfg["added_tokens_decoder"] = {
                str(i): {"content": t, "normalized": False, "special": True}
                for i, t in enumerate(names)
            }
            cfg["pad_token"] = "</s>"
            (d / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
        tok = AutoTokenizer.from_pretrained(str(d))
        return str(tok.backend_tokenizer.to_str())


def _write_spm_config(out: Path, spec: Spec) -> dict[str, Any]:
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPM_SPECIALS)
    }
    tc: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": spec.max_position_embeddings,
        "tokenizer_class": "LlamaTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2), encoding="utf-8")
    return tc


# -- safetensors writing ---------------------------------------------------------------------


def f32_to_bf16_bits(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Round float32 to BF16 (nearest, ties to even), returned as uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def encode_array(x: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """``x`` as a contiguous little-endian array of safetensors dtype ``dtype``."""
    if dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4")
    if dtype == "F16":
        return np.ascontiguousarray(x, dtype="<f2")
    if dtype == "BF16":
        return np.ascontiguousarray(f32_to_bf16_bits(x), dtype="<u2")
    raise ValueError(dtype)


def write_safetensors(
    path: Path,
    entries: list[tuple[str, str, tuple[int, ...]]],
    make: Callable[[str], np.ndarray[Any, Any]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file tensor by tensor (memory: one tensor at a time)."""
    itemsize = {"F32": 4, "F16": 2, "BF16": 2}
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in entries:
        n = math.prod(shape) * itemsize[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the safetensors library pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name, dtype, shape in entries:
            values = np.ascontiguousarray(make(name)).reshape(-1)
            assert values.size == math.prod(shape), name
            step = 1 << 24  # encode in 16M-element pieces: memory stays near one tensor
            for start in range(0, values.size, step):
                fh.write(encode_array(values[start : start + step], dtype).data)
            del values


def raw_safetensors(header: dict[str, Any], data: bytes, header_len: int | None = None) -> bytes:
    """Bytes of a (possibly invalid) safetensors file: for bad-input tests."""
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    return n.to_bytes(8, "little") + raw + data


# -- checkpoint building ---------------------------------------------------------------------


def _shapes(spec: Spec, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    h, ff = spec.hidden_size, spec.intermediate_size
    hd = spec.head_dim or h // spec.num_attention_heads
    q, kv = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (ff, h)),
            (p + "mlp.up_proj.weight", (ff, h)),
            (p + "mlp.down_proj.weight", (h, ff)),
        ]
        if spec.attention_bias:
            out += [
                (p + "self_attn.q_proj.bias", (q,)),
                (p + "self_attn.k_proj.bias", (kv,)),
                (p + "self_attn.v_proj.bias", (kv,)),
                (p + "self_attn.o_proj.bias", (h,)),
            ]
    out.append(("model.norm.weight", (h,)))
    if not spec.tie_word_embeddings:
        out.append(("lm_head.weight", (vocab, h)))
    return out


def _random_tensor(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    # Seed per tensor name so any subset (or any shard layout) gives the same values.
    rng = np.random.default_rng([seed, *name.encode()])
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(".bias"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name == "model.embed_tokens.weight":
        return rng.standard_normal(shape, dtype=np.float32)
    # Linear layers: std 1/sqrt(fan_in) keeps activations O(1); the head gets 3x so logits
    # spread over several units and top-1 is never a near tie.
    scale = (3.0 if name == "lm_head.weight" else 1.0) / math.sqrt(shape[-1])
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def _spm_bytes(spec: Spec, pad: bool = True) -> bytes:
    if spec.tokenizer_model:
        return Path(spec.tokenizer_model).read_bytes()
    return spm_model_bytes(spec.tokenizer_vocab, pad)


def spm_vocab_size(spec: Spec) -> int:
    import sentencepiece as spm

    pad = spec.tokenizer != "spm-eurollm"
    sp = spm.SentencePieceProcessor(model_proto=_spm_bytes(spec, pad))
    return int(sp.vocab_size())


def _write_tokenizer(spec: Spec, out: Path) -> tuple[int, dict[str, int]]:
    """Write tokenizer files; return (tokenizer size, special ids for config.json)."""
    tc: dict[str, Any]
    if spec.tokenizer == "spm-eurollm":
        # EuroLLM's id layout (see spm_model_bytes); the tests set the real config values.
        (out / "tokenizer.model").write_bytes(spm_model_bytes(spec.tokenizer_vocab, False))
        # EuroLLM ships tokenizer.json too; gguf-py's SpecialVocab finds pad_token's id there
        text = spm_as_tokenizer_json(spec.tokenizer_vocab, False)
        (out / "tokenizer.json").write_text(text, encoding="utf-8")
        n = spm_vocab_size(spec)
        names = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
        tc = {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": {
                str(i): {"content": t, "normalized": False, "special": True}
                for i, t in enumerate(names)
            },
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "tokenizer_class": "LlamaTokenizer",
        }
        ids = {"bos_token_id": 1, "eos_token_id": 2}
        gen_eos = 2
    elif spec.tokenizer in ("spm", "spm-json"):
        if spec.tokenizer == "spm":
            (out / "tokenizer.model").write_bytes(_spm_bytes(spec))
        else:  # tokenizer.json only, as recent transformers save a Llama tokenizer
            text = spm_as_tokenizer_json(spec.tokenizer_vocab)
            (out / "tokenizer.json").write_text(text, encoding="utf-8")
        n = spm_vocab_size(spec)
        tc = _write_spm_config(out, spec)
        ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
        gen_eos: Any = [2, 5]  # </s> and <|im_end|>
        if spec.added_tokens != "none":
            added = {t: n + i for i, (t, _) in enumerate(ADDED_TOKENS)}
            if spec.added_tokens in ("json", "both"):
                (out / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
            if spec.added_tokens in ("decoder", "both"):
                for (t, special), i in zip(ADDED_TOKENS, added.values(), strict=True):
                    tc["added_tokens_decoder"][str(i)] = {
                        "content": t,
                        "lstrip": False,
                        "normalized": not special,
                        "rstrip": False,
                        "single_word": False,
                        "special": special,
                    }
            n += len(ADDED_TOKENS)
    elif spec.tokenizer == "bpe":
        text = bpe_tokenizer_json(spec.tokenizer_vocab)
        (out / "tokenizer.json").write_text(text, encoding="utf-8")
        doc = json.loads(text)
        n = len(doc["model"]["vocab"])
        added = {a["content"]: a["id"] for a in doc["added_tokens"]}
        n = max(n, max(added.values()) + 1)
        tc = {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": {
                str(i): {"content": t, "special": True, "normalized": False}
                for t, i in added.items()
            },
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|end_of_text|>",
            "clean_up_tokenization_spaces": True,
            "model_max_length": spec.max_position_embeddings,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        ids = {
            "bos_token_id": added["<|begin_of_text|>"],
            "eos_token_id": added["<|end_of_text|>"],
        }
        gen_eos = [added["<|end_of_text|>"], added["<|im_end|>"]]
    else:
        raise ValueError(f"unknown tokenizer kind {spec.tokenizer!r}")
    if spec.chat_template_in == "tokenizer_config":
        tc["chat_template"] = CHATML_TEMPLATE
    elif spec.chat_template_in == "jinja":
        (out / "chat_template.jinja").write_text(CHATML_TEMPLATE, encoding="utf-8")
    elif spec.chat_template_in == "list":
        tc["chat_template"] = [
            {"name": "default", "template": CHATML_TEMPLATE},
            {"name": "tool_use", "template": TOOL_TEMPLATE},
        ]
    for key, value in spec.tokenizer_config_overrides.items():
        if value is None:
            tc.pop(key, None)
        else:
            tc[key] = value
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2), encoding="utf-8")
    if spec.generation_eos is not None:
        gen_eos = spec.generation_eos
    gen = {"bos_token_id": ids["bos_token_id"], "eos_token_id": gen_eos, "do_sample": False}
    if spec.generation_config is not None:
        gen = spec.generation_config
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")
    for name, content in spec.extra_json.items():
        (out / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return n, ids


def build_checkpoint(out: Path, spec: Spec | None = None, **kw: Any) -> Path:
    """Write a tiny checkpoint into directory ``out`` (created) and return it."""
    spec = replace(spec or Spec(), **kw)
    out.mkdir(parents=True, exist_ok=True)
    n_tok, ids = _write_tokenizer(spec, out)
    vocab = n_tok + spec.extra_vocab
    hd = spec.head_dim or spec.hidden_size // spec.num_attention_heads
    config: dict[str, Any] = {
        "architectures": [spec.architecture],
        "model_type": "mistral" if spec.architecture == "MistralForCausalLM" else "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "rope_scaling": spec.rope_scaling,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "attention_bias": spec.attention_bias,
        "mlp_bias": False,
        "vocab_size": vocab,
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[spec.dtype],
        **ids,
    }
    config.update(spec.config_overrides)
    for key in [k for k, v in config.items() if v == ABSENT]:
        del config[key]
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "README.md").write_text(
        "---\nlicense: apache-2.0\nlanguage:\n- pt\nmodel_name: Tiny-PT\n---\n\n"
        "# Tiny-PT\n\nRandom weights for amalia-edge tests.\n",
        encoding="utf-8",
    )

    shapes = _shapes(spec, vocab)
    entries = [(name, spec.dtype, shape) for name, shape in shapes]
    dims = dict(shapes)

    def make(name: str) -> np.ndarray[Any, Any]:
        return _random_tensor(name, dims[name], spec.seed)

    if spec.shards <= 1:
        write_safetensors(out / "model.safetensors", entries, make, {"format": "pt"})
        return out
    groups = [entries[i :: spec.shards] for i in range(spec.shards)]
    weight_map: dict[str, str] = {}
    total = 0
    for k, group in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{spec.shards:05d}.safetensors"
        write_safetensors(out / fname, group, make, {"format": "pt"})
        for name, dtype, shape in group:
            weight_map[name] = fname
            total += math.prod(shape) * (4 if dtype == "F32" else 2)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return out


def snapshot_tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file under ``root``: proof a source was not touched."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def expected_weights(path: Path, spec: Spec | None = None, **kw: Any) -> Iterator[tuple[str, Any]]:
    """(name, float32 array as generated, before dtype rounding) for a built checkpoint."""
    spec = replace(spec or Spec(), **kw)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    for name, shape in _shapes(spec, vocab):
        yield name, _random_tensor(name, shape, spec.seed)
