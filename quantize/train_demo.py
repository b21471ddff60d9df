#!/usr/bin/env python3
"""Train the bundled European-Portuguese demo model (a tiny LlamaForCausalLM).

Contract:
    python3 quantize/train_demo.py [--out amalia_edge/data/demo] [--steps N] [--seed 0]

* Reads ``<repo>/../shared/corpus/pt_pt_train.txt`` (training text) and
  ``pt_pt_eval.txt`` (held-out: used only to *measure* perplexity, never to train).
* Trains a SentencePiece BPE tokenizer (byte fallback, identity normalisation, split digits,
  ChatML markers as user-defined pieces, ids ``<unk>``=0 ``<s>``=1 ``</s>``=2 ``<pad>``=3
  like EuroLLM) and a small Llama (GQA, RMSNorm, SwiGLU, rotate-half RoPE exactly as
  Hugging Face ``modeling_llama``), deterministically from ``--seed``.
* Writes a standard Hugging Face checkpoint: ``model.safetensors`` (BF16), ``config.json``,
  ``generation_config.json``, ``tokenizer.model``, ``tokenizer_config.json`` (ChatML chat
  template), ``special_tokens_map.json``, ``metrics.json`` and the model card ``README.md``
  (measured numbers only).

Torch is a training-time dependency only (``pip install torch==2.13.0``); the product never
imports this file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"

# Special tokens: ids chosen to match EuroLLM's tokenizer layout for the first four.
UNK, BOS, EOS, PAD = 0, 1, 2, 3
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# SPDX id of the licence the weights are released under (the corpus is public domain).
CARD_LICENSE = "apache-2.0"

# ChatML template (the shape EuroLLM-Instruct ships): bos, then <|im_start|>role\n...<|im_end|>\n
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "amalia_edge" / "data" / "demo")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-chars", type=int, default=18_000_000, help="chars sampled for training")
    p.add_argument("--tok-chars", type=int, default=3_000_000, help="chars for the tokenizer")
    p.add_argument("--chat-fraction", type=float, default=0.15, help="share of ChatML sequences")
    p.add_argument("--eval-chunks", type=int, default=48)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--eval-every", type=int, default=500, help="held-out PPL on 8 windows every N steps"
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast for the forward pass (master weights and optimizer stay fp32)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on (cpu, cuda); the result is the same kind of checkpoint",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.compile the loss (about 2x faster on a CPU; needs a C++ compiler)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="wall-time budget for training (0 = none): the cosine decays by steps or seconds, "
        "whichever runs out first, and metrics record the steps done",
    )
    p.add_argument(
        "--card-only", action="store_true", help="re-render README.md from metrics.json and exit"
    )
    return p.parse_args()


def sample_paragraphs(path: Path, n_chars: int, seed: int) -> list[str]:
    """Deterministic sample of whole paragraphs (lines) totalling about ``n_chars``."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    rng = random.Random(seed)
    # Contiguous runs of 40 paragraphs keep narrative context while covering many novels.
    starts = list(range(0, len(lines), 40))
    rng.shuffle(starts)
    out: list[str] = []
    total = 0
    for s in starts:
        for ln in lines[s : s + 40]:
            out.append(ln)
            total += len(ln) + 1
        if total >= n_chars:
            break
    return out


def train_tokenizer(paragraphs: list[str], vocab_size: int, out_dir: Path, seed: int) -> Path:
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        txt = Path(tmp) / "tok.txt"
        txt.write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "tokenizer"
        spm.SentencePieceTrainer.train(
            input=str(txt),
            model_prefix=str(prefix),
            model_type="bpe",  # BPE: llama.cpp's SPM tokenizer reproduces BPE merges exactly
            vocab_size=vocab_size,
            character_coverage=0.9999,
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            allow_whitespace_only_pieces=True,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            user_defined_symbols=[IM_START, IM_END],
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=1_000_000,
            num_threads=2,
            max_sentence_length=1 << 16,
            minloglevel=2,
        )
        dst = out_dir / "tokenizer.model"
        dst.write_bytes(prefix.with_suffix(".model").read_bytes())
    return dst


def build_model(args: argparse.Namespace, vocab: int):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn
    from torch.nn import functional as F

    hd = args.hidden // args.heads

    class RMSNorm(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(v + 1e-5))

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        # HF modeling_llama convention (first half / second half), which convert_hf_to_gguf
        # permutes back into llama.cpp's interleaved form for Q and K.
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = nn.Linear(args.hidden, args.heads * hd, bias=False)
            self.k_proj = nn.Linear(args.hidden, args.kv_heads * hd, bias=False)
            self.v_proj = nn.Linear(args.hidden, args.kv_heads * hd, bias=False)
            self.o_proj = nn.Linear(args.heads * hd, args.hidden, bias=False)

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q = self.q_proj(x).view(b, t, args.heads, hd).transpose(1, 2)
            k = self.k_proj(x).view(b, t, args.kv_heads, hd).transpose(1, 2)
            v = self.v_proj(x).view(b, t, args.kv_heads, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            rep = args.heads // args.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(y.transpose(1, 2).reshape(b, t, args.heads * hd))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
            self.up_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
            self.down_proj = nn.Linear(args.intermediate, args.hidden, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = RMSNorm(args.hidden)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(args.hidden)
            self.mlp = MLP()

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, args.hidden)
            self.layers = nn.ModuleList([Layer() for _ in range(args.layers)])
            self.norm = RMSNorm(args.hidden)

    class Llama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Inner()
            self.lm_head = nn.Linear(args.hidden, vocab, bias=False)
            inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            pos = torch.arange(args.seq_len, dtype=torch.float32)
            freqs = torch.outer(pos, inv)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.register_buffer("cos", emb.cos(), persistent=False)
            self.register_buffer("sin", emb.sin(), persistent=False)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            t = ids.shape[1]
            cos, sin = self.cos[:t], self.sin[:t]  # type: ignore[index]
            x = self.model.embed_tokens(ids)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return self.lm_head(self.model.norm(x))

    return Llama()


def chat_wrap(user: str, assistant: str) -> str:
    return f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n{assistant}{IM_END}\n"


def main() -> int:
    args = parse_args()
    if args.card_only:
        metrics = json.loads((args.out / "metrics.json").read_text(encoding="utf-8"))
        write_card(args.out, metrics)
        return 0
    import numpy as np
    import sentencepiece as spm
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    train_path = args.corpus / "pt_pt_train.txt"
    eval_path = args.corpus / "pt_pt_eval.txt"
    tok_paras = sample_paragraphs(train_path, args.tok_chars, args.seed)
    tok_path = train_tokenizer(tok_paras, args.vocab_size, args.out, args.seed)
    sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    vocab = sp.get_piece_size()
    t_tok = time.time() - t_start
    print(f"tokenizer: {vocab} pieces in {t_tok:.1f}s", flush=True)

    # Training stream: paragraphs joined by newlines, documents (runs) start with <s>.
    paras = sample_paragraphs(train_path, args.train_chars, args.seed + 1)
    stream: list[int] = []
    for i in range(0, len(paras), 40):
        stream.append(BOS)
        stream.extend(sp.encode("\n".join(paras[i : i + 40]) + "\n"))
    data = np.asarray(stream, dtype=np.int64)
    # ChatML stream: a paragraph as the user turn, the next paragraph as the assistant reply.
    rng = random.Random(args.seed + 2)
    chat: list[int] = []
    for i in range(0, len(paras) - 1, 2):
        if rng.random() < 0.25 and len(paras[i]) < 600 and len(paras[i + 1]) < 900:
            chat.append(BOS)
            chat.extend(sp.encode(chat_wrap(paras[i], paras[i + 1])))
    chat_data = np.asarray(chat, dtype=np.int64)
    print(f"train tokens: {len(data)} text + {len(chat_data)} chat", flush=True)

    eval_text = eval_path.read_text(encoding="utf-8")
    eval_ids = sp.encode(eval_text[:400_000])
    n = args.seq_len - 1
    n_eval = min(args.eval_chunks, len(eval_ids) // n)
    eval_chunks = [[BOS, *eval_ids[i * n : (i + 1) * n]] for i in range(n_eval)]
    eval_t = torch.tensor(eval_chunks, dtype=torch.long, device=args.device)

    def evaluate(model: torch.nn.Module, windows: int | None = None) -> float:
        model.eval()
        rows = eval_t if windows is None else eval_t[:windows]
        with torch.no_grad():
            tot, cnt = 0.0, 0
            for j in range(0, len(rows), 4):
                b = rows[j : j + 4]
                logits = model(b[:, :-1]).float()
                flat = logits.reshape(-1, vocab)
                loss = F.cross_entropy(flat, b[:, 1:].reshape(-1), reduction="sum")
                tot += float(loss)
                cnt += b[:, 1:].numel()
        model.train()
        return math.exp(tot / cnt)

    model = build_model(args, vocab).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    ppl_untrained = evaluate(model)
    print(f"params {n_params}, untrained eval PPL {ppl_untrained:.1f}", flush=True)

    gen = np.random.default_rng(args.seed)
    decay = [p for n_, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(10, args.steps // 20)

    def lr_at(step: int, elapsed: float) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, args.steps - warmup)
        if args.max_seconds:
            # Under a time budget the cosine follows whichever runs out first, steps or
            # seconds, so an early stop still ends at the fully decayed learning rate.
            frac = max(frac, elapsed / args.max_seconds)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def batch() -> torch.Tensor:
        rows = []
        for _ in range(args.batch):
            use_chat = len(chat_data) > args.seq_len and gen.random() < args.chat_fraction
            src = chat_data if use_chat else data
            s = int(gen.integers(0, len(src) - args.seq_len))
            rows.append(src[s : s + args.seq_len])
        return torch.from_numpy(np.stack(rows)).to(args.device)

    def loss_of(ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(ids[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, vocab), ids[:, 1:].reshape(-1))

    step_loss = torch.compile(loss_of) if args.compile else loss_of

    curve: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    t_train = time.time()
    run_loss, run_n = 0.0, 0
    steps_done = 0
    for step in range(args.steps):
        # A wall-clock guard for shared machines: stopping early is recorded, never hidden.
        elapsed = time.time() - t_train
        if args.max_seconds and elapsed > args.max_seconds:
            print(f"stopping at step {step}: --max-seconds reached", flush=True)
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed)
        loss = step_loss(batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += float(loss.detach())
        run_n += 1
        steps_done = step + 1
        if (step + 1) % args.log_every == 0 or step == 0:
            k = run_n
            rec = {
                "step": step + 1,
                "train_loss": round(run_loss / k, 4),
                "elapsed_s": round(time.time() - t_train, 1),
            }
            curve.append(rec)
            print(json.dumps(rec), flush=True)
            run_loss, run_n = 0.0, 0
        if args.eval_every and (step + 1) % args.eval_every == 0:
            ev = {"step": step + 1, "eval_ppl_8_windows": round(evaluate(model, 8), 2)}
            evals.append(ev)
            print(json.dumps(ev), flush=True)
    if run_n:  # the tail of an early stop, so the curve ends at the last step trained
        rec = {
            "step": steps_done,
            "train_loss": round(run_loss / run_n, 4),
            "elapsed_s": round(time.time() - t_train, 1),
        }
        curve.append(rec)
    train_s = time.time() - t_train
    ppl_trained = evaluate(model)
    print(f"trained eval PPL {ppl_trained:.2f} (untrained {ppl_untrained:.1f})", flush=True)

    write_checkpoint(args, model, vocab, sp)
    metrics = {
        "seed": args.seed,
        "parameters": n_params,
        "vocab_size": vocab,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "intermediate_size": args.intermediate,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "steps": steps_done,
        "steps_planned": args.steps,
        "max_seconds": args.max_seconds,
        "lr": args.lr,
        "tokens_seen": steps_done * args.batch * (args.seq_len - 1),
        "train_text_tokens": len(data),
        "train_chat_tokens": len(chat_data),
        "train_chars_sampled": sum(len(p) + 1 for p in paras),
        "tokenizer_seconds": round(t_tok, 1),
        "train_seconds": round(train_s, 1),
        "torch_threads": args.threads,
        "bf16_autocast": args.bf16,
        "device": device_name(args.device),
        "torch_compile": args.compile,
        "eval_curve": evals,
        "loss_curve": curve,
        "eval_file": "pt_pt_eval.txt",
        "eval_tokens": int(eval_t[:, 1:].numel()),
        "eval_ppl_trained": round(ppl_trained, 3),
        "eval_ppl_untrained": round(ppl_untrained, 3),
        "torch_version": torch.__version__,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    sample = greedy_sample(model, sp, "O rapaz entrou na casa e", 40)
    metrics["greedy_sample"] = sample
    (args.out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_card(args.out, metrics)
    print(f"done in {time.time() - t_start:.0f}s -> {args.out}", flush=True)
    return 0


def greedy_sample(model, sp, prompt: str, n: int) -> str:  # type: ignore[no-untyped-def]
    import torch

    model.eval()
    ids = [BOS, *sp.encode(prompt)]
    with torch.no_grad():
        for _ in range(n):
            window = ids[-(model.cos.shape[0] - 1) :]
            logits = model(torch.tensor([window], device=model.cos.device))
            ids.append(int(logits[0, -1].argmax()))
    return str(sp.decode(ids[1:]))


def device_name(device: str) -> str:
    """What trained the model, for the card: the CPU's threads or the GPU's name."""
    import torch

    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(device)}"
    return "CPU"


def save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    """BF16 tensors as one safetensors file; the format spelled out, so only torch is needed."""
    import struct

    import torch

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)


def write_checkpoint(args: argparse.Namespace, model, vocab: int, sp) -> None:  # type: ignore[no-untyped-def]
    import torch

    out: Path = args.out
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_safetensors(tensors, out / "model.safetensors")
    im_start, im_end = sp.piece_to_id(IM_START), sp.piece_to_id(IM_END)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.hidden // args.heads,
        "hidden_act": "silu",
        "max_position_embeddings": args.seq_len,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    gen_config = {"bos_token_id": BOS, "eos_token_id": [EOS, im_end], "pad_token_id": PAD}
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "additional_special_tokens": [IM_START, IM_END],
    }

    def added(content: str) -> dict[str, object]:
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    tok_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(UNK): added("<unk>"),
            str(BOS): added("<s>"),
            str(EOS): added("</s>"),
            str(PAD): added("<pad>"),
            str(im_start): added(IM_START),
            str(im_end): added(IM_END),
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": args.seq_len,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
    }
    for name, obj in (
        ("config.json", config),
        ("generation_config.json", gen_config),
        ("special_tokens_map.json", special),
        ("tokenizer_config.json", tok_config),
    ):
        text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
        (out / name).write_text(text, encoding="utf-8")


def write_card(out: Path, m: dict[str, Any]) -> None:
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    curve = m["loss_curve"]
    # The card shows about a dozen rows; metrics.json keeps every logged point.
    every = max(1, len(curve) // 12)
    shown = [r for i, r in enumerate(curve) if i % every == 0 or i == len(curve) - 1]
    rows = "\n".join(
        f"| {r['step']} | {r['train_loss']:.3f} | {r['elapsed_s']:.0f} |" for r in shown
    )
    inter, threads = m["intermediate_size"], m["torch_threads"]
    planned = m.get("steps_planned", m["steps"])
    stopped = (
        f" (the `--max-seconds {m.get('max_seconds', 0):g}` budget ended training at step"
        f" {m['steps']} of {planned} planned; the cosine followed that time budget)"
        if planned != m["steps"]
        else ""
    )
    lr = f"peak learning rate {m['lr']:g}, " if "lr" in m else ""
    device = m.get("device", "CPU")
    where = (
        f"on one {device.removeprefix('GPU ')} GPU"
        if device.startswith("GPU")
        else f"on {threads} CPU threads of a 2-core machine shared with other jobs"
    )
    precision = ", bf16 autocast, fp32 weights and optimizer" if m.get("bf16_autocast") else ""
    budget = m.get("max_seconds", 0)
    timed = (
        f"\nWith `--max-seconds {budget:g}` the cosine's progress is the larger of the step"
        " fraction and the elapsed-time fraction, so a rerun on a differently loaded machine"
        " can differ slightly."
        if budget and m["train_seconds"] / budget >= m["steps"] / planned
        else ""
    )
    quoted = "\n> ".join(str(m["greedy_sample"]).splitlines())
    dev_flag = " --device cuda" if device.startswith("GPU") else ""
    flags = (
        f"--seed {m['seed']}{dev_flag} --batch {m['batch']} --seq-len {m['seq_len']}"
        f" --steps {planned} --lr {m['lr']:g}"
        + ("" if m.get("torch_compile", False) else " --no-compile")
        + ("" if m.get("bf16_autocast", False) else " --no-bf16")
    )
    # Front matter: top-level scalars (license) feed GGUF general.license through
    # Checkpoint.license; the lists feed general.languages / general.tags.
    card = f"""---
license: {CARD_LICENSE}
language:
- pt
tags:
- llama
- demo
- european-portuguese
library_name: transformers
pipeline_tag: text-generation
---

# amalia-edge demo model (pt-PT, tiny Llama)

A deliberately tiny `LlamaForCausalLM` trained from scratch on European Portuguese so that
demos, tests and benchmarks run on a real model that writes (bad) Portuguese. It is NOT
AMÁLIA and NOT useful as an assistant. Produced by `quantize/train_demo.py` (seed {m["seed"]});
every number below was measured by that run and is also in `metrics.json`.

| property | value |
| --- | --- |
| parameters | {m["parameters"]:,} |
| layers / hidden / intermediate | {m["num_hidden_layers"]} / {m["hidden_size"]} / {inter} |
| heads / KV heads (GQA) | {m["num_attention_heads"]} / {m["num_key_value_heads"]} |
| vocabulary | {m["vocab_size"]} SentencePiece BPE pieces, byte fallback, ChatML markers |
| context trained | {m["seq_len"]} tokens |
| weights | BF16 safetensors, untied embeddings |
| checkpoint directory size | {size / 1e6:.1f} MB |

## Training

Text: a seeded sample of {m["train_chars_sampled"]:,} characters of `pt_pt_train.txt` (ELTeC-por,
43 public-domain Portuguese novels, 1880-1917; see `shared/corpus/README.md`) =
{m["train_text_tokens"]:,} tokens, plus {m["train_chat_tokens"]:,} tokens of the same paragraphs
wrapped as ChatML user/assistant turns. {m["steps"]} AdamW steps{stopped} of
{m["batch"]} x {m["seq_len"]} tokens ({lr}linear warm-up then cosine decay to 10 %;
{m["tokens_seen"]:,} tokens seen) in {m["train_seconds"]:.0f} s wall time {where}
(torch {m["torch_version"]}{precision}); tokenizer training {m["tokenizer_seconds"]:.0f} s.{timed}

Reproduce (reads `../shared/corpus/`): `python3 quantize/train_demo.py {flags}`

| step | mean train loss (nats/token) | elapsed s |
| --- | --- | --- |
{rows}

## Held-out perplexity

On {m["eval_tokens"]:,} tokens of `pt_pt_eval.txt` (two novels never trained on), windows of
{m["seq_len"]} tokens starting with `<s>`:

| model | perplexity |
| --- | --- |
| this model | {m["eval_ppl_trained"]:.2f} |
| same shape, untrained (seed init) | {m["eval_ppl_untrained"]:.1f} |

Greedy continuation of «O rapaz entrou na casa e» by the trained float32 torch model (before the
BF16 export), as the training run printed it:

> {quoted}

Licence: the training text is public domain (novels, see `shared/corpus/README.md`); these
weights, the tokenizer and this card are released under the Apache License 2.0
(`{CARD_LICENSE}`, as amalia-edge itself).
"""
    (out / "README.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
