"""PNG charts for reports: tokens/s (and J/token where power was measured) per quant type.

One row per test, bars grouped by quant type with one bar per backend, each bar labelled
with its value and ±1 standard deviation as an error bar. The title names the model, the
device and the date the benchmark ran; a footnote says how it ran. J/token panels are drawn
only when some record has power data (a line under the chart says so otherwise).

matplotlib is imported lazily with the non-interactive Agg backend (no display needed).
The PNG is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from amalia_edge.artifacts.atomic import atomic_write_bytes
from amalia_edge.bench.records import BenchRecord
from amalia_edge.errors import BenchError


def device_label(rec: BenchRecord) -> str:
    """The machine a record ran on, as a reader knows it (board, else CPU [+ GPU])."""
    if rec.board:
        mode = f", {rec.power_mode}" if rec.power_mode else ""
        return f"{rec.board}{mode}"
    parts = [p for p in (rec.cpu_info, rec.gpu_info) if p]
    return " + ".join(parts) or "unknown device"


def model_label(rec: BenchRecord, model: str | None = None) -> str:
    """``model`` (what the user passed) or the file's stem, plus size and architecture."""
    import pathlib

    # The name a person gave, without its folders (a cache path would fill the title).
    name = pathlib.Path(model).name if model else pathlib.Path(rec.model_filename).stem
    name = name or "model"
    kind = " ".join(w for w in rec.model_type.split() if w != rec.quant)
    return f"{name} ({kind})" if kind else name


def chart_title(records: Sequence[BenchRecord], model: str | None = None) -> str:
    r0 = records[0]
    date = (r0.test_time or "")[:10] or "undated"
    return f"{model_label(r0, model)} on {device_label(r0)}, {date}"


def _footnote(records: Sequence[BenchRecord], power: bool) -> str:
    r0 = records[0]
    backends = ", ".join(dict.fromkeys(f"{r.backend} {r.backend_version or ''}" for r in records))
    text = (
        f"{backends.strip()}; {r0.repetitions} runs per test after {r0.warmup} warm-up; "
        "bars: mean, whiskers: ±1 sd; amalia-edge "
        f"{r0.amalia_edge_version}{' (' + r0.git_commit + ')' if r0.git_commit else ''}"
    )
    if not power:
        text += "\nJ/token not shown: no power readings on this machine"
    return text


def build_figure(
    records: Sequence[BenchRecord], title: str | None = None, model: str | None = None
) -> Any:
    """The matplotlib Figure (tests inspect it; :func:`plot_records` saves it)."""
    if not records:
        raise BenchError("nothing to plot", fix="run at least one test successfully")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "matplotlib is not installed", fix="pip install 'amalia-edge[plots]' or drop --plot"
        ) from None

    tests = list(dict.fromkeys(r.test for r in records))
    quants = list(dict.fromkeys(r.quant or "?" for r in records))
    backends = list(dict.fromkeys(r.backend for r in records))
    power = any(r.joules_per_token is not None for r in records)
    metrics = [("avg_ts", "tokens/s")] + ([("joules_per_token", "J/token")] if power else [])
    width_in = max(8.0, (1.3 * len(quants) * max(1, len(backends)) + 2.5) * len(metrics))
    fig, axes = plt.subplots(
        len(tests),
        len(metrics),
        figsize=(min(width_in, 16.0), 2.9 * len(tests) + 1.3),
        squeeze=False,
        layout="constrained",
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(backends))
    for row, test in enumerate(tests):
        for col, (metric, unit) in enumerate(metrics):
            ax = axes[row][col]
            for bi, backend in enumerate(backends):
                xs, ys, errs = [], [], []
                for qi, q in enumerate(quants):
                    rec = next(
                        (
                            r
                            for r in records
                            if r.test == test and r.backend == backend and (r.quant or "?") == q
                        ),
                        None,
                    )
                    value = getattr(rec, metric) if rec is not None else None
                    if rec is None or value is None:
                        continue
                    xs.append(qi + (bi - (len(backends) - 1) / 2) * width)
                    ys.append(value)
                    errs.append(rec.stddev_ts or 0.0)
                if not xs:
                    continue
                bars = ax.bar(
                    xs,
                    ys,
                    width * 0.9,
                    yerr=errs if metric == "avg_ts" else None,  # sd is known for tokens/s
                    capsize=3,
                    label=backend,
                    color=colors[bi % len(colors)],
                )
                fmt = "{:,.0f}" if metric == "avg_ts" else "{:.3g}"
                # Inside the bar: above it the label would collide with the error bar.
                ax.bar_label(
                    bars,
                    labels=[fmt.format(y) for y in ys],
                    label_type="center",
                    fontsize=8,
                    color="white",
                    fontweight="bold",
                )
            # Ticks at the group centres, always: the bars are centred on them.
            ax.set_xticks(range(len(quants)), quants)
            ax.set_xlim(-0.5, len(quants) - 0.5)
            ax.margins(y=0.08)
            ax.set_title(f"{test}: {unit}", fontsize=10)
            ax.set_ylabel(unit)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            if len(backends) > 1 and row == 0 and col == 0:
                ax.legend(fontsize="small", title="backend", title_fontsize="small")
    # wrap=True: matplotlib breaks a line that would leave the figure (a long model or CPU name)
    fig.suptitle(title or chart_title(records, model), fontsize=12, wrap=True)
    fig.supxlabel(_footnote(records, power), fontsize=8, color="0.35", wrap=True)
    return fig


def plot_records(
    records: Sequence[BenchRecord],
    path: str | os.PathLike[str],
    title: str | None = None,
    model: str | None = None,
) -> None:
    """Write the chart of :func:`build_figure` as a PNG. ``title`` None: model, device, date."""
    import matplotlib.pyplot as plt

    fig = build_figure(records, title=title, model=model)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
