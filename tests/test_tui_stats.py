"""The stats tracker: numbers derived from the event stream and telemetry, and their format."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.tui.stats import (
    SPARK_PERIOD,
    StatsTracker,
    fmt_bytes,
    fmt_context,
    fmt_energy,
    fmt_rate,
    fmt_seconds,
)


@dataclass
class Snap:
    power_w: float | None = None
    mem_used: int | None = None
    rss: int | None = None
    temps: dict[str, float] = field(default_factory=dict)


def _reply(n: int, t0: float = 10.0, step: float = 0.1) -> list:
    events: list = [Started("llama.cpp", "m.gguf", 20, 512, t0), PromptProcessed(20, 0.5, t0 + 0.5)]
    events += [TokenEvent("x", 1, i, t0 + 1.0 + step * i) for i in range(n)]
    t_end = t0 + 1.0 + step * (n - 1)
    events.append(Finished("stop", "x" * n, 20, n, t0, t0 + 1.0, t_end, 0.5))
    return events


def test_timings_come_from_the_events() -> None:
    tr = StatsTracker()
    events = _reply(11)
    for ev in events[:3]:
        tr.feed(ev)
    s = tr.stats
    assert s.state == "generating" and s.backend == "llama.cpp" and s.n_ctx == 512
    assert s.prompt_tps == pytest.approx(40.0) and s.ttft == pytest.approx(1.0)
    assert s.decode_tps is None and s.ctx_used == 21
    for ev in events[3:-1]:
        tr.feed(ev)
    assert tr.stats.decode_tps == pytest.approx(10.0)  # 10 intervals of 0.1 s
    assert tr.stats.tokens == 11
    # a sparkline point each time SPARK_PERIOD (0.25 s) has passed: every 3rd token here
    assert SPARK_PERIOD == 0.25
    assert tr.stats.spark == pytest.approx((10.0, 10.0, 10.0))
    tr.feed(events[-1])
    assert tr.stats.state == "idle" and tr.stats.ctx_used == 31
    assert tr.stats.decode_tps == pytest.approx(events[-1].decode_tps)


def test_energy_per_token_integrates_power_over_the_reply() -> None:
    tr = StatsTracker()
    tr.observe(Snap(power_w=99.0), 0.0)  # before the reply: not counted
    events = _reply(10)
    tr.feed(events[0])
    tr.observe(
        Snap(power_w=20.0, rss=2 << 30, mem_used=8 << 30, temps={"cpu": 51.0, "gpu": 55.5}), 1.0
    )
    for ev in events[1:-1]:
        tr.feed(ev)
    tr.observe(Snap(power_w=20.0), 3.0)  # 2 s at 20 W = 40 J over 10 tokens
    assert tr.stats.joules_per_token == pytest.approx(4.0)
    assert tr.stats.power_w == 20.0
    tr.feed(events[-1])
    assert tr.stats.joules_per_token == pytest.approx(4.0)


def test_memory_and_temperature_and_missing_sensors() -> None:
    tr = StatsTracker()
    tr.observe(Snap(rss=3 << 30, mem_used=10 << 30, temps={"cpu": 48.0, "gpu": 61.25}), 1.0)
    assert (tr.stats.rss, tr.stats.mem_used, tr.stats.temp_c) == (3 << 30, 10 << 30, 61.25)
    tr.observe(Snap(), 2.0)  # a machine without power rails or thermal zones
    assert (
        tr.stats.power_w is None and tr.stats.temp_c is None and tr.stats.joules_per_token is None
    )
    tr.observe(None, 3.0)  # no monitor at all: nothing changes
    assert tr.stats.power_w is None


def test_formatting() -> None:
    assert fmt_rate(None) == "—" and fmt_rate(12.345) == "12.3 tok/s"
    assert fmt_seconds(0.2345) == "234 ms" and fmt_seconds(1.5) == "1.50 s"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 << 30) == "3.0 GiB"
    assert fmt_bytes(1536 << 20) == "1.5 GiB" and fmt_bytes(10 << 20) == "10.0 MiB"
    assert fmt_context(100, 2048) == "100/2048 (5%)" and fmt_context(None, 2048) == "—"
    assert fmt_energy(0.5) == "0.50 J/tok"


def test_prompt_speed_is_the_prefills_during_and_after_the_reply() -> None:
    """With a cached prefix the backend evaluates 19 of 155 prompt tokens (measured on the
    demo model, second turn); the panel shows 19 / seconds, not 155 / seconds at the end."""
    tr = StatsTracker()
    tr.feed(Started("llama.cpp", "m.gguf", 155, 1024, 10.0))
    tr.feed(PromptProcessed(19, 0.0025, 10.0025))
    tr.feed(TokenEvent("x", 1, 0, 10.003))
    live = tr.stats.prompt_tps
    assert live == pytest.approx(19 / 0.0025)
    tr.feed(Finished("stop", "x", 155, 1, 10.0, 10.003, 10.003, 0.0025))
    assert tr.stats.prompt_tps == pytest.approx(live)


def test_new_reply_and_new_chat_clear_the_previous_numbers() -> None:
    tr = StatsTracker()
    for ev in _reply(5):
        tr.feed(ev)
    done = tr.stats
    assert done.ttft is not None and done.ctx_used == 25
    nxt = done.for_new_reply()
    assert (nxt.ttft, nxt.prompt_tps, nxt.decode_tps, nxt.spark) == (None, None, None, ())
    assert nxt.ctx_used == 25 and nxt.n_ctx == 512  # the context still holds the chat
    assert done.for_new_chat().ctx_used is None


def test_memory_is_the_models_share_of_what_is_available() -> None:
    from amalia_edge.tui.stats import LiveStats, fmt_memory

    s = LiveStats(rss=126 * 2**20, mem_used=1700 * 2**20, mem_total=2000 * 2**20)
    # available to the model: its own 126 MiB + the 300 MiB the machine has left
    assert s.mem_share == pytest.approx(126 / 426)
    assert fmt_memory(s.rss, s.mem_share) == "126.0 MiB (30%)"
    assert fmt_memory(s.rss, None) == "126.0 MiB" and fmt_memory(None, None) == "—"
