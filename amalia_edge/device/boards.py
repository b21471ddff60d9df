"""Jetson modules as data: module id → name, memory, bandwidth, compute capability, power modes.

The module id is the ``pNNNN-SSSS`` part number found in ``/proc/device-tree/compatible``
(for example ``nvidia,p3737-0000+p3701-0005``: carrier p3737-0000, module p3701-0005).

Sources, cited per row:

* [ids] Jetson Linux Developer Guide, "Quick Start" / flashing placeholders table: module
  SKUs (P3701-0000 AGX Orin 32GB devkit module, -0004 32GB, -0005 64GB, -0008 Industrial;
  P3767-0000 Orin NX 16GB, -0001 NX 8GB, -0003 Nano 8GB, -0004 Nano 4GB, -0005 Nano 8GB
  devkit), https://docs.nvidia.com/jetson/archives/r36.4/DeveloperGuide/IN/QuickStart.html
* [agx-ds] Jetson AGX Orin Series data sheet (DS-10662): 256-bit LPDDR5, 204.8 GB/s.
* [nx-ds] Jetson Orin NX Series data sheet (DS-10712): 128-bit LPDDR5, 102.4 GB/s.
* [nano-ds] Jetson Orin Nano Series data sheet (DS-11105): 8GB 128-bit 68 GB/s, 4GB 64-bit
  34 GB/s (JetPack 6.2 "super" modes raise the 8GB module to 102 GB/s; not modelled here).
* [xavier-ds] Jetson AGX Xavier Series data sheet: 256-bit LPDDR4x, 136.5 GB/s; Xavier NX
  data sheet: 128-bit LPDDR4x, 59.7 GB/s.
* [cc] CUDA GPUs list, https://developer.nvidia.com/cuda-gpus: Orin (Ampere iGPU) 8.7,
  Xavier (Volta iGPU) 7.2.
* [pm] Jetson Linux Developer Guide r36.x, Platform Power and Performance, "Supported Modes
  and Power Efficiency", and each board's ``/etc/nvpmodel.conf`` (``< POWER_MODEL ID=n
  NAME=... >`` lines). The modes here are the fallback for when that file cannot be read; on
  a real board :func:`amalia_edge.device.power.list_modes` reads the file, which wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GB = 1_000_000_000
GiB = 1 << 30


@dataclass(frozen=True)
class PowerModeSpec:
    """One nvpmodel power mode: its ``-m`` id and the name nvpmodel prints."""

    id: int
    name: str


@dataclass(frozen=True)
class BoardSpec:
    """A Jetson module. ``memory_bandwidth`` is bytes/s (peak, from the data sheet)."""

    module_id: str
    name: str
    soc: str
    memory_bytes: int
    memory_bandwidth: int
    cuda_cc: str
    power_modes: tuple[PowerModeSpec, ...] = ()
    source: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def fastest_mode(self) -> str | None:
        """The mode benchmarks should run in: MAXN when the board has it, else the most watts."""
        return fastest_mode_name([m.name for m in self.power_modes])

    def to_dict(self) -> dict[str, object]:
        return {
            "module_id": self.module_id,
            "name": self.name,
            "soc": self.soc,
            "memory_bytes": self.memory_bytes,
            "memory_bandwidth": self.memory_bandwidth,
            "cuda_cc": self.cuda_cc,
            "power_modes": [{"id": m.id, "name": m.name} for m in self.power_modes],
            "source": self.source,
        }


def _modes(*names: str) -> tuple[PowerModeSpec, ...]:
    return tuple(PowerModeSpec(i, n) for i, n in enumerate(names))


# AGX Orin 64GB and the 32GB *developer kit* module (p3701-0000): MAXN, 15 W, 30 W, 50 W,
# default MODE_30W. Sources: jetson_stats tests/nvpmodel (its AGX Orin nvpmodel emulator:
# POWER_MODEL ID=0 MAXN, 1 MODE_15W, 2 MODE_30W, 3 MODE_50W, PM_CONFIG DEFAULT=MODE_30W(2));
# NVIDIA forum "Maximum power consumption bounds for Orin AGX" (t/323456): a 32GB developer
# kit reports 15W, 30W, 50W and MAXN ("a 50W mode instead of a 40W one").
_AGX_64 = _modes("MAXN", "MODE_15W", "MODE_30W", "MODE_50W")
_AGX_32_DEVKIT = _AGX_64
# AGX Orin 32GB production module (p3701-0004): 15 W / 30 W / 40 W per the Jetson Linux
# Developer Guide "Supported Modes and Power Efficiency" table [pm]; not seen on a board here.
_AGX_32 = _modes("MAXN", "MODE_15W", "MODE_30W", "MODE_40W")

BOARDS: tuple[BoardSpec, ...] = (
    # --- Jetson AGX Orin (tegra234) ---
    BoardSpec(
        "p3701-0000",
        "Jetson AGX Orin 32GB (developer kit module)",
        "tegra234",
        32 * GiB,
        int(204.8 * GB),
        "8.7",
        _AGX_32_DEVKIT,
        "[ids] [agx-ds] [cc] [pm]",
    ),
    BoardSpec(
        "p3701-0004",
        "Jetson AGX Orin 32GB",
        "tegra234",
        32 * GiB,
        int(204.8 * GB),
        "8.7",
        _AGX_32,
        "[ids] [agx-ds] [cc] [pm]",
    ),
    BoardSpec(
        "p3701-0005",
        "Jetson AGX Orin 64GB",
        "tegra234",
        64 * GiB,
        int(204.8 * GB),
        "8.7",
        _AGX_64,
        "[ids] [agx-ds] [cc] [pm]",
    ),
    # Industrial: power modes differ from the 64GB module and were not verified; read them
    # from /etc/nvpmodel.conf on the board.
    BoardSpec(
        "p3701-0008",
        "Jetson AGX Orin Industrial 64GB",
        "tegra234",
        64 * GiB,
        int(204.8 * GB),
        "8.7",
        (),
        "[ids] [agx-ds] [cc]",
    ),
    # --- Jetson Orin NX (tegra234) ---
    BoardSpec(
        "p3767-0000",
        "Jetson Orin NX 16GB",
        "tegra234",
        16 * GiB,
        int(102.4 * GB),
        "8.7",
        _modes("MAXN", "MODE_10W", "MODE_15W", "MODE_25W"),
        "[ids] [nx-ds] [cc] [pm]",
    ),
    BoardSpec(
        "p3767-0001",
        "Jetson Orin NX 8GB",
        "tegra234",
        8 * GiB,
        int(102.4 * GB),
        "8.7",
        _modes("MAXN", "MODE_10W", "MODE_15W", "MODE_20W"),
        "[ids] [nx-ds] [cc] [pm]",
    ),
    # --- Jetson Orin Nano (tegra234); modes as shipped with JetPack 5.1 / 6.0 ---
    BoardSpec(
        "p3767-0003",
        "Jetson Orin Nano 8GB",
        "tegra234",
        8 * GiB,
        68 * GB,
        "8.7",
        _modes("15W", "7W"),
        "[ids] [nano-ds] [cc] [pm]",
    ),
    BoardSpec(
        "p3767-0004",
        "Jetson Orin Nano 4GB",
        "tegra234",
        4 * GiB,
        34 * GB,
        "8.7",
        _modes("10W", "7W"),
        "[ids] [nano-ds] [cc] [pm]",
    ),
    BoardSpec(
        "p3767-0005",
        "Jetson Orin Nano 8GB (developer kit module)",
        "tegra234",
        8 * GiB,
        68 * GB,
        "8.7",
        _modes("15W", "7W"),
        "[ids] [nano-ds] [cc] [pm]",
    ),
    # --- Xavier (tegra194), cheap to include: JetPack 5 still supports it ---
    BoardSpec(
        "p2888-0001",
        "Jetson AGX Xavier 16GB",
        "tegra194",
        16 * GiB,
        int(136.5 * GB),
        "7.2",
        (),
        "[xavier-ds] [cc]",
    ),
    BoardSpec(
        "p2888-0004",
        "Jetson AGX Xavier 32GB",
        "tegra194",
        32 * GiB,
        int(136.5 * GB),
        "7.2",
        (),
        "[xavier-ds] [cc]",
    ),
    BoardSpec(
        "p2888-0005",
        "Jetson AGX Xavier 64GB",
        "tegra194",
        64 * GiB,
        int(136.5 * GB),
        "7.2",
        (),
        "[xavier-ds] [cc]",
    ),
    BoardSpec(
        "p3668-0001",
        "Jetson Xavier NX 8GB",
        "tegra194",
        8 * GiB,
        int(59.7 * GB),
        "7.2",
        (),
        "[xavier-ds] [cc]",
    ),
    BoardSpec(
        "p3668-0003",
        "Jetson Xavier NX 16GB",
        "tegra194",
        16 * GiB,
        int(59.7 * GB),
        "7.2",
        (),
        "[xavier-ds] [cc]",
    ),
)

BOARDS_BY_ID: dict[str, BoardSpec] = {b.module_id: b for b in BOARDS}

# SoC → CUDA compute capability, for a Jetson whose module id is not in the table. [cc]
SOC_CUDA_CC: dict[str, str] = {
    "tegra234": "8.7",
    "tegra194": "7.2",
    "tegra186": "6.2",
    "tegra210": "5.3",
}

_PART_RE = re.compile(r"p\d{4}-\d{4}")
_WATTS_RE = re.compile(r"(\d+)\s*W", re.IGNORECASE)


def module_ids_from_compatible(compatible: str) -> list[str]:
    """All ``pNNNN-SSSS`` part numbers in a device-tree ``compatible`` string, in order."""
    return _PART_RE.findall(compatible.lower())


def lookup_board(compatible: str) -> BoardSpec | None:
    """The module named in a device-tree ``compatible`` string, or ``None``.

    The carrier board's part number (e.g. p3737-0000) appears too; only ids in the table
    match, so the module wins.
    """
    for part in module_ids_from_compatible(compatible):
        if part in BOARDS_BY_ID:
            return BOARDS_BY_ID[part]
    return None


def fastest_mode_name(names: list[str]) -> str | None:
    """MAXN (or a MAXN variant such as MAXN_SUPER) if present, else the mode with most watts."""
    if not names:
        return None
    maxn = [n for n in names if n.upper().startswith("MAXN")]
    if maxn:
        return maxn[-1] if any("SUPER" in n.upper() for n in maxn) else maxn[0]

    def watts(n: str) -> float:
        m = _WATTS_RE.search(n)
        return float(m.group(1)) if m else -1.0

    return max(names, key=watts)
