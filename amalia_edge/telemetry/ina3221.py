"""Jetson INA3221 power rails from hwmon sysfs.

Discovery walks ``sys/bus/i2c/devices/*/hwmon/hwmon*`` once, keeps chips whose ``name`` is
``ina3221`` and, per channel N with an ``inN_label``, reads ``inN_input`` (mV, bus voltage)
and ``currN_input`` (mA); rail power is V × I.

Quirks, each seen on real boards:

* Unconnected channels are labelled ``NC`` (AGX Orin's second chip, 1-0041, has channels 1
  and 3 labelled NC). Skipped — reporting them would add 0 W rails that measure nothing.
  (NVIDIA Jetson Linux Developer Guide r35/r36, "Jetson AGX Orin Series" power monitor
  table; jetson_stats jtop/core/power.py skips "NC" too.)
* JetPack 6 (kernel 5.15 ina3221 driver) adds channel 7, labelled ``sum of shunt voltages``:
  not a rail, skipped (jtop/core/power.py skips port 7 for the same reason).
* The AGX Orin dev kit has **no whole-board input rail**: ``VIN_SYS_5V0`` is the module's
  5 V system supply, not the board's input (there is no ``VDD_IN``/``POM_5V_IN`` as on
  Orin NX/Nano/Xavier). So this sampler reports every rail and a total named
  ``module_rails_sum`` — the sum of the monitored module rails. It excludes the carrier board
  and regulator losses, so it is below wall power. On boards that do have ``VDD_IN`` /
  ``POM_5V_IN`` (module input), that rail is the total instead (jtop total_power() does the
  same; NVIDIA forum thread "Orin NX power data from jtop" 242804).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus
from amalia_edge.telemetry.paths import INA3221_DRIVER_NAME, INA3221_GLOB

# Rails that are the module's input (the whole module), where a board has one.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
MODULE_SUM_LABEL = "module_rails_sum"
_SKIP_LABELS = ("sum of shunt voltages",)


@dataclass(frozen=True)
class Rail:
    name: str
    voltage_path: Path  # mV
    current_path: Path  # mA


def _read_int(path: Path) -> int:
    # Some drivers append units ("32760 ma"); jtop strips the same way.
    return int(path.read_text().split()[0])


def discover_rails(root: str | os.PathLike[str] = "/") -> tuple[list[Rail], str]:
    """Find the connected INA3221 rails under ``root``; return them and why none, if none."""
    base = Path(root)
    rails: list[Rail] = []
    why = "no INA3221 hwmon device under " + str(base / INA3221_GLOB)
    for hw in sorted(glob.glob(str(base / INA3221_GLOB))):
        hwdir = Path(hw)
        try:
            name = (hwdir / "name").read_text().strip()
        except OSError as exc:
            why = f"cannot read {hwdir / 'name'}: {exc.strerror}"
            continue
        if name != INA3221_DRIVER_NAME:
            continue
        for label_path in sorted(hwdir.glob("in*_label")):
            m = re.fullmatch(r"in(\d+)_label", label_path.name)
            if not m:
                continue
            n = m.group(1)
            try:
                label = label_path.read_text().strip()
            except OSError as exc:
                why = f"cannot read {label_path}: {exc.strerror}"
                continue
            if label == "NC" or label.startswith("NC ") or label in _SKIP_LABELS:
                continue
            v, c = hwdir / f"in{n}_input", hwdir / f"curr{n}_input"
            if v.exists() and c.exists():
                rails.append(Rail(label, v, c))
    return rails, ("" if rails else why)


class INA3221Sampler(Sampler):
    """Per-rail watts and the module total from INA3221 hwmon files (Jetson)."""

    name = "ina3221"

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = root
        self.rails: list[Rail] = []

    def open(self) -> SourceStatus:
        self.rails, why = discover_rails(self.root)
        if not self.rails:
            return SourceStatus(self.name, False, why)
        # Probe one read now so that a permission problem is reported up front, not as zeros.
        try:
            self.read()
        except OSError as exc:
            return SourceStatus(self.name, False, f"{exc.strerror or exc}: {exc.filename}")
        return SourceStatus(self.name, True, ", ".join(r.name for r in self.rails))

    def read(self) -> Reading:
        rails: dict[str, float] = {}
        for r in self.rails:
            mv, ma = _read_int(r.voltage_path), _read_int(r.current_path)
            rails[r.name] = mv * ma / 1e6
        total_rail = next((n for n in INPUT_RAILS if n in rails), None)
        if total_rail is not None:
            return Reading(rails=rails, power_w=rails[total_rail], power_label=total_rail)
        return Reading(rails=rails, power_w=sum(rails.values()), power_label=MODULE_SUM_LABEL)
