"""The live stats panel: backend, quant, speeds, TTFT, context, power, memory, temperature."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label, Sparkline

from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.stats import (
    LiveStats,
    fmt_context,
    fmt_energy,
    fmt_memory,
    fmt_power,
    fmt_rate,
    fmt_seconds,
    fmt_temp,
)

ROW_LABELS = (
    "stats.state",
    "stats.backend",
    "stats.quant",
    "stats.prompt_tps",
    "stats.decode_tps",
    "stats.ttft",
    "stats.context",
    "stats.power",
    "stats.energy",
    "stats.memory",
    "stats.temp",
)


class StatsTable(Widget):
    """The panel's rows. Its height is fixed by the stylesheet and an update only repaints
    it (``refresh()``, no layout), because a layout pass over the whole screen several times
    a second would take CPU from the decoding thread (measured: 12 ms per update as a
    ``Static`` whose ``update()`` re-lays out the screen)."""

    def __init__(self, msgs: Messages, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.msgs = msgs
        self.stats = LiveStats()

    def show(self, stats: LiveStats) -> None:
        if stats != self.stats:
            self.stats = stats
            self.refresh()

    def _label_width(self) -> int:
        return max(len(self.msgs(k)) for k in ROW_LABELS)

    def render(self) -> Table:
        return self._table(self.stats)

    def _table(self, s: LiveStats) -> Table:
        m = self.msgs
        table = Table.grid(padding=(0, 1))
        # The labels keep their width; a long value is cut instead ("Back…" read as nothing).
        table.add_column(style="bold", no_wrap=True, min_width=self._label_width())
        table.add_column(no_wrap=True, overflow="ellipsis")
        state = m(f"stats.state.{s.state}")
        mem = fmt_memory(s.rss, s.mem_share)
        rows = (
            (m("stats.state"), state),
            (m("stats.backend"), s.backend or "—"),
            (m("stats.quant"), s.quant or "—"),
            (m("stats.prompt_tps"), fmt_rate(s.prompt_tps)),
            (m("stats.decode_tps"), fmt_rate(s.decode_tps)),
            (m("stats.ttft"), fmt_seconds(s.ttft)),
            (m("stats.context"), fmt_context(s.ctx_used, s.n_ctx)),
            (m("stats.power"), fmt_power(s.power_w)),
            (m("stats.energy"), fmt_energy(s.joules_per_token)),
            (m("stats.memory"), mem),
            (m("stats.temp"), fmt_temp(s.temp_c)),
        )
        for name, value in rows:
            table.add_row(name, value)
        return table


class StatsPanel(Vertical):
    """Shows one :class:`LiveStats` frame; :meth:`show` replaces it."""

    can_focus = False

    def __init__(self, msgs: Messages, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.msgs = msgs
        self.table = StatsTable(msgs, id="stats-table")
        self.spark = Sparkline([], id="stats-spark")

    @property
    def stats(self) -> LiveStats:
        return self.table.stats

    def compose(self) -> ComposeResult:
        yield Label(self.msgs("stats.title"), classes="panel-title")
        yield self.table
        yield Label(self.msgs("stats.spark"), classes="spark-label")
        yield self.spark

    def show(self, stats: LiveStats) -> None:
        self.table.show(stats)
        if tuple(self.spark.data or ()) != stats.spark:
            self.spark.data = list(stats.spark)
