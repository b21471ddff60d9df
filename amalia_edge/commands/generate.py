"""``amalia-edge generate [MODEL] "prompt"``: stream one reply to stdout.

MODEL is an artifacts directory or a ``.gguf`` file; leave it out (``generate "prompt"``)
for the bundled demo model (:func:`amalia_edge.runtime.default_model_path`, prepared in the
user cache on first use). With a single positional argument that argument is the PROMPT,
except when it is plainly a model (a ``.gguf`` path or a directory with ``manifest.json``):
then the missing PROMPT is reported instead of sending a path to the demo model as a prompt.

The prompt goes through the model's own chat template with the pt-PT default system prompt
(``--system`` replaces it, ``--system ""`` drops it; ``--raw`` sends the text as it is).
``--explain`` prints the selection table (every candidate with its reasons) before the
reply; ``--json`` prints one JSON record at the end instead of the streamed text, with the
timings derived from the event stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from amalia_edge.commands import (
    MAX_BATCH,
    MAX_CTX,
    add_model_argument,
    float_range,
    int_range,
    threads_type,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [options] [MODEL] PROMPT"
    parser.description = (
        "Generate a reply to one prompt, streamed to stdout. "
        'Without MODEL (`amalia-edge generate "Olá!"`) the bundled demo model is used.'
    )
    add_model_argument(parser)
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt ("-" reads stdin)')
    sel = parser.add_argument_group("selection")
    sel.add_argument("--backend", help="force a backend (llama.cpp, onnxruntime, tensorrt)")
    sel.add_argument("--quant", help="force an artifact quant type (e.g. Q4_K_M)")
    sel.add_argument(
        "--ctx",
        type=int_range(1, MAX_CTX),
        default=None,
        help="context size in tokens (2048, or the model's own when smaller)",
    )
    sel.add_argument(
        "--autotune",
        action="store_true",
        help="measure the top candidates and cache the fastest for this device",
    )
    sel.add_argument("--explain", action="store_true", help="print the selection table first")
    gen = parser.add_argument_group("generation")
    gen.add_argument(
        "--max-tokens",
        type=int_range(1, MAX_CTX),
        default=256,
        help="most tokens to generate (256)",
    )
    gen.add_argument(
        "--temperature", type=float_range(0, 100), default=0.8, help="0 = greedy (0.8)"
    )
    gen.add_argument("--top-k", type=int_range(0), default=40, help="(40; 0 = off)")
    gen.add_argument(
        "--top-p", type=float_range(0, 1, lo_open=True), default=0.95, help="(0.95; 1 = off)"
    )
    gen.add_argument("--min-p", type=float_range(0, 1), default=0.05, help="(0.05; 0 = off)")
    gen.add_argument(
        "--repeat-penalty", type=float_range(0, 100, lo_open=True), default=1.0, help="(1.0 = off)"
    )
    gen.add_argument("--seed", type=int_range(0, 2**32 - 1), help="sampling seed (default: random)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--system", help="system prompt (default: pt-PT assistant; '' = none)")
    gen.add_argument("--raw", action="store_true", help="no chat template: complete the text")
    run = parser.add_argument_group("backend options")
    run.add_argument("--threads", type=threads_type(), help="CPU threads (default: physical cores)")
    run.add_argument("--cpu", action="store_true", help="do not offload to the GPU")
    run.add_argument("--kv-cache-type", default="f16", help="f16 | q8_0 | q4_0 (f16)")
    run.add_argument(
        "--batch", type=int_range(1, MAX_BATCH), default=512, help="prompt batch size (512)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON record at the end")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps `amalia-edge -q generate` working too
        help="no speed summary on stderr",
    )


def looks_like_model(arg: str) -> bool:
    """Whether a lone positional argument is a MODEL rather than a PROMPT (see module doc)."""
    from pathlib import Path

    if "\n" in arg or len(arg) > 4096:
        return False
    path = Path(arg).expanduser()
    try:
        return path.suffix.lower() == ".gguf" or (path / "manifest.json").is_file()
    except OSError:  # a prompt that is not a valid path at all
        return False


def run(args: argparse.Namespace) -> int:
    from amalia_edge.errors import AmaliaEdgeError
    from amalia_edge.runtime import LoadOptions, Message, SamplingParams, load_model
    from amalia_edge.runtime.events import Finished, TokenEvent

    if args.model is None and looks_like_model(args.prompt):
        raise AmaliaEdgeError(
            f"no PROMPT given ({args.prompt!r} is a model)",
            fix=f'use `amalia-edge generate {args.prompt} "your prompt"`',
        )
    prompt = read_stdin() if args.prompt == "-" else args.prompt
    sampling = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
    )
    options = LoadOptions(
        n_threads=args.threads,
        n_batch=args.batch,
        kv_cache_type=args.kv_cache_type,
        gpu=False if args.cpu else None,
        seed=args.seed,
        verbose=getattr(args, "verbose", 0) >= 2,  # -vv: the backend's own log on stderr
    )
    t0 = time.perf_counter()
    model = load_model(
        args.model,
        backend=args.backend,
        quant=args.quant,
        n_ctx=args.ctx,
        autotune=args.autotune,
        options=options,
    )
    load_s = time.perf_counter() - t0
    with model:
        if args.explain and not args.json:
            print(model.selection.format_table())
            print()
        if args.raw:
            events = model.stream(
                prompt, sampling=sampling, max_tokens=args.max_tokens, stop=args.stop
            )
        else:
            events = model.stream_chat(
                [Message("user", prompt)],
                sampling=sampling,
                max_tokens=args.max_tokens,
                stop=args.stop,
                system=args.system,
            )
        fin: Finished | None = None
        out = sys.stdout
        for ev in events:
            if isinstance(ev, TokenEvent):
                if not args.json and ev.text:
                    out.write(ev.text)
                    out.flush()
            elif isinstance(ev, Finished):
                fin = ev
        assert fin is not None
        if args.json:
            print(
                json.dumps(record(model, fin, sampling, load_s, args.explain), ensure_ascii=False)
            )
        else:
            out.write("\n")
            out.flush()
            if not getattr(args, "quiet", False) and fin.reason != "error":
                print(speed_line(fin), file=sys.stderr)
        if fin.reason == "error":
            print(f"amalia-edge: error: generation failed: {fin.error}", file=sys.stderr)
            return 1
    return 0


def speed_line(fin: Any) -> str:
    """One short stderr summary: decode speed, tokens, time to first token, prompt speed."""
    ttft = "?" if fin.ttft is None else f"{fin.ttft * 1e3:.0f} ms"
    return (
        f"{fin.decode_tps:.1f} tok/s, {fin.completion_tokens} tokens, TTFT {ttft} "
        f"(prompt {fin.prompt_tokens} tokens at {fin.prompt_tps:.0f} tok/s)"
    )


def read_stdin() -> str:
    """The prompt from stdin, which must be UTF-8 text (binary bytes are a one-line error)."""
    from amalia_edge.errors import AmaliaEdgeError

    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AmaliaEdgeError(
            f"the prompt on stdin is not UTF-8 text (invalid byte at offset {exc.start})",
            fix="pipe text, e.g. `iconv -f LATIN1 -t UTF-8 file | amalia-edge generate MODEL -`",
        ) from None


def record(model: Any, fin: Any, sampling: Any, load_s: float, explain: bool) -> dict[str, Any]:
    """The ``--json`` record: one flat object, times in seconds."""
    rec: dict[str, Any] = {
        "model": model.name,
        "backend": model.backend_name,
        "artifact": str(model.artifact.path),
        "quant": model.artifact.quant,
        "n_ctx": model.n_ctx,
        "text": fin.text,
        "finish_reason": fin.reason,
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "load_s": round(load_s, 4),
        "ttft_s": None if fin.ttft is None else round(fin.ttft, 4),
        "prompt_s": round(fin.prompt_seconds, 4),
        "prompt_tokens_per_s": round(fin.prompt_tps, 2),
        "decode_tokens_per_s": round(fin.decode_tps, 2),
        "total_s": round(fin.t_end - fin.t_start, 4),
        "dropped_messages": model.last_fit.dropped if model.last_fit else 0,
        "sampling": sampling.to_dict(),
        "error": fin.error,
    }
    if explain:
        rec["selection"] = model.selection.to_dict()
    return rec
