"""``amalia-edge doctor [MODEL]``: what this machine is, what is wrong with it, what would run.

Prints the device table (:func:`amalia_edge.device.probe`), the doctor checks
(:mod:`amalia_edge.device.checks`, each failure with its fix), the backends the runtime
registry knows and whether each can run here, and, with MODEL, the runtime's selection
with its reasons. ``--json`` prints one JSON object with the same content.

The plain path imports no heavy library (llama.cpp, ONNX Runtime, TensorRT); ``--deep``
loads them to verify the CUDA builds really initialize. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from amalia_edge.device.checks import Check, run_checks
from amalia_edge.device.probe import DeviceInfo, probe

log = logging.getLogger(__name__)
GiB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="GGUF file or artifacts directory: also explain the backend choice",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="load llama.cpp, ONNX Runtime and TensorRT to verify their GPU builds",
    )
    parser.add_argument(
        "--ctx",
        type=int,
        default=None,
        help="context size for MODEL (2048, or the model's own when smaller)",
    )
    # The old name, hidden: --ctx is the name every other command uses.
    parser.add_argument("--n-ctx", dest="ctx", type=int, help=argparse.SUPPRESS)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def device_rows(info: DeviceInfo) -> list[tuple[str, str]]:
    """The device table as (label, value) rows."""
    rows: list[tuple[str, str]] = []
    if info.is_jetson:
        name = info.board.name if info.board else "unknown Jetson module"
        rows.append(("machine", f"{name} ({info.module_id or '?'}) — {info.model or '?'}"))
        rows.append(("L4T / JetPack", f"{info.l4t_release or '?'} / {info.jetpack or '?'}"))
    else:
        rows.append(("machine", f"{info.arch}, not a Jetson"))
    rows.append(
        (
            "CPU",
            f"{info.cpu_model or '?'} × {info.cores or '?'}"
            + (f" ({' '.join(info.simd)})" if info.simd else ""),
        )
    )
    for gpu in info.gpus:
        mem = "unified memory" if gpu.unified else _gib(gpu.memory_total)
        rows.append(("GPU", f"{gpu.name}, CUDA {gpu.cuda_cc or '?'}, {mem}"))
    if not info.gpus:
        rows.append(("GPU", "none found"))
    rows.append(
        (
            "memory",
            f"{_gib(info.mem_available)} available of {_gib(info.mem_total)}, "
            f"swap {_gib(info.swap_total)}",
        )
    )
    bw = (
        f"{info.memory_bandwidth / 1e9:.1f} GB/s ({info.memory_bandwidth_source})"
        if info.memory_bandwidth
        else "unknown"
    )
    rows.append(("bandwidth", bw))
    if info.is_jetson:
        clocks = {True: "on", False: "off", None: "unknown"}[info.jetson_clocks]
        rows.append(("power", f"{info.power_mode or 'unknown'}, jetson_clocks {clocks}"))
    rows.append(("fingerprint", info.fingerprint()))
    return rows


def backend_rows(
    info: DeviceInfo, *, probe_backends: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """Each registered backend and, when ``probe_backends``, whether it can run here.

    Probing imports each backend's library (llama_cpp, onnxruntime, tensorrt), so the plain
    doctor lists the registry without probing; ``--deep`` or a MODEL probes.
    Returns (rows, a note when the backends were not probed).
    """
    from amalia_edge.runtime import registry

    rows: list[dict[str, Any]] = []
    if not probe_backends:
        for name in registry.names():
            spec = registry.spec(name)
            rows.append(
                {"name": name, "ok": None, "reason": spec.description, "install_hint": None}
            )
        return rows, "not probed (heavy imports); `amalia-edge doctor --deep` probes each backend"
    for name, backend in registry.all_backends():
        if isinstance(backend, Exception):
            rows.append({"name": name, "ok": False, "reason": str(backend), "install_hint": None})
            continue
        try:
            availability = backend.probe(info)
        except Exception as exc:  # a broken backend must not take doctor down with it
            log.debug("probing %s failed", name, exc_info=True)
            rows.append(
                {
                    "name": name,
                    "ok": False,
                    "reason": f"probe failed: {type(exc).__name__}: {exc}",
                    "install_hint": None,
                }
            )
            continue
        rows.append(
            {
                "name": name,
                "ok": bool(availability.ok),
                "reason": availability.reason,
                "install_hint": availability.install_hint,
            }
        )
    return rows, None


def selection_for(model: str, info: DeviceInfo, n_ctx: int | None) -> Any:
    """The runtime's selection for MODEL on this device.

    ``n_ctx`` None: what ``generate`` would use (2048, capped at the model's training
    context). The runtime's own errors (bad model path, nothing fits) propagate: they are
    the answer.
    """
    from amalia_edge.runtime.artifacts import resolve_model
    from amalia_edge.runtime.model import default_n_ctx
    from amalia_edge.runtime.selection import select

    source = resolve_model(model)
    return select(source, info, default_n_ctx(source) if n_ctx is None else n_ctx)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj


def format_report(
    info: DeviceInfo,
    checks: list[Check],
    backends: list[dict[str, Any]],
    backend_note: str | None,
    selection: Any = None,
) -> str:
    out = ["Device"]
    out += [f"  {label:<15}{value}" for label, value in device_rows(info)]
    out.append("Checks")
    for c in checks:
        out.append(f"  {c.status:<5} {c.name:<28} {c.detail}")
        if c.fix and c.status in ("warn", "fail"):
            out.append(f"        fix: {c.fix}")
    out.append("Backends")
    for b in backends:
        mark = {True: "yes", False: "no", None: "-"}[b["ok"]]
        out.append(f"  {mark:<5} {b['name']:<28} {b['reason']}")
        if b["ok"] is False and b.get("install_hint"):
            out.append(f"        install: {b['install_hint']}")
    if backend_note:
        out.append(f"  {backend_note}")
    if selection is not None:
        out.append("Selection")
        table = getattr(selection, "format_table", None)
        text = table() if callable(table) else str(selection)
        out += [f"  {line}" for line in text.splitlines()]
    if info.notes:
        out.append("Notes")
        out += [f"  {n}" for n in info.notes]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from amalia_edge.device.bandwidth import apply_remembered

    info = probe(None)
    apply_remembered(info)  # what `amalia-edge bench` measured here, if it ran
    checks = run_checks(info, deep=args.deep)
    backends, note = backend_rows(info, probe_backends=args.deep or bool(args.model))
    selection = selection_for(args.model, info, args.ctx) if args.model else None
    if args.json:
        print(
            json.dumps(
                {
                    "device": info.to_dict(),
                    "checks": [c.to_dict() for c in checks],
                    "backends": backends,
                    "backends_note": note,
                    "selection": _jsonable(selection),
                },
                indent=2,
                default=str,
            )
        )
    else:
        report = format_report(info, checks, backends, note, selection)
        print(report)
    return 1 if any(c.status == "fail" for c in checks) else 0
