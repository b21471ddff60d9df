"""The ``amalia-edge`` command line: parse, call the library, print, map errors.

Each subcommand lives in ``amalia_edge.commands.<module>`` and exposes two functions:

``add_arguments(parser: argparse.ArgumentParser) -> None``
    declares its options;
``run(args: argparse.Namespace) -> int``
    calls the library and prints results (stdout carries results only; progress and logs go
    to stderr), returning the exit status.

Only the module of the command being run is imported, so ``amalia-edge --help`` never loads
llama.cpp, ONNX Runtime, TensorRT or Textual.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NamedTuple

from amalia_edge import __version__
from amalia_edge.errors import AmaliaEdgeError


class Command(NamedTuple):  # NamedTuple, not a dataclass: keeps `--help` imports minimal
    name: str
    module: str
    help: str


# One row per subcommand; the order is the order ``--help`` lists them in.
COMMANDS: tuple[Command, ...] = (
    Command("quantize", "quantize", "convert a Hugging Face checkpoint to GGUF (and ONNX)"),
    Command("quality", "quality", "measure what each quant type costs on pt-PT text (PPL, KLD)"),
    Command("doctor", "doctor", "probe this machine and say which backend would run and why"),
    Command("generate", "generate", "generate a reply to one prompt, streamed"),
    Command("chat", "chat", "chat with a model in the terminal (Textual TUI)"),
    Command("bench", "bench", "benchmark backends and quant types: tokens/s, latency, watts"),
    Command("power", "power", "show or change the Jetson power mode and clocks"),
    Command("build-engine", "build_engine", "build TensorRT engines from ONNX on this device"),
    Command("serve", "serve", "serve a model: OpenAI-compatible API, batching, chat page"),
)


def _selected(argv: Sequence[str]) -> Command | None:
    names = {c.name: c for c in COMMANDS}
    for token in argv:
        if token.startswith("-"):
            continue
        return names.get(token)
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amalia-edge",
        description="Run European-Portuguese LLMs (AMÁLIA, EuroLLM) on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"amalia-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _selected(argv)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if chosen is not None and cmd.name == chosen.name:
            module = importlib.import_module(f"amalia_edge.commands.{cmd.module}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    if quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(run(args) or 0)
    except AmaliaEdgeError as exc:
        print(f"amalia-edge: error: {exc}", file=sys.stderr)
        _json_error(args, exc, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("amalia-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `amalia-edge ... | head` closed the pipe: not an error
        return 0
    except Exception as exc:
        from amalia_edge.errors import internal_error_line, save_crash_report

        report = save_crash_report(exc, getattr(args, "command", None))
        line = internal_error_line(exc, report)
        print(line, file=sys.stderr)
        _json_error(args, exc, line)
        return 1


def _json_error(args: argparse.Namespace, exc: BaseException, message: str) -> None:
    """With ``--json``, stdout carries a JSON error object too (a pipe never reads nothing)."""
    if getattr(args, "json", False) is not True:
        return
    import json

    error: dict[str, str | None] = {"type": type(exc).__name__, "message": message}
    if isinstance(exc, AmaliaEdgeError):
        error.update(problem=exc.problem, fix=exc.fix)
    with contextlib.suppress(OSError, ValueError):  # stdout closed: stderr has the message
        print(json.dumps({"error": error}, ensure_ascii=False), flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
