"""``amalia-edge serve [MODEL]``: an OpenAI-compatible API and a chat page for one model.

Binds 127.0.0.1 unless told otherwise; any other address needs ``--api-key`` (or
``AMALIA_EDGE_API_KEY``) or an explicit ``--insecure-no-auth``. The library function is
:func:`amalia_edge.serve.serve`.
"""

from __future__ import annotations

import argparse

from amalia_edge.commands import add_model_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    net.add_argument("--port", type=int, default=8080, help="TCP port (8080)")
    net.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' (default: $AMALIA_EDGE_API_KEY)"
    )
    net.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without an API key",
    )
    net.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from ORIGIN (repeatable; default: none)",
    )
    lim = parser.add_argument_group("capacity and limits")
    lim.add_argument(
        "--parallel",
        type=int,
        help="slots decoded together (default: from the model, context and free memory, at most 4)",
    )
    lim.add_argument(
        "--ctx", type=int, help="context per slot in tokens (2048, or the model's own when smaller)"
    )
    lim.add_argument(
        "--max-queue", type=int, default=16, help="requests waiting for a slot before 429 (16)"
    )
    lim.add_argument(
        "--max-body", type=int, default=1024 * 1024, help="largest request body in bytes (1 MiB)"
    )
    lim.add_argument("--max-prompt-tokens", type=int, help="longest prompt (default: context - 1)")
    lim.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for replies in flight (30)",
    )
    sel = parser.add_argument_group("model")
    sel.add_argument("--backend", help="force a backend (llama.cpp, onnxruntime, tensorrt)")
    sel.add_argument("--quant", help="force an artifact quant type (e.g. Q4_K_M)")
    sel.add_argument("--name", help="model id clients use (default: the model's name)")
    sel.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    sel.add_argument("--cpu", action="store_true", help="do not offload to the GPU")
    sel.add_argument("--kv-cache-type", default="f16", help="f16 | q8_0 | q4_0 (f16)")


def run(args: argparse.Namespace) -> int:
    from amalia_edge.runtime import LoadOptions
    from amalia_edge.serve.server import ServeConfig, serve

    options = LoadOptions(
        n_threads=args.threads,
        kv_cache_type=args.kv_cache_type,
        gpu=False if args.cpu else None,
        verbose=getattr(args, "verbose", 0) >= 2,
    )
    cfg = ServeConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        parallel=args.parallel,
        n_ctx=args.ctx,
        backend=args.backend,
        quant=args.quant,
        api_key=args.api_key,
        insecure_no_auth=args.insecure_no_auth,
        cors=args.cors,
        max_body=args.max_body,
        max_prompt_tokens=args.max_prompt_tokens,
        max_queue=args.max_queue,
        shutdown_timeout=args.shutdown_timeout,
        name=args.name,
        options=options,
    )
    return serve(cfg)
