"""``amalia-edge power``: show or change the Jetson power mode and clocks.

Without options it prints the nvpmodel mode, this board's modes and whether jetson_clocks is
on. ``--set MODE`` and ``--clocks on|off`` change them: they need root, and ask before
changing anything unless ``--yes`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys

from amalia_edge.device.power import (
    PowerStatus,
    power_status,
    require_root,
    resolve_mode,
    set_clocks,
    set_mode,
)
from amalia_edge.errors import DeviceError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="mode",
        metavar="MODE",
        help="switch nvpmodel to MODE (name such as MAXN or id such as 0)",
    )
    parser.add_argument(
        "--clocks",
        choices=("on", "off"),
        help="lock clocks at the mode's maximum (jetson_clocks) or restore them",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask before changing")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def format_status(status: PowerStatus) -> str:
    clocks = {True: "on", False: "off", None: "unknown"}[status.jetson_clocks]
    mode = f"{status.mode} (id {status.mode_id})" if status.mode else "unknown"
    lines = [f"power mode     {mode}", f"jetson_clocks  {clocks}"]
    if status.modes:
        lines.append("modes")
        for m in status.modes:
            tags = [
                t
                for t, on in (
                    ("current", m.id == status.mode_id),
                    ("default", m.id == status.default_id),
                    ("fastest", m.name == status.fastest),
                )
                if on
            ]
            lines.append(f"  {m.id:>2}  {m.name:<14} {', '.join(tags)}".rstrip())
    if status.is_fastest is False:
        lines.append(
            f"note: benchmarks want {status.fastest} with jetson_clocks on "
            f"(sudo amalia-edge power --set {status.fastest} --clocks on)"
        )
    lines += [f"note: {n}" for n in status.notes]
    return "\n".join(lines)


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise DeviceError(
            "refusing to change power settings without confirmation",
            fix="run in a terminal to be asked, or pass --yes",
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes", "s", "sim")


def run(args: argparse.Namespace) -> int:
    status = power_status(None)
    if status.mode is None and not status.modes and (args.mode or args.clocks):
        raise DeviceError(
            "no nvpmodel on this machine (not a Jetson?)",
            fix="run `amalia-edge power` on the Jetson itself",
        )
    if args.mode is not None:
        target = resolve_mode(args.mode, status.modes)
        if target.id == status.mode_id:
            print(f"already in {target.name}", file=sys.stderr)
        else:
            # Root first: asking a question whose answer cannot be acted on wastes the user's time.
            require_root("changing the power mode", f"amalia-edge power --set {target.name}")
            if not _confirm(f"switch power mode {status.mode} -> {target.name}?", args.yes):
                print("not changed", file=sys.stderr)
                return 1
            status, reboot = set_mode(target.id, None)
            if reboot:
                print(
                    f"{target.name} takes effect after a reboot (nvpmodel asked for one; "
                    "not rebooted)",
                    file=sys.stderr,
                )
    if args.clocks is not None:
        want = args.clocks == "on"
        if status.jetson_clocks is want:
            print(f"jetson_clocks already {args.clocks}", file=sys.stderr)
        else:
            require_root("changing the clocks", f"amalia-edge power --clocks {args.clocks}")
            if not _confirm(f"turn jetson_clocks {args.clocks}?", args.yes):
                print("not changed", file=sys.stderr)
                return 1
            status = set_clocks(want, None)
    print(json.dumps(status.to_dict(), indent=2) if args.json else format_status(status))
    return 0
