"""One module per subcommand (see ``amalia_edge.cli.COMMANDS``), plus what they share."""

from __future__ import annotations

import argparse


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The optional MODEL positional of the commands that run a model; absent = the demo."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        default=None,
        help="artifacts directory or .gguf file (default: the bundled demo model)",
    )
