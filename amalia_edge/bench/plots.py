"""PNG charts for the README: tokens/s and J/token per quant type, one bar group per backend.

matplotlib is imported lazily with the non-interactive Agg backend (no display needed).
The PNG is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from amalia_edge.artifacts.atomic import atomic_write_bytes
from amalia_edge.bench.records import BenchRecord
from amalia_edge.errors import BenchError


def plot_records(
    records: Sequence[BenchRecord], path: str | os.PathLike[str], title: str | None = None
) -> None:
    """One PNG with a panel per test: tokens/s (left) and J/token (right) per quant × backend.

    J/token panels are drawn only when some record has power data; their absence is stated
    in the panel instead of drawing zeros.
    """
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
    fig, axes = plt.subplots(
        len(tests), 2, figsize=(11, 3.2 * len(tests)), squeeze=False, constrained_layout=True
    )
    width = 0.8 / max(1, len(backends))
    for row, test in enumerate(tests):
        for col, (metric, label) in enumerate(
            (("avg_ts", "tokens/s"), ("joules_per_token", "J/token"))
        ):
            ax = axes[row][col]
            any_value = False
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
                    if value is None:
                        continue
                    any_value = True
                    xs.append(qi + (bi - (len(backends) - 1) / 2) * width)
                    ys.append(value)
                    errs.append((rec.stddev_ts or 0.0) if metric == "avg_ts" and rec else 0.0)
                if xs:
                    ax.bar(xs, ys, width, yerr=errs, label=backend, capsize=3)
            ax.set_xticks(range(len(quants)), quants)
            ax.set_title(f"{test}: {label}")
            ax.set_ylabel(label)
            if not any_value:
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.5,
                    "no power data on this machine",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
            elif len(backends) > 1:
                ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
