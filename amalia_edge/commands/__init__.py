"""One module per subcommand (see ``amalia_edge.cli.COMMANDS``), plus what they share."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The optional MODEL positional of the commands that run a model; absent = the demo."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        default=None,
        help="artifacts directory or .gguf file (default: the bundled demo model)",
    )


# -- numeric options: checked by argparse, before any model or file is touched ---------------
# A bad number is a one-line usage error (exit 2), never a crash deep inside llama.cpp
# (`--batch -1` segfaulted in Llama.__del__), a NaN silently producing an empty reply, or
# `--threads 10000` running 40x slower.


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where there is one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def int_range(lo: int, hi: int | None = None) -> Any:
    """An argparse ``type`` accepting integers in ``[lo, hi]`` (``hi=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            want = f"{lo} or more" if hi is None else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"{value} is out of range (use {want})")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def threads_type(minimum: int = 1) -> Any:
    """``--threads``: ``minimum`` (1, or 0 = every core where a command allows it) to the
    number of CPUs; more threads than CPUs only makes llama.cpp's workers wait on each other."""

    def parse(text: str) -> int:
        n = cpu_count()
        value = int_range(minimum, None)(text)
        if value > n:
            raise argparse.ArgumentTypeError(
                f"{value} is more than the {n} CPU{'s' if n > 1 else ''} of this machine "
                f"(use {minimum} to {n})"
            )
        return int(value)

    parse.__name__ = "int"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False) -> Any:
    """An argparse ``type`` accepting finite numbers in ``[lo, hi]`` (``(lo, hi]`` when
    ``lo_open``); NaN and infinities are refused."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > lo if lo_open else value >= lo
        if not math.isfinite(value) or not low_ok or value > hi:
            bracket = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"{text} is out of range (use {bracket}{lo}, {hi}])")
        return value

    parse.__name__ = "float"
    return parse


# Shared bounds. MAX_CTX: llama.cpp's largest trained contexts are 1M tokens (Llama 4 Scout
# is 10M, not a model this tool runs); n_batch above the context is clamped by llama.cpp.
MAX_CTX = 1 << 20
MAX_BATCH = 1 << 16
