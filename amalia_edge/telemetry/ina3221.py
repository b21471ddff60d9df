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
* JetPack 6's kernel exposes the chip's summation channel: ``in7_input``/``in7_label``
  ("sum of shunt voltages") and ``curr4_input`` (sum of currents), per the kernel's
  Documentation/hwmon/ina3221.rst. Neither is a rail: ``curr4_input`` has no ``in4_label``
  (``in4..6_input`` are the shunt voltages of channels 1-3), and in7 is skipped by label.

The total, one definition for this reader and the ``tegrastats`` reader (:func:`module_total`):

* where the module has an input rail (``VDD_IN`` on Orin NX/Nano, ``POM_5V_IN`` on older
  boards), that rail is the total (jtop total_power() does the same; NVIDIA forum thread
  "Orin NX power data from jtop" 242804);
* the AGX Orin has **no input rail**, so the total is ``module_rails_sum``: the sum of the
  rails on its first monitor, ``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0``.
  ``VDDQ_VDD2_1V8AO`` (the second monitor) is reported as a rail but not added: a real AGX
  Orin 32GB on L4T 36.4 prints only the first three in tegrastats
  (``VDD_GPU_SOC 1995mW/1995mW VDD_CPU_CV 0mW/0mW VIN_SYS_5V0 2524mW/2524mW``, node rudi2 in
  gt-crnch-rg/read-the-docs docs/neuromorphic/rudi-jetson-dev-boards.rst) while L4T 35 prints
  the fourth too, so a sum that included it would mean different things on different
  releases and sources. The total excludes the carrier board and regulator losses: it is
  below wall power.
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
# Rails reported but never added into module_rails_sum (see the module docstring).
NOT_IN_MODULE_SUM = ("VDDQ_VDD2_1V8AO",)
_SKIP_LABELS = ("sum of shunt voltages",)


def module_total(rails: dict[str, float]) -> tuple[float | None, str | None]:
    """The module's power in watts and its label, from rail watts (sysfs or tegrastats).

    The input rail where there is one; else the sum of the rails minus
    :data:`NOT_IN_MODULE_SUM`, labelled :data:`MODULE_SUM_LABEL`; ``(None, None)`` for none.
    """
    if not rails:
        return None, None
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    summed = [w for name, w in rails.items() if name not in NOT_IN_MODULE_SUM]
    if not summed:
        return None, None
    return sum(summed), MODULE_SUM_LABEL


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
        power, label = module_total(rails)
        return Reading(rails=rails, power_w=power, power_label=label)
