#!/usr/bin/env python3
"""What does the chat TUI cost? Decode tokens/s while the reply renders in the app vs headless.

Loads one model once, starts the real chat app (``ChatApp``) under Textual's headless Pilot
(the app lays out and renders every update; only the terminal output is discarded), then
alternates rounds A B A B ... in one process:

A. headless: the same request, ``model.stream_chat`` consumed in a plain loop, no UI;
B. in the TUI: a new chat, the prompt typed into the input box, the reply streamed through
   the app's worker thread into the message view and the stats panel.

Both send the same messages (system prompt + one user message) with greedy sampling, so both
generate the same tokens. Tokens/s is the runtime's own ``Finished.decode_tps`` (derived from
the events, which the backend stamps as it produces each token, so any stall the UI causes
shows up there). Prints per-condition medians, the ratio TUI/headless (target >= 0.95), the
process CPU seconds per reply (the UI's own work shows up there even where it does not slow
the decode), and for the TUI the delay from Enter to the start of the request.

Usage::

    python3 benchmarks/tui_overhead.py MODEL [--rounds 8] [--tokens 128] [--threads 1]
    python3 benchmarks/tui_overhead.py --demo     # the demo model (runtime default_model_path)
    python3 benchmarks/tui_overhead.py --synthetic-params 150M --threads 1

The demo model decodes a whole reply in tens of milliseconds, so there a fixed per-reply cost
of the UI dominates the ratio. ``--synthetic-params N`` builds (once, cached under /tmp; see
``benchmarks/_tui_model.py``) a random-weight Llama of about N parameters whose decode speed
on one CPU thread is in the tens of tokens/s, near a 9B model's on the Orin, and samples with
``ignore_eos`` (random weights emit end-of-generation tokens at random) so every reply has
exactly ``--tokens`` tokens. ``--ignore-eos`` forces that for any model; it applies to both
conditions alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Conta-me uma história sobre um gato que vivia em Lisboa, perto do rio Tejo."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--demo", action="store_true", help="the demo model (converted once, cached)")
    ap.add_argument(
        "--synthetic-params",
        default=None,
        metavar="N",
        help="a random-weight Llama of about N params, e.g. 150M (built once, cached in /tmp)",
    )
    ap.add_argument("--quant", default="q8_0", help="quant of the --synthetic-params GGUF (q8_0)")
    ap.add_argument(
        "--ignore-eos",
        action="store_true",
        help="decode past end-of-generation tokens (always on with --synthetic-params)",
    )
    ap.add_argument("--rounds", type=int, default=8, help="rounds per condition (8)")
    ap.add_argument("--tokens", type=int, default=128, help="max tokens per reply (128)")
    ap.add_argument("--ctx", type=int, default=None, help="context (default: the TUI's)")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--threads", type=int, default=None, help="decode threads (default: TUI's)")
    ap.add_argument("--size", default="120x40", help="terminal size of the app (120x40)")
    ap.add_argument(
        "--telemetry", action="store_true", help="run the app's telemetry monitor too (B only)"
    )
    args = ap.parse_args(argv)
    if sum(map(bool, (args.model, args.demo, args.synthetic_params))) != 1:
        ap.error("give one of MODEL, --demo, --synthetic-params N")
    model_path = args.model
    if args.demo:
        from amalia_edge.runtime import default_model_path

        model_path = str(default_model_path())
    if args.synthetic_params:
        import _tui_model

        print(_tui_model.describe(args.synthetic_params), file=sys.stderr)
        model_path = str(_tui_model.synthetic_gguf(args.synthetic_params, args.quant))
        args.ignore_eos = True
    with tempfile.TemporaryDirectory(prefix="amalia-tui-overhead-") as tmp:
        return asyncio.run(_run(args, model_path, Path(tmp)))


class Recorder:
    """The model, keeping the last ``Finished`` event (both conditions go through it).

    ``ignore_eos``: every request's sampling gets ``ignore_eos=True`` (the TUI builds its own
    ``SamplingParams``; this is where both conditions can be given the same one).
    """

    def __init__(self, model: Any, ignore_eos: bool = False) -> None:
        self._model = model
        self._ignore_eos = ignore_eos
        self.finished: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def stream_chat(self, messages: Sequence[Any], **kw: Any) -> Iterator[Any]:
        import dataclasses

        from amalia_edge.runtime.events import Finished

        if self._ignore_eos and kw.get("sampling") is not None:
            kw["sampling"] = dataclasses.replace(kw["sampling"], ignore_eos=True)
        for event in self._model.stream_chat(messages, **kw):
            if isinstance(event, Finished):
                self.finished = event
            yield event


async def _run(args: argparse.Namespace, model_path: str, tmp: Path) -> int:
    import dataclasses

    from amalia_edge.tui import model as model_mod
    from amalia_edge.tui.app import ChatApp, default_monitor
    from amalia_edge.tui.history import ChatMessage, HistoryStore
    from amalia_edge.tui.settings import ChatSettings, ModelSpec

    spec = ModelSpec(model_path, backend=args.backend, n_ctx=args.ctx, threads=args.threads)
    loaded = model_mod.load(spec)
    recorder = Recorder(loaded.model, ignore_eos=args.ignore_eos)
    loaded = dataclasses.replace(loaded, model=recorder)
    settings = ChatSettings(
        system="És um assistente prestável.", temperature=0.0, top_p=1.0, max_tokens=args.tokens
    )
    request = model_mod.request_messages(settings, [ChatMessage("user", PROMPT)])
    sampling = model_mod.sampling_params(settings)

    def headless() -> None:
        for _ in recorder.stream_chat(request, sampling=sampling, max_tokens=args.tokens):
            pass

    width, height = (int(x) for x in args.size.split("x"))
    app = ChatApp(
        spec,
        settings=settings,
        store=HistoryStore(tmp / "history"),
        loader=lambda _spec: loaded,
        monitor=default_monitor if args.telemetry else None,
        export_dir=tmp,
    )
    tps: dict[str, list[float]] = {"A": [], "B": []}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    delay: list[float] = []
    done: list[float] = []
    reply: list[float] = []
    tokens: set[int] = set()
    async with app.run_test(size=(width, height)) as pilot:
        await _settle(app, pilot)

        async def in_tui() -> None:
            app.new_conversation()
            await pilot.pause()
            app.chat.prompt.value = PROMPT
            t_enter = time.perf_counter()
            await pilot.press("enter")
            await pilot.pause(0.05)
            await _settle(app, pilot)
            fin = recorder.finished
            delay.append(fin.t_start - t_enter)
            done.append(fin.t_end - t_enter)

        await asyncio.to_thread(headless)  # warm-up (first-call allocations, caches)
        await in_tui()
        delay.clear()
        done.clear()
        order = [c for _ in range(args.rounds) for c in ("A", "B")]
        for k, cond in enumerate(order, 1):
            c0 = time.process_time()
            if cond == "A":
                await asyncio.to_thread(headless)
            else:
                await in_tui()
            cpu[cond].append(time.process_time() - c0)
            fin = recorder.finished
            tps[cond].append(fin.decode_tps)
            if cond == "A":
                reply.append(fin.t_end - fin.t_start)
            tokens.add(fin.completion_tokens)
            print(
                f"  round {k} {cond}: {fin.decode_tps:.1f} tok/s ({fin.completion_tokens} tokens)",
                file=sys.stderr,
            )
    loaded.close()

    a, b = statistics.median(tps["A"]), statistics.median(tps["B"])
    ratios = [y / x for x, y in zip(tps["A"], tps["B"], strict=True)]
    spread = statistics.pstdev(tps["A"]) / statistics.fmean(tps["A"])
    print(f"model: {model_path}  backend: {loaded.backend}  quant: {loaded.quant}")
    print(f"reply tokens: {sorted(tokens)}  terminal: {args.size} (headless Pilot, rendered)")
    print(
        f"decode threads: {args.threads or 'TUI default'}  telemetry: {args.telemetry}"
        f"  ignore_eos: {args.ignore_eos}"
    )
    print(f"decode tokens/s headless: median {a:.1f} (n={len(tps['A'])}, cv {spread:.1%})")
    print(f"decode tokens/s in TUI:   median {b:.1f} (n={len(tps['B'])})")
    print(
        f"ratio TUI/headless: {b / a:.3f}  (pairwise A,B: median {statistics.median(ratios):.3f},"
        f" min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.95)"
    )
    # The UI's remaining cost is mostly per exchange (mounting and laying out the new
    # messages), not per token, so the decode time it adds says more than the ratio for
    # models of other speeds. Pairwise, over the n-1 token intervals of each reply.
    gaps = statistics.median(sorted(tokens)) - 1
    added = statistics.median(gaps / y - gaps / x for x, y in zip(tps["A"], tps["B"], strict=True))
    print(f"decode time added by the TUI per reply: median {1000 * added:.0f} ms")
    print(
        f"process CPU s per reply: headless {statistics.median(cpu['A']):.3f}, "
        f"TUI {statistics.median(cpu['B']):.3f} (TUI: whole round, Enter to settled)"
    )
    print(
        f"TUI: Enter to request start {1000 * statistics.median(delay):.0f} ms, Enter to reply"
        f" complete {1000 * statistics.median(done):.0f} ms (headless request to reply complete"
        f" {1000 * statistics.median(reply):.0f} ms); medians"
    )
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
