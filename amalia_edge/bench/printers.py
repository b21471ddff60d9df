"""Printers for benchmark records: Markdown (default), CSV, JSON and JSONL.

As in llama-bench, one record type and several printers: ``json`` is an array of records,
``jsonl`` one record per line, ``csv`` every field as a column (lists and dicts as JSON
text), ``md`` a readable table of the fields people compare.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from amalia_edge.bench.records import FIELDS, BenchRecord
from amalia_edge.errors import BenchError

FORMATS = ("md", "csv", "json", "jsonl")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    return v


def to_json(records: Sequence[BenchRecord]) -> str:
    return json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False) + "\n"


def to_jsonl(records: Sequence[BenchRecord]) -> str:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def to_csv(records: Sequence[BenchRecord]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for r in records:
        d = r.to_dict()
        w.writerow(
            [
                json.dumps(d[k], ensure_ascii=False)
                if isinstance(d[k], (list, dict))
                else ("" if d[k] is None else d[k])
                for k in FIELDS
            ]
        )
    return buf.getvalue()


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _ts(r: BenchRecord) -> str:
    if r.avg_ts is None:
        return "—"
    return f"{r.avg_ts:.2f} ± {r.stddev_ts or 0:.2f}"


# (header, cell) per column of the Markdown table, in order.
MD_COLUMNS: tuple[tuple[str, Callable[[BenchRecord], str]], ...] = (
    ("model", lambda r: r.model_type or r.model_filename),
    ("quant", lambda r: r.quant or "—"),
    ("size", lambda r: _size(r.model_size)),
    ("backend", lambda r: r.backend),
    ("test", lambda r: r.test),
    ("t/s", _ts),
    ("TTFT ms", lambda r: _num(r.ttft_ms, "{:.1f}")),
    (
        "ITL p50/p90/p99 ms",
        lambda r: (
            "—"
            if r.itl_p50_ms is None
            else f"{r.itl_p50_ms:.1f}/{r.itl_p90_ms:.1f}/{r.itl_p99_ms:.1f}"
        ),
    ),
    ("E2E ms", lambda r: _num(r.e2e_ms, "{:.1f}")),
    (
        "avg/peak W",
        lambda r: (
            "—" if r.power_avg_w is None else f"{r.power_avg_w:.1f}/{r.power_peak_w or 0:.1f}"
        ),
    ),
    ("J/token", lambda r: _num(r.joules_per_token, "{:.4f}")),
    ("tokens/J", lambda r: _num(r.tokens_per_joule, "{:.1f}")),
    ("peak RSS", lambda r: _size(r.peak_rss)),
    (
        "roofline",
        lambda r: "—" if r.roofline_fraction is None else f"{100 * r.roofline_fraction:.0f}%",
    ),
)


def to_markdown(records: Sequence[BenchRecord]) -> str:
    """A Markdown table and, under it, the environment and power-source notes once."""
    head = [h for h, _ in MD_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in records:
        lines.append("| " + " | ".join(cell(r) for _, cell in MD_COLUMNS) + " |")
    if records:
        r0 = records[0]
        env = [
            f"board: {r0.board or 'not a Jetson'}",
            f"cpu: {r0.cpu_info or '?'}",
        ]
        if r0.l4t or r0.jetpack:
            env.append(f"L4T {r0.l4t or '?'} / JetPack {r0.jetpack or '?'}")
        if r0.power_mode is not None:
            env.append(f"power mode: {r0.power_mode}")
        if r0.jetson_clocks is not None:
            env.append(f"jetson_clocks: {'on' if r0.jetson_clocks else 'off'}")
        if r0.n_threads:
            env.append(f"threads: {r0.n_threads}")
        env.append(f"amalia-edge {r0.amalia_edge_version} ({r0.git_commit or 'no git'})")
        lines += ["", "_" + "; ".join(env) + "_"]
        power = r0.power_label or "none readable here"
        srcs = "; ".join(r0.telemetry_sources)
        lines.append(f"_power: {power}. telemetry: {srcs}_")
        bw = r0.memory_bandwidth
        if bw:
            lines.append(
                f"_roofline vs {bw / 1e9:.1f} GB/s memory bandwidth "
                f"({r0.memory_bandwidth_source}); r={r0.repetitions}, warm-up {r0.warmup}_"
            )
        for note in dict.fromkeys(n for r in records for n in r.notes):
            lines.append(f"_note: {note}_")
    return "\n".join(lines) + "\n"


PRINTERS: dict[str, Callable[[Sequence[BenchRecord]], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "json": to_json,
    "jsonl": to_jsonl,
}


def render(records: Sequence[BenchRecord], fmt: str = "md") -> str:
    try:
        return PRINTERS[fmt](records)
    except KeyError:
        raise BenchError(
            f"unknown output format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}"
        ) from None


def load_records(text: str) -> list[BenchRecord]:
    """Records back from JSON (array) or JSONL text."""
    text = text.strip()
    if not text:
        return []
    data = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    return [BenchRecord.from_dict(_jsonable(d)) for d in data]


def main(argv: list[str] | None = None) -> int:
    """``python -m amalia_edge.bench.printers FILE.json[l] [md|csv|json|jsonl]``: re-render."""
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print(
            "usage: python -m amalia_edge.bench.printers RESULTS.json[l] [md|csv|json|jsonl]",
            file=sys.stderr,
        )
        return 2
    records = load_records(Path(args[0]).read_text(encoding="utf-8"))
    sys.stdout.write(render(records, args[1] if len(args) > 1 else "md"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
