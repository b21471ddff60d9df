"""CPU, memory and process RSS (psutil, any OS); GPU load/frequency and temperatures (sysfs).

GPU load and frequency come from the Jetson GPU's sysfs/devfreq nodes (paths and their
sources in :mod:`amalia_edge.telemetry.paths`); thermal zones from
``/sys/class/thermal/thermal_zone*``. Every sysfs path is under the injectable ``root``;
psutil always describes the live machine and this process (or ``pid``).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus
from amalia_edge.telemetry.paths import (
    GPU_LOAD_PATHS,
    THERMAL_GLOB,
    THERMAL_INVALID_MILLI_C,
)


def _readable(path: Path) -> bool:
    try:
        path.read_text()
    except OSError:
        return False
    return True


class SystemSampler(Sampler):
    """psutil CPU % / used memory / RSS, Jetson GPU load and clock, thermal zones."""

    name = "system"

    def __init__(self, root: str | os.PathLike[str] = "/", pid: int | None = None) -> None:
        self.root = Path(root)
        self.pid = pid
        self.gpu_load_path: Path | None = None
        self.gpu_freq_path: Path | None = None
        self.zones: list[tuple[str, Path]] = []
        self.notes: list[str] = []
        self._proc: object = None

    def open(self) -> SourceStatus:
        import psutil  # a core dependency, imported here to keep `import amalia_edge` light

        self._psutil = psutil
        try:
            self._proc = psutil.Process(self.pid)
            psutil.cpu_percent(interval=None)  # first call primes the counter (returns 0.0)
        except psutil.Error as exc:
            return SourceStatus(self.name, False, f"psutil: {exc}")
        self.notes = []
        for rel in GPU_LOAD_PATHS:
            p = self.root / rel
            if p.exists():
                if _readable(p):
                    self.gpu_load_path = p
                    break
                self.notes.append(f"gpu load: permission denied: {p}")
        from amalia_edge.device.power import GPU_DEVFREQ, is_gpu_devfreq  # one table

        for d in sorted(glob.glob(str(self.root / GPU_DEVFREQ))):
            if is_gpu_devfreq(d):
                p = Path(d) / "cur_freq"
                if _readable(p):
                    self.gpu_freq_path = p
                    if self.gpu_load_path is None and _readable(Path(d) / "device" / "load"):
                        self.gpu_load_path = Path(d) / "device" / "load"
                    break
                self.notes.append(f"gpu freq: cannot read {p}")
        for z in sorted(glob.glob(str(self.root / THERMAL_GLOB))):
            zp = Path(z)
            try:
                ztype = (zp / "type").read_text().strip()
            except OSError:
                continue
            if _readable(zp / "temp"):
                self.zones.append((ztype, zp / "temp"))
            else:
                self.notes.append(f"thermal {ztype}: cannot read {zp / 'temp'}")
        parts = ["cpu", "memory", "rss"]
        if self.gpu_load_path:
            parts.append(f"gpu load ({self.gpu_load_path})")
        if self.gpu_freq_path:
            parts.append(f"gpu freq ({self.gpu_freq_path})")
        if self.zones:
            parts.append(f"{len(self.zones)} thermal zones")
        return SourceStatus(self.name, True, ", ".join(parts + self.notes))

    def read(self) -> Reading:
        ps = self._psutil
        r = Reading()
        r.cpu_percent = ps.cpu_percent(interval=None)
        vm = ps.virtual_memory()
        r.mem_used = int(vm.total - vm.available)
        try:
            r.rss = int(self._proc.memory_info().rss)  # type: ignore[attr-defined]
        except ps.Error:
            r.rss = None
        if self.gpu_load_path is not None:
            # tenths of a percent on Jetson (0..1000), per jtop/core/gpu.py
            r.gpu_load = int(self.gpu_load_path.read_text().split()[0]) / 10.0
        if self.gpu_freq_path is not None:
            r.gpu_freq = int(self.gpu_freq_path.read_text().split()[0])
        for ztype, path in self.zones:
            try:
                milli = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # some zones fail transiently (EAGAIN/ENODATA); skip this tick only
            if milli <= THERMAL_INVALID_MILLI_C:
                continue
            r.temps[ztype] = milli / 1000.0
        return r
