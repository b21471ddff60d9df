"""Shared pytest fixtures (telemetry): fake sysfs trees, a fake tegrastats, a known power source.

* ``fake_sysfs(name)`` copies ``tests/fixtures/telemetry/<name>/`` into a temporary root and
  returns it, so tests may modify files (counters, permissions) freely.
* ``fake_tegrastats(name)`` writes an executable that, like ``tegrastats --interval MS``,
  prints the recorded lines of ``tegrastats_<name>.txt`` in a loop every MS milliseconds.
* :class:`KnownPowerSampler` reports power that is a known function of time (linear ramp per
  rail), so the exact energy over any span is known and ∫ power dt can be checked.
"""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus

TELEMETRY_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telemetry"


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        root = tmp_path / f"root-{name}"
        shutil.copytree(TELEMETRY_FIXTURES / name, root)
        return root

    return make


@pytest.fixture
def fake_tegrastats(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, *, fail: str | None = None) -> Path:
        exe = tmp_path / f"tegrastats-{name}"
        if fail is not None:
            body = f'echo "{fail}" >&2\nexit 1\n'
        else:
            lines = TELEMETRY_FIXTURES / f"tegrastats_{name}.txt"
            body = (
                "ms=1000\n"
                'while [ $# -gt 0 ]; do [ "$1" = --interval ] && ms=$2; shift; done\n'
                's=$(awk "BEGIN{print $ms/1000}")\n'
                "while true; do\n"
                f'  while IFS= read -r line; do echo "$line"; sleep "$s"; done < "{lines}"\n'
                "done\n"
            )
        exe.write_text("#!/bin/sh\n# fake tegrastats for tests\n" + body)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return exe

    return make


class KnownPowerSampler(Sampler):
    """Rails whose watts ramp linearly in time: ``base + slope * (t - t0)`` per rail.

    With a linear signal the trapezoidal rule is exact, so ``exact_energy(t0, t1)`` is the
    true ∫ power dt the sampled estimate must match (up to clipping at the window edges).
    """

    name = "known_power"

    def __init__(self, rails: dict[str, tuple[float, float]] | None = None) -> None:
        self.rails = rails or {"VDD_GPU_SOC": (6.0, 2.0), "VDD_CPU_CV": (2.0, -0.5)}
        self.t0 = time.perf_counter()

    def _watts(self, t: float) -> dict[str, float]:
        return {n: b + s * (t - self.t0) for n, (b, s) in self.rails.items()}

    def open(self) -> SourceStatus:
        return SourceStatus(self.name, True, "test source")

    def read(self) -> Reading:
        rails = self._watts(time.perf_counter())
        return Reading(rails=rails, power_w=sum(rails.values()), power_label="known_sum")

    def exact_energy(self, t0: float, t1: float) -> float:
        b = sum(b for b, _ in self.rails.values())
        s = sum(s for _, s in self.rails.values())
        a0, a1 = t0 - self.t0, t1 - self.t0
        return b * (a1 - a0) + s * (a1**2 - a0**2) / 2


@pytest.fixture
def known_power() -> KnownPowerSampler:
    return KnownPowerSampler()
