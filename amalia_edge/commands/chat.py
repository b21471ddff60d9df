"""``amalia-edge chat [MODEL]``: open the Textual chat app (Textual is imported only here)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalia_edge.commands import MAX_CTX, add_model_argument, float_range, int_range, threads_type
from amalia_edge.errors import AmaliaEdgeError

if TYPE_CHECKING:
    from amalia_edge.tui.history import HistoryStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--backend", default=None, help="force a backend (default: automatic)")
    parser.add_argument("--quant", default=None, help="force a quant type, e.g. Q4_K_M")
    parser.add_argument(
        "--ctx",
        type=int_range(1, MAX_CTX),
        default=None,
        help="context size in tokens (2048, or the model's own if shorter)",
    )
    parser.add_argument(
        "--threads",
        type=threads_type(),
        default=None,
        help="decode threads (default: physical cores less one, leaving one to the interface)",
    )
    parser.add_argument(
        "--lang", choices=("pt", "en"), default="pt", help="interface language (pt: pt-PT)"
    )
    parser.add_argument("--system", default=None, help="system prompt (default: a pt-PT one)")
    parser.add_argument(
        "--temperature", type=float_range(0, 100), default=0.7, help="sampling temperature (0.7)"
    )
    parser.add_argument(
        "--top-p",
        type=float_range(0, 1, lo_open=True),
        default=0.95,
        help="nucleus sampling top-p (0.95)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int_range(1, MAX_CTX),
        default=512,
        help="longest reply in tokens (512)",
    )
    parser.add_argument("--resume", default=None, metavar="ID", help="resume a saved conversation")
    parser.add_argument(
        "--list", action="store_true", help="list saved conversations (ID, date, title) and exit"
    )


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list_conversations()
    if args.ctx is not None and args.ctx <= 0:
        raise AmaliaEdgeError(f"--ctx must be positive, got {args.ctx}", fix="e.g. --ctx 2048")
    try:
        from amalia_edge.tui.app import ChatApp
    except ImportError as exc:
        raise AmaliaEdgeError(
            f"the chat needs Textual, which is not installed ({exc.name})",
            fix="pip install 'amalia-edge[tui]'",
        ) from None
    if args.model is not None:
        # A MODEL that is not there, or is not a GGUF / artifacts directory, is a mistake on the
        # command line: say so in one line before the app opens. Failures after that (a load
        # that runs out of memory, a model switched to from inside the app) stay in the UI.
        from amalia_edge.runtime.artifacts import resolve_model

        resolve_model(args.model)
    from amalia_edge.tui.history import HistoryStore
    from amalia_edge.tui.i18n import Messages
    from amalia_edge.tui.settings import ChatSettings, ModelSpec

    spec = ModelSpec(
        model=args.model,
        backend=args.backend,
        quant=args.quant,
        n_ctx=args.ctx,
        threads=args.threads,
    )
    msgs = Messages(args.lang)
    settings = ChatSettings(
        system=args.system or msgs("system.default"),
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
    )
    bad = settings.validate()
    if bad is not None:
        raise AmaliaEdgeError(
            f"--{bad.replace('_', '-')} is out of range",
            fix="temperature 0–2, top-p in (0, 1], max-tokens 1–32768",
        )
    store = HistoryStore()
    if args.resume is not None:
        _check_resume(store, args.resume)
    app = ChatApp(spec, lang=args.lang, settings=settings, resume=args.resume, store=store)
    with _log_to_file(log_path(store)):
        run_app(app)
    return 0


def log_path(store: HistoryStore) -> Path:
    """``chat.log`` inside the history folder, so a chosen ``AMALIA_EDGE_HISTORY_DIR`` holds
    everything the chat writes (nothing lands beside it)."""
    return store.root / "chat.log"


def _check_resume(store: HistoryStore, conversation_id: str) -> None:
    """An unknown ``--resume ID`` is a command-line mistake: say how to find the IDs."""
    from amalia_edge.tui.history import HistoryError

    try:
        store.open(conversation_id)
    except HistoryError as exc:
        raise AmaliaEdgeError(
            exc.problem, fix="list the saved ones with `amalia-edge chat --list`"
        ) from None


def run_app(app: Any, **run_kwargs: Any) -> None:
    """``app.run()``, but a bug inside the app is re-raised here after the screen is restored.

    Textual's own handler prints a traceback with ``show_locals=True`` (the conversation text
    included) and exits 0 from ``run()``; instead the app is closed and the exception reaches
    :func:`amalia_edge.cli.main`, which prints one line, saves a report without user text and
    exits 1.
    """
    crashes: list[Exception] = []

    def on_crash(error: Exception) -> None:
        crashes.append(error)
        # The same shutdown as Textual's App._fatal_error (textual 8.2), minus the traceback.
        app._return_code = 1
        close = getattr(app, "_close_messages_no_wait", None)
        if close is not None:
            close()
        else:  # pragma: no cover - a future Textual without it
            app.exit(return_code=1)

    app._handle_exception = on_crash
    app.run(**run_kwargs)
    if crashes:
        raise crashes[0]


def _list_conversations() -> int:
    import sys
    import time

    from amalia_edge.tui.history import HistoryStore

    store = HistoryStore()
    found = store.list()
    if not found:
        print(f"no saved conversations in {store.root}", file=sys.stderr)
    for c in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated))
        print(f"{c.id}\t{when}\t{c.n_messages}\t{c.title}")
    return 0


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Send logging to ``path`` while the app runs: a log line on stderr would be drawn
    over the full-screen interface."""
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()
