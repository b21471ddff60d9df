"""Telemetry: power, thermal, memory and load samplers behind one interface.

```python
from amalia_edge.telemetry import default_monitor
mon = default_monitor(root="/", interval=0.1)
mon.start()            # -> [SourceStatus(name, available, reason), ...]
mon.latest()           # -> Snapshot | None (never None after start())
samples = mon.stop()   # -> list[Snapshot], oldest first
```

``Snapshot`` fields: ``t`` (perf_counter s, same clock as runtime events), ``power_w``
(total W or ``None`` when no power source is readable), ``power_label`` (what the total sums:
``module_rails_sum`` on AGX Orin, ``VDD_IN`` where a board has an input rail,
``rapl_package_sum`` on x86), ``rails`` {name: W}, ``cpu_percent``, ``mem_used`` (bytes),
``rss`` (bytes, this process), ``temps`` {zone: °C}, ``gpu_load`` (%), ``gpu_freq`` (Hz).
Energy over a span: :func:`energy_joules` (trapezoidal ∫ power dt over the snapshots).
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Sequence

from amalia_edge.telemetry.base import Monitor, Reading, Sampler, Snapshot, SourceStatus
from amalia_edge.telemetry.ina3221 import INA3221Sampler
from amalia_edge.telemetry.nvml import NvmlSampler
from amalia_edge.telemetry.rapl import RaplSampler
from amalia_edge.telemetry.system import SystemSampler
from amalia_edge.telemetry.tegrastats import TegrastatsSampler

__all__ = [
    "FallbackSampler",
    "Monitor",
    "NvmlSampler",
    "Reading",
    "Sampler",
    "Snapshot",
    "SourceStatus",
    "counter_series",
    "default_monitor",
    "default_samplers",
    "energy_joules",
    "integrate",
    "interpolate",
    "power_series",
    "power_stats",
]


class FallbackSampler(Sampler):
    """Use ``primary`` when it opens, else ``fallback``; the status says which and why."""

    def __init__(self, name: str, primary: Sampler, fallback: Sampler) -> None:
        self.name = name
        self.primary, self.fallback = primary, fallback
        self.chosen: Sampler | None = None

    def open(self) -> SourceStatus:
        st = self.primary.open()
        if st.available:
            self.chosen = self.primary
            return SourceStatus(self.name, True, f"{st.name}: {st.reason}")
        st2 = self.fallback.open()
        if st2.available:
            self.chosen = self.fallback
            return SourceStatus(self.name, True, f"{st2.name} ({st.name} unavailable: {st.reason})")
        return SourceStatus(self.name, False, f"{st.reason}; {st2.name}: {st2.reason}")

    def read(self) -> Reading:
        if self.chosen is None:
            raise OSError("no source opened")
        return self.chosen.read()

    def close(self) -> None:
        self.primary.close()
        self.fallback.close()


def default_samplers(
    root: str | os.PathLike[str] = "/", interval: float = 0.1, pid: int | None = None
) -> list[Sampler]:
    """Samplers in priority order: Jetson rails (INA3221, else tegrastats), NVIDIA GPUs (NVML,
    off a Jetson), RAPL, system. The first that gives a total is the snapshot's ``power_w``."""
    return [
        FallbackSampler(
            "jetson_power", INA3221Sampler(root), TegrastatsSampler(interval=interval, root=root)
        ),
        NvmlSampler(root),
        RaplSampler(root),
        SystemSampler(root, pid=pid),
    ]


def default_monitor(
    root: str | os.PathLike[str] = "/",
    interval: float = 0.1,
    pid: int | None = None,
    max_samples: int = 50_000,
) -> Monitor:
    """A :class:`Monitor` over :func:`default_samplers` (not started)."""
    return Monitor(
        default_samplers(root, interval, pid), interval=interval, max_samples=max_samples
    )


def integrate(points: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """∫ v dt over [t0, t1] for time-sorted (t, v) points, linear between points (trapezoids).

    The window is clipped to the points' span; None when it holds no span of data.
    """
    if len(points) < 2:
        return None
    lo, hi = max(t0, points[0][0]), min(t1, points[-1][0])
    if hi <= lo:
        return None
    inner = [(t, v) for t, v in points if lo < t < hi]
    seq = [(lo, interpolate(points, lo)), *inner, (hi, interpolate(points, hi))]
    return sum((tb - ta) * (va + vb) / 2 for (ta, va), (tb, vb) in itertools.pairwise(seq))


def interpolate(points: Sequence[tuple[float, float]], t: float) -> float:
    """The value at ``t`` of the piecewise-linear signal through time-sorted ``points``."""
    i = bisect.bisect_left(points, (t, float("-inf")))
    if i <= 0:
        return points[0][1]
    if i >= len(points):
        return points[-1][1]
    (ta, va), (tb, vb) = points[i - 1], points[i]
    return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)


def power_series(samples: Sequence[Snapshot], rail: str | None = None) -> list[tuple[float, float]]:
    """(t, W) points of the total (``rail=None``) or of one rail, skipping samples without it.

    When every sample with a total also carries its source's energy counter
    (``Snapshot.energy_j``, NVML), the total's series is the counter's average power over
    each interval between samples, as a step (two points per interval): its integral between
    two sample times is then exactly the counter's difference, and any window integrates to
    the counter with constant power assumed inside the intervals it cuts.
    """
    if rail is None:
        counted = counter_series(samples)
        if counted is not None:
            return counted
        pts = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    else:
        pts = [(s.t, s.rails[rail]) for s in samples if rail in s.rails]
    pts.sort()
    return pts


def counter_series(samples: Sequence[Snapshot]) -> list[tuple[float, float]] | None:
    """The energy counter as step (t, W) points, or None where it cannot be trusted whole."""
    pts = sorted((s.t, s.energy_j) for s in samples if s.power_w is not None)
    if len(pts) < 2 or any(e is None for _, e in pts):
        return None
    out: list[tuple[float, float]] = []
    for (ta, ea), (tb, eb) in itertools.pairwise(pts):
        assert ea is not None and eb is not None
        if tb <= ta or eb < ea:  # same stamp, or the counter reset (driver reload)
            return None
        watts = (eb - ea) / (tb - ta)
        out += [(ta, watts), (tb, watts)]
    return out


def energy_joules(
    samples: Sequence[Snapshot], t0: float | None = None, t1: float | None = None
) -> float | None:
    """∫ power dt (trapezoidal) over ``samples`` clipped to [t0, t1]; None if no power data.

    Power between samples is linearly interpolated, also at the window's edges, so a
    measurement window need not fall on sample times (but must lie between two samples to be
    fully counted: the result covers only the part of the window the samples span).
    """
    pts = power_series(samples)
    if len(pts) < 2:
        return None
    return integrate(pts, pts[0][0] if t0 is None else t0, pts[-1][0] if t1 is None else t1)


def power_stats(
    samples: Sequence[Snapshot], t0: float | None = None, t1: float | None = None
) -> dict[str, dict[str, float]]:
    """Average and peak watts per rail (and ``total``) over samples in [t0, t1]."""
    sel = [s for s in samples if (t0 is None or s.t >= t0) and (t1 is None or s.t <= t1)]
    out: dict[str, dict[str, float]] = {}
    series: dict[str, list[float]] = {}
    for s in sel:
        if s.power_w is not None:
            series.setdefault("total", []).append(s.power_w)
        for name, w in s.rails.items():
            series.setdefault(name, []).append(w)
    for name, vals in series.items():
        out[name] = {"avg": sum(vals) / len(vals), "peak": max(vals), "n": float(len(vals))}
    return out
