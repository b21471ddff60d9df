"""The live stats panel: backend, quant, speeds, TTFT, context, power, memory, temperature."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from amalia_edge.tui.i18n import Messages
from amalia_edge.tui.stats import (
    LiveStats,
    fmt_bytes,
    fmt_context,
    fmt_energy,
    fmt_power,
    fmt_rate,
    fmt_seconds,
    fmt_temp,
)


class StatsPanel(Vertical):
    """Shows one :class:`LiveStats` frame; :meth:`show` replaces it."""

    can_focus = False

    def __init__(self, msgs: Messages, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.msgs = msgs
        self.stats = LiveStats()

    def compose(self) -> ComposeResult:
        yield Label(self.msgs("stats.title"), classes="panel-title")
        yield Static(self._table(self.stats), id="stats-table")
        yield Label(self.msgs("stats.spark"), classes="spark-label")
        yield Sparkline([], id="stats-spark")

    def show(self, stats: LiveStats) -> None:
        self.stats = stats
        self.query_one("#stats-table", Static).update(self._table(stats))
        self.query_one("#stats-spark", Sparkline).data = list(stats.spark)

    def _table(self, s: LiveStats) -> Table:
        m = self.msgs
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        state = m(f"stats.state.{s.state}")
        mem = fmt_bytes(s.rss)
        if s.mem_used is not None:
            mem += f" / {fmt_bytes(s.mem_used)}"
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
