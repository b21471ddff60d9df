"""Intel RAPL energy counters from ``/sys/class/powercap`` (x86 workstations).

Each domain directory ``intel-rapl:N`` (a CPU package) or ``intel-rapl:N:M`` (its core,
uncore or dram subzone) has ``name``, ``energy_uj`` (a monotonically increasing counter in
µJ) and ``max_energy_range_uj``: the counter wraps to 0 after that value, so a decrease
between two reads means one wrap and the delta is ``new + max_range - old``
(Linux Documentation/power/powercap/powercap.rst).

Since Linux 5.10 ``energy_uj`` is readable only by root (CVE-2020-8694, "PLATYPUS"): for a
normal user the source is reported unavailable with that reason, never as 0 W.

Power per domain is Δenergy/Δt between consecutive reads; the total (``rapl_package_sum``) is
the sum of the ``package-N`` zones only. Not every top-level zone is a package: client CPUs
add ``intel-rapl:1`` named ``psys`` (the whole platform, packages included), and ``dram`` is
a subzone of its package (``intel-rapl:0:2``), as a real hierarchy printed by cpupower
powercap-info shows (package-0 → core, uncore, dram; intel-rapl:1 → psys; Linux commit
"cpupower: Introduce powercap intel-rapl library and powercap-info command"). So subzones
and psys are reported as rails and never added: adding psys would count the packages twice.
A machine with psys but no package zone reports psys as its total (``rapl_psys``).
"""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus
from amalia_edge.telemetry.paths import RAPL_GLOB

PACKAGE_SUM_LABEL = "rapl_package_sum"
PSYS_LABEL = "rapl_psys"


@dataclass
class Domain:
    label: str  # e.g. "package-0", "package-0/dram"
    energy_path: Path
    max_range_uj: int
    is_package: bool
    is_psys: bool = False
    last_uj: int | None = None
    last_t: float | None = None


def counter_delta(old: int, new: int, max_range: int) -> int:
    """µJ consumed between two counter reads, allowing for one wrap-around at ``max_range``."""
    return new - old if new >= old else new + max_range - old


class RaplSampler(Sampler):
    """Package and subzone watts from RAPL energy counters, where they are readable."""

    name = "rapl"

    def __init__(self, root: str | os.PathLike[str] = "/", clock: object = None) -> None:
        self.root = root
        self.domains: list[Domain] = []
        # Injectable clock so tests can make Δt exact; perf_counter matches the event stream.
        self._clock = clock if callable(clock) else time.perf_counter

    def open(self) -> SourceStatus:
        dirs = sorted(glob.glob(str(Path(self.root, RAPL_GLOB))))
        if not dirs:
            return SourceStatus(self.name, False, "no RAPL powercap domains (not Intel/AMD x86?)")
        by_dir: dict[str, str] = {}
        domains: list[Domain] = []
        try:
            for d in dirs:
                p = Path(d)
                if not re.fullmatch(r"intel-rapl:\d+(:\d+)?", p.name):
                    continue
                name = (p / "name").read_text().strip()
                by_dir[p.name] = name
                top = p.name.count(":") == 1
                is_pkg = top and name.startswith("package-")
                label = name if top else f"{by_dir.get(p.name.rsplit(':', 1)[0], '?')}/{name}"
                max_range = int((p / "max_energy_range_uj").read_text().split()[0])
                is_psys = top and name == "psys"
                domains.append(Domain(label, p / "energy_uj", max_range, is_pkg, is_psys))
            for dom in domains:  # the first read: also where permission is checked
                dom.last_uj = int(dom.energy_path.read_text().split()[0])
                dom.last_t = self._clock()
        except PermissionError as exc:
            return SourceStatus(
                self.name,
                False,
                f"permission denied reading {exc.filename} (root-only since Linux 5.10, "
                "CVE-2020-8694); run as root or `chmod o+r` the energy_uj files",
            )
        except (OSError, ValueError) as exc:
            return SourceStatus(self.name, False, f"unreadable RAPL counter: {exc}")
        self.domains = domains
        if not domains:
            return SourceStatus(self.name, False, "no RAPL domains found")
        return SourceStatus(self.name, True, ", ".join(d.label for d in domains))

    def read(self) -> Reading:
        rails: dict[str, float] = {}
        total = 0.0
        have_total = False
        psys: float | None = None
        for dom in self.domains:
            uj = int(dom.energy_path.read_text().split()[0])
            t = self._clock()
            if dom.last_uj is not None and dom.last_t is not None and t > dom.last_t:
                watts = counter_delta(dom.last_uj, uj, dom.max_range_uj) / 1e6 / (t - dom.last_t)
                rails[dom.label] = watts
                if dom.is_package:
                    total += watts
                    have_total = True
                elif dom.is_psys:
                    psys = watts
            dom.last_uj, dom.last_t = uj, t
        if not have_total:
            if psys is not None:
                return Reading(rails=rails, power_w=psys, power_label=PSYS_LABEL)
            return Reading(rails=rails)
        return Reading(rails=rails, power_w=total, power_label=PACKAGE_SUM_LABEL)
