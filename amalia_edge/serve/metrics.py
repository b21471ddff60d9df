"""Prometheus metrics of the server (``GET /metrics``), on a registry of its own.

Counters count what clients received: a request is counted once it ends (``status`` is the
HTTP status it got), its tokens when its reply is complete. Power and energy come from
:mod:`amalia_edge.telemetry` (INA3221 rails on a Jetson, RAPL on x86); where no source is
readable the gauges are absent rather than 0 W.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalia_edge.runtime.events import Finished
    from amalia_edge.serve.engine import Engine
    from amalia_edge.telemetry import Monitor

# Buckets (s): TTFT from 10 ms (a cached prefix on a GPU) to 60 s (a long prompt on a CPU);
# inter-token latency from 1 ms (a tiny model) to 2 s (a 9B model on a loaded CPU).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class Metrics:
    def __init__(self, engine_ref: Any, monitor: Monitor | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self._engine_ref = engine_ref  # callable -> Engine | None (None while loading)
        self.monitor = monitor
        self.requests = Counter(
            "amalia_requests",
            "HTTP API requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "amalia_prompt_tokens", "prompt tokens of completed requests", registry=r
        )
        self.generated_tokens = Counter(
            "amalia_generated_tokens", "tokens generated for completed requests", registry=r
        )
        self.ttft = Histogram(
            "amalia_time_to_first_token_seconds",
            "request received to first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "amalia_inter_token_latency_seconds",
            "time between consecutive tokens of a reply",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.tps = Gauge(
            "amalia_decode_tokens_per_second",
            "decode tokens/s of the last finished request",
            registry=r,
        )
        Gauge("amalia_queue_depth", "requests waiting for a slot", registry=r).set_function(
            lambda: self._engine_value("queued")
        )
        Gauge("amalia_slots_busy", "slots decoding now", registry=r).set_function(
            lambda: self._engine_value("busy")
        )
        Gauge("amalia_slots", "slots (--parallel)", registry=r).set_function(
            lambda: self._engine_value("parallel")
        )
        self._lock = threading.Lock()
        self._joules = 0.0
        self._e_t: float | None = None
        if monitor is not None:
            r.register(_PowerCollector(self))

    def _engine_value(self, name: str) -> float:
        eng: Engine | None = self._engine_ref()
        if eng is None:
            return 0.0
        if name == "parallel":
            return float(eng.info.parallel)
        return float(getattr(eng, name))

    def watts(self) -> float | None:
        snap = self.monitor.latest() if self.monitor else None
        return None if snap is None else snap.power_w

    def energy_total(self) -> float | None:
        """Joules since start, integrated incrementally over the monitor's snapshots."""
        from amalia_edge.telemetry import energy_joules

        if self.monitor is None:
            return None
        with self._lock:
            snap = self.monitor.latest()
            if snap is None or snap.power_w is None:
                return None if self._joules == 0.0 else self._joules
            if self._e_t is None:
                self._e_t = snap.t
                return self._joules
            span = self.monitor.between(self._e_t - 5 * self.monitor.interval, snap.t)
            e = energy_joules(span, self._e_t, snap.t)
            if e is None:
                return None if self._joules == 0.0 else self._joules
            self._joules += e
            self._e_t = snap.t
            return self._joules

    def request_energy(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """(average W, J) over [t0, t1] from the monitor; (None, None) without a power source."""
        from amalia_edge.telemetry import energy_joules

        if self.monitor is None or t1 <= t0:
            return None, None
        pad = 2 * self.monitor.interval
        j = energy_joules(self.monitor.between(t0 - pad, t1 + pad), t0, t1)
        return (None, None) if j is None else (j / (t1 - t0), j)

    def observe(self, fin: Finished, token_times: list[float], t0: float) -> None:
        """A finished reply: its token counts and decode tokens/s (from ``fin``), its tokens'
        times (``t0``: when the request arrived)."""
        self.prompt_tokens.inc(fin.prompt_tokens)
        self.generated_tokens.inc(fin.completion_tokens)
        if token_times:
            self.ttft.observe(token_times[0] - t0)
            for a, b in itertools.pairwise(token_times):
                self.itl.observe(b - a)
        if fin.decode_tps > 0:
            self.tps.set(fin.decode_tps)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PowerCollector:
    """Watts now and joules since start; absent (not 0) while no power source is readable."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        w = self.metrics.watts()
        if w is not None:
            yield GaugeMetricFamily("amalia_power_watts", "total power of the board now", value=w)
        j = self.metrics.energy_total()
        if j is not None:
            yield CounterMetricFamily(
                "amalia_energy_joules", "energy since the server started (∫ power dt)", value=j
            )

    def describe(self) -> list[Any]:
        return []
