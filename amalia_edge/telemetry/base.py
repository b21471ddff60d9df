"""Sampler interface and the background-thread monitor every telemetry consumer uses.

A :class:`Sampler` wraps one source (INA3221 rails, tegrastats, RAPL, psutil + sysfs). It
discovers what it can read once in :meth:`Sampler.open`, which never raises and returns a
:class:`SourceStatus`; afterwards :meth:`Sampler.read` reads only the files it found. A source
that cannot be read is *unavailable, with the reason* — its values are ``None`` or absent in
every :class:`Snapshot`, never zero.

:class:`Monitor` runs the samplers in one daemon thread at a fixed interval and keeps every
:class:`Snapshot`; ``start()`` / ``latest()`` / ``stop()`` are safe to call from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceStatus:
    """Whether a telemetry source can be read here, and if not, why (e.g. permission denied)."""

    name: str
    available: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {'available' if self.available else 'unavailable'}" + (
            f" ({self.reason})" if self.reason else ""
        )


@dataclass
class Reading:
    """What one sampler contributes to a snapshot; ``None`` / empty means "not measured"."""

    rails: dict[str, float] = field(default_factory=dict)  # rail name -> watts
    power_w: float | None = None  # this source's total (see power_label for what it sums)
    power_label: str | None = None
    cpu_percent: float | None = None
    mem_used: int | None = None
    rss: int | None = None
    temps: dict[str, float] = field(default_factory=dict)  # zone -> degrees C
    gpu_load: float | None = None  # percent, 0..100
    gpu_freq: int | None = None  # Hz
    # Cumulative joules from a hardware energy counter behind power_w (NVML's total energy),
    # counted from when the source opened; None where the source has no counter.
    energy_j: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """One sample of the machine at ``t`` (``time.perf_counter()`` seconds, like the events).

    ``power_w`` is the total of the first power source that gave one (INA3221 module rail sum,
    else tegrastats' rail sum, else RAPL package sum); ``power_label`` names what it sums.
    ``None`` means no power source is readable here — not 0 W.
    """

    t: float
    power_w: float | None = None
    power_label: str | None = None
    rails: Mapping[str, float] = field(default_factory=dict)
    cpu_percent: float | None = None
    mem_used: int | None = None
    rss: int | None = None
    temps: Mapping[str, float] = field(default_factory=dict)
    gpu_load: float | None = None
    gpu_freq: int | None = None
    energy_j: float | None = None  # the power source's energy counter (J), see Reading

    def to_dict(self) -> dict[str, object]:
        return {
            "t": self.t,
            "power_w": self.power_w,
            "power_label": self.power_label,
            "rails": dict(self.rails),
            "cpu_percent": self.cpu_percent,
            "mem_used": self.mem_used,
            "rss": self.rss,
            "temps": dict(self.temps),
            "gpu_load": self.gpu_load,
            "gpu_freq": self.gpu_freq,
            "energy_j": self.energy_j,
        }


class Sampler(ABC):
    """One telemetry source. Subclasses set ``name`` and implement open/read."""

    name: str = "sampler"

    @abstractmethod
    def open(self) -> SourceStatus:
        """Discover the files/processes to read, once. Never raises: unavailability is data."""

    @abstractmethod
    def read(self) -> Reading:
        """Read the current values. May raise ``OSError``; the monitor then marks it unavailable."""

    def close(self) -> None:  # noqa: B027 - most samplers hold nothing to release
        """Release processes or handles; safe to call twice."""


def merge(t: float, readings: Iterable[Reading]) -> Snapshot:
    """Fold readings (in sampler priority order) into one snapshot; the first total wins."""
    rails: dict[str, float] = {}
    temps: dict[str, float] = {}
    power_w: float | None = None
    power_label: str | None = None
    energy_j: float | None = None  # belongs to the source whose total won
    values: dict[str, float | int | None] = dict.fromkeys(
        ("cpu_percent", "mem_used", "rss", "gpu_load", "gpu_freq")
    )
    for r in readings:
        for name, watts in r.rails.items():
            rails.setdefault(name, watts)
        for name, deg in r.temps.items():
            temps.setdefault(name, deg)
        if power_w is None and r.power_w is not None:
            power_w, power_label, energy_j = r.power_w, r.power_label, r.energy_j
        for key in values:
            if values[key] is None:
                values[key] = getattr(r, key)
    return Snapshot(
        t=t,
        power_w=power_w,
        power_label=power_label,
        rails=rails,
        temps=temps,
        cpu_percent=values["cpu_percent"],
        mem_used=None if values["mem_used"] is None else int(values["mem_used"]),
        rss=None if values["rss"] is None else int(values["rss"]),
        gpu_load=values["gpu_load"],
        gpu_freq=None if values["gpu_freq"] is None else int(values["gpu_freq"]),
        energy_j=energy_j,
    )


class Monitor:
    """Run samplers in a background thread every ``interval`` seconds and keep the snapshots.

    ``start()`` opens every sampler (discovery happens here, not per tick), takes one sample
    synchronously so that ``latest()`` is never empty after it, and starts the thread.
    ``stop()`` ends the thread (within one interval plus one read), closes the samplers and
    returns every snapshot in time order. A sampler whose read raises ``OSError`` is dropped
    for the rest of the run and its status says why.

    Memory is bounded: past ``max_samples`` (50 000 = 83 min at 0.1 s) the oldest half is
    dropped, so a chat left open for days does not grow; consumers that integrate over a
    window (the benchmark) do so right after the window ends.
    """

    def __init__(
        self, samplers: Sequence[Sampler], interval: float = 0.1, max_samples: int = 50_000
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = float(interval)
        self._samplers = list(samplers)
        self._active: list[Sampler] = []
        self._status: dict[str, SourceStatus] = {}
        self._samples: list[Snapshot] = []
        self._max = max_samples
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> list[SourceStatus]:
        """Open the samplers, take a first sample, start sampling; return the sources' status."""
        if self._thread is not None:
            raise RuntimeError("monitor already started")
        self._active = []
        for s in self._samplers:
            try:
                st = s.open()
            except Exception as exc:  # a sampler bug must not take the benchmark down
                st = SourceStatus(s.name, False, f"{type(exc).__name__}: {exc}")
            self._status[s.name] = st
            if st.available:
                self._active.append(s)
            else:
                log.info("telemetry %s", st)
        self._stop.clear()
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="amalia-telemetry", daemon=True)
        self._thread.start()
        return self.sources

    def stop(self) -> list[Snapshot]:
        """Stop sampling, close the samplers and return all snapshots (oldest first)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
            self.sample_once()  # closes the span: the last sample is at (or after) stop time
        for s in self._samplers:
            try:
                s.close()
            except Exception:  # pragma: no cover - close must not mask the caller's result
                log.debug("closing %s failed", s.name, exc_info=True)
        return self.samples

    def __enter__(self) -> Monitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data --------------------------------------------------------------------------------
    @property
    def sources(self) -> list[SourceStatus]:
        with self._lock:
            return [self._status[s.name] for s in self._samplers if s.name in self._status]

    @property
    def samples(self) -> list[Snapshot]:
        with self._lock:
            return list(self._samples)

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def between(self, t0: float, t1: float) -> list[Snapshot]:
        """Snapshots with ``t0 <= t <= t1`` (perf_counter seconds)."""
        with self._lock:
            return [s for s in self._samples if t0 <= s.t <= t1]

    def sample_once(self) -> Snapshot:
        """Read every active sampler now and record the snapshot (also used by the thread)."""
        readings = []
        t_before = time.perf_counter()
        for s in list(self._active):
            try:
                readings.append(s.read())
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if getattr(exc, "filename", None):
                    reason = f"{reason}: {exc.filename}"
                self._drop(s, reason)
        # Stamp the middle of the reads: the values were taken somewhere in between.
        snap = merge((t_before + time.perf_counter()) / 2, readings)
        with self._lock:
            if len(self._samples) >= self._max:
                del self._samples[: len(self._samples) // 2]  # bounded memory on long runs
            self._samples.append(snap)
        return snap

    def _drop(self, sampler: Sampler, reason: str) -> None:
        log.warning("telemetry source %s stopped: %s", sampler.name, reason)
        with self._lock:
            self._status[sampler.name] = SourceStatus(sampler.name, False, reason)
        if sampler in self._active:
            self._active.remove(sampler)

    def _run(self) -> None:
        # Event.wait both paces the loop and lets stop() end it without waiting a full tick.
        next_t = time.perf_counter() + self.interval
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            self.sample_once()
            next_t += self.interval
            now = time.perf_counter()
            if next_t < now:  # fell behind (slow read): skip ticks rather than burst
                next_t = now + self.interval
