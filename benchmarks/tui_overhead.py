#!/usr/bin/env python3
"""What does the chat TUI cost? Decode tokens/s while the reply renders in the app vs headless.

Loads one model once, starts the real chat app (``ChatApp``) under Textual's headless Pilot
(the app lays out and renders every update; only the terminal output is discarded), then
alternates rounds A B B A A B ... (the ABBA order cancels slow drift such as thermal
throttling):

A. headless: the same request, ``model.stream_chat`` consumed in a plain loop, no UI;
B. in the TUI: a new chat, the prompt typed into the input box, the reply streamed through
   the app's worker thread into the Markdown message view and the stats panel.

Both send the same messages (system prompt + one user message) with greedy sampling, so both
generate the same tokens. Tokens/s is the runtime's own ``Finished.decode_tps`` (derived from
the events, which the backend stamps as it produces each token, so any stall the UI causes
shows up there). Prints per-condition medians and the ratio TUI/headless; target >= 0.95.

Usage::

    python3 benchmarks/tui_overhead.py MODEL.gguf [--rounds 6] [--tokens 128]
    python3 benchmarks/tui_overhead.py --demo      # converts the demo model to Q8_0 first
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Conta-me uma história sobre um gato que vivia em Lisboa, perto do rio Tejo."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--demo", action="store_true", help="convert and use the demo model (Q8_0)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per condition (6)")
    ap.add_argument("--tokens", type=int, default=128, help="max tokens per reply (128)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--threads", type=int, default=None, help="decode threads (default: cores)")
    ap.add_argument("--size", default="120x40", help="terminal size of the app (120x40)")
    args = ap.parse_args(argv)
    if not args.model and not args.demo:
        ap.error("give MODEL or --demo")
    with tempfile.TemporaryDirectory(prefix="amalia-tui-overhead-") as tmp:
        model_path = args.model
        if args.demo:
            from amalia_edge.convert.pipeline import quantize

            quantize(None, Path(tmp) / "a", ["Q8_0"], imatrix="none", progress=False)
            model_path = str(Path(tmp) / "a")
        return asyncio.run(_run(args, model_path, Path(tmp)))


async def _run(args: argparse.Namespace, model_path: str, tmp: Path) -> int:
    from amalia_edge.runtime.events import Finished
    from amalia_edge.tui import model as model_mod
    from amalia_edge.tui.app import ChatApp
    from amalia_edge.tui.history import ChatMessage, HistoryStore
    from amalia_edge.tui.settings import ChatSettings, ModelSpec

    spec = ModelSpec(model_path, backend=args.backend, n_ctx=args.ctx, threads=args.threads)
    loaded = model_mod.load(spec)
    settings = ChatSettings(
        system="És um assistente prestável.", temperature=0.0, top_p=1.0, max_tokens=args.tokens
    )
    request = model_mod.request_messages(settings, [ChatMessage("user", PROMPT)])
    sampling = model_mod.sampling_params(settings)

    def headless() -> tuple[float, int]:
        fin = None
        for ev in loaded.model.stream_chat(request, sampling=sampling, max_tokens=args.tokens):
            if isinstance(ev, Finished):
                fin = ev
        assert fin is not None
        return fin.decode_tps, fin.completion_tokens

    width, height = (int(x) for x in args.size.split("x"))
    app = ChatApp(
        spec,
        settings=settings,
        store=HistoryStore(tmp / "history"),
        loader=lambda _spec: loaded,
        monitor=None,
        export_dir=tmp,
    )
    without: list[float] = []
    with_ui: list[float] = []
    tokens: set[int] = set()
    async with app.run_test(size=(width, height)) as pilot:
        await _settle(app, pilot)

        async def in_tui() -> tuple[float, int]:
            app.new_conversation()
            await pilot.pause()
            app.chat.prompt.value = PROMPT
            await pilot.press("enter")
            await pilot.pause(0.05)
            await _settle(app, pilot)
            stats: dict[str, Any] = app.conversation.messages[-1].stats or {}
            return float(stats["decode_tps"]), int(stats["completion_tokens"])

        await asyncio.to_thread(headless)  # warm-up (first-call allocations, caches)
        await in_tui()
        order = [c for i in range(args.rounds) for c in (("A", "B") if i % 2 == 0 else ("B", "A"))]
        for k, cond in enumerate(order, 1):
            if cond == "A":
                tps, n = await asyncio.to_thread(headless)
                without.append(tps)
            else:
                tps, n = await in_tui()
                with_ui.append(tps)
            tokens.add(n)
            print(f"  round {k} {cond}: {tps:.2f} tok/s ({n} tokens)", file=sys.stderr)
    loaded.close()

    a, b = statistics.median(without), statistics.median(with_ui)
    spread = statistics.pstdev(without) / statistics.fmean(without)
    print(f"model: {model_path}  backend: {loaded.backend}  quant: {loaded.quant}")
    print(f"reply tokens: {sorted(tokens)}  terminal: {args.size} (headless Pilot, rendered)")
    print(f"decode threads: {args.threads or 'backend default'}")
    print(f"decode tokens/s headless: median {a:.2f} (n={len(without)}, cv {spread:.1%})")
    print(f"decode tokens/s in TUI:   median {b:.2f} (n={len(with_ui)})")
    print(f"ratio TUI/headless: {b / a:.4f}  (target >= 0.95)")
    # The UI's cost is mostly per reply (mounting the message, styling, layout), not per
    # token, so the decode time it adds says more than the ratio for models of other speeds.
    gaps = statistics.median(sorted(tokens)) - 1  # decode spans n-1 token intervals
    added = gaps / b - gaps / a
    print(f"decode time added by the TUI per reply: {1000 * added:.0f} ms over {gaps / a:.3f} s")
    return 0


async def _settle(app: Any, pilot: Any) -> None:
    for _ in range(100_000):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.loaded is not None and not app.loading and not app.chat.generating:
            return
        await pilot.pause(0.01)
    raise RuntimeError("the app did not settle")


if __name__ == "__main__":
    raise SystemExit(main())
