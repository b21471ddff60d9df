"""Jetson power mode (nvpmodel) and clocks (jetson_clocks): query, list, change.

Reading needs no privileges: the current mode comes from ``nvpmodel -q`` (or, when that tool
cannot run, ``/var/lib/nvpmodel/status``), the available modes from ``/etc/nvpmodel.conf``,
and whether ``jetson_clocks`` is on from the clock files it writes (every CPU policy and the
GPU devfreq node pinned at min == max). Changing anything needs root and is done only by
:func:`set_mode` and :func:`set_clocks`, which the CLI calls after asking the user.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from amalia_edge.device.boards import PowerModeSpec, fastest_mode_name
from amalia_edge.device.fsroot import FsRoot, as_fsroot
from amalia_edge.errors import DeviceError

log = logging.getLogger(__name__)

# Files and paths, one row each (seen on JetPack 5.1 and 6.x; L4T installs the per-board
# config as /etc/nvpmodel/nvpmodel_<board>.conf and links /etc/nvpmodel.conf to it).
NVPMODEL_CONF = "/etc/nvpmodel.conf"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"  # "pmode:0000 fmode:quiet"
CPUFREQ_POLICIES = "sys/devices/system/cpu/cpufreq/policy*"
# GPU devfreq node (clocks here, load/frequency in telemetry): 17000000.ga10b on JetPack 5
# (L4T 35), 17000000.gpu on JetPack 6 (L4T 36), 17000000.gv11b on Xavier, 57000000.gp10b on
# TX2; jetson_stats jtop/core/gpu.py matches the same names.
GPU_DEVFREQ = "sys/class/devfreq/*"
GPU_DEVFREQ_NAMES = ("gpu", "ga10b", "gv11b", "gp10b")


def is_gpu_devfreq(node: str) -> bool:
    """Whether a devfreq node (path or name) is the GPU's."""
    return node.rsplit("/", 1)[-1].lower().endswith(GPU_DEVFREQ_NAMES)


# Where set_clocks() keeps the pre-jetson_clocks settings so --clocks off can restore them
# (jetson_clocks --store/--restore; its own default is ~/l4t_dfs.conf of whoever ran it).
DEFAULT_CLOCKS_STORE = "/var/lib/amalia-edge/l4t_dfs.conf"

_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_QUERY_RE = re.compile(r"NV Power Mode:\s*(\S+)")
_STATUS_RE = re.compile(r"pmode:(\d+)")


@dataclass(frozen=True)
class NvpmodelConf:
    modes: tuple[PowerModeSpec, ...]
    default_id: int | None


def parse_nvpmodel_conf(text: str) -> NvpmodelConf:
    """Power modes (``< POWER_MODEL ID=n NAME=x >``) and ``< PM_CONFIG DEFAULT=n >``."""
    modes = tuple(PowerModeSpec(int(i), n) for i, n in _MODEL_RE.findall(text))
    m = _DEFAULT_RE.search(text)
    return NvpmodelConf(modes, int(m.group(1)) if m else None)


def parse_nvpmodel_query(stdout: str) -> tuple[str | None, int | None]:
    """``nvpmodel -q`` prints ``NV Power Mode: MAXN`` then the id on the next line.

    Newer releases print ``NV Fan Mode:quiet`` first; that line is skipped.
    """
    lines = [ln.strip() for ln in stdout.splitlines()]
    for i, line in enumerate(lines):
        m = _QUERY_RE.search(line)
        if m:
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            return m.group(1), int(nxt) if nxt.isdigit() else None
    return None, None


def parse_nvpmodel_status(text: str) -> int | None:
    m = _STATUS_RE.search(text)
    return int(m.group(1)) if m else None


def read_clocks_locked(fs: FsRoot) -> bool | None:
    """Whether jetson_clocks is on, from the clock files: every CPU policy and the GPU at
    min == max. ``None`` when no clock files can be read (not a Jetson, or no permission)."""
    pairs: list[tuple[int, int]] = []
    for policy in fs.glob(CPUFREQ_POLICIES):
        # A cluster whose cores a power mode took offline keeps its policy directory with an
        # empty affected_cpus; jetson_clocks does not touch it, so it must not count.
        affected = fs.read_text(f"{policy}/affected_cpus")
        if affected is not None and not affected.strip():
            continue
        lo, hi = (
            fs.read_int(f"{policy}/scaling_min_freq"),
            fs.read_int(f"{policy}/scaling_max_freq"),
        )
        if lo is not None and hi is not None:
            pairs.append((lo, hi))
    for node in fs.glob(GPU_DEVFREQ):
        if not is_gpu_devfreq(node):
            continue
        lo, hi = fs.read_int(f"{node}/min_freq"), fs.read_int(f"{node}/max_freq")
        if lo is not None and hi is not None:
            pairs.append((lo, hi))
    if not pairs:
        return None
    return all(lo == hi for lo, hi in pairs)


@dataclass
class PowerStatus:
    """Where the board's power settings stand. ``mode`` is the nvpmodel name (e.g. MAXN)."""

    mode: str | None
    mode_id: int | None
    modes: list[PowerModeSpec]
    default_id: int | None
    jetson_clocks: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def fastest(self) -> str | None:
        return fastest_mode_name([m.name for m in self.modes])

    @property
    def is_fastest(self) -> bool | None:
        """True when in the fastest mode with clocks locked; None when unknown."""
        if self.mode is None or self.fastest is None or self.jetson_clocks is None:
            return None
        return self.mode == self.fastest and self.jetson_clocks

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "mode_id": self.mode_id,
            "modes": [{"id": m.id, "name": m.name} for m in self.modes],
            "default_id": self.default_id,
            "fastest": self.fastest,
            "jetson_clocks": self.jetson_clocks,
            "is_fastest": self.is_fastest,
            "notes": list(self.notes),
        }


def power_status(root: str | os.PathLike[str] | FsRoot | None = None) -> PowerStatus:
    """Read mode, available modes and clocks. Never raises; unknowns are ``None`` with a note."""
    fs = as_fsroot(root)
    notes: list[str] = []
    conf_text = fs.read_text(NVPMODEL_CONF)
    conf = parse_nvpmodel_conf(conf_text) if conf_text else NvpmodelConf((), None)
    if conf_text is None:
        notes.append(f"{NVPMODEL_CONF} not found: available power modes unknown")
    mode: str | None = None
    mode_id: int | None = None
    result = fs.runner.run(["nvpmodel", "-q"])
    if result is not None and result.ok:
        mode, mode_id = parse_nvpmodel_query(result.stdout)
    if mode is None:
        why = "not found" if result is None else f"failed ({result.stderr.strip()[:80]})"
        status = fs.read_text(NVPMODEL_STATUS)
        mode_id = parse_nvpmodel_status(status) if status else None
        if mode_id is not None:
            mode = next((m.name for m in conf.modes if m.id == mode_id), None)
            notes.append(f"nvpmodel {why}: mode read from {NVPMODEL_STATUS}")
        else:
            notes.append(f"nvpmodel {why}: power mode unknown")
    if mode_id is None and mode is not None:
        mode_id = next((m.id for m in conf.modes if m.name == mode), None)
    clocks = read_clocks_locked(fs)
    if clocks is None:
        notes.append("no readable CPU/GPU clock files: jetson_clocks state unknown")
    return PowerStatus(mode, mode_id, list(conf.modes), conf.default_id, clocks, notes)


def require_root(action: str, command: str, euid: int | None = None) -> None:
    """Raise :class:`DeviceError` naming the ``sudo`` command unless running as root."""
    uid = os.geteuid() if euid is None else euid
    if uid != 0:
        raise DeviceError(f"{action} needs root", fix=f"run `sudo {command}`")


def resolve_mode(mode: str | int, modes: list[PowerModeSpec]) -> PowerModeSpec:
    """Find a mode by id (``0``) or name (``MAXN``, ``maxn``, ``50W`` for ``MODE_50W``)."""
    text = str(mode).strip()
    for m in modes:
        if text.isdigit() and m.id == int(text):
            return m
    want = text.upper()
    for m in modes:
        if m.name.upper() in (want, f"MODE_{want}"):
            return m
    known = ", ".join(f"{m.id}={m.name}" for m in modes) or "none found in /etc/nvpmodel.conf"
    raise DeviceError(f"unknown power mode {text!r}", fix=f"choose one of: {known}")


def set_mode(
    mode: str | int,
    root: str | os.PathLike[str] | FsRoot | None = None,
    *,
    euid: int | None = None,
) -> tuple[PowerStatus, bool]:
    """Switch nvpmodel to ``mode`` (name or id). Returns the new status and whether nvpmodel
    said a reboot is needed for the change to take effect.

    Needs root. nvpmodel asks "reboot now?" on Orin when a mode change needs one; the answer
    is always NO (the user decides when to reboot), given on stdin so it can never hang.
    """
    fs = as_fsroot(root)
    status = power_status(fs)
    target = resolve_mode(mode, status.modes)
    require_root("changing the power mode", f"amalia-edge power --set {target.name}", euid)
    result = fs.runner.run(["nvpmodel", "-m", str(target.id)], input="NO\n", timeout=60)
    if result is None:
        raise DeviceError(
            "nvpmodel not found (is this a Jetson?)",
            fix="install L4T's nvidia-l4t-nvpmodel package, or run this on the Jetson itself",
        )
    output = result.stdout + result.stderr
    if not result.ok or "NVPM ERROR" in output:
        raise DeviceError(
            f"nvpmodel -m {target.id} failed: {output.strip().splitlines()[-1:] or ['no output']}",
            fix="see `sudo nvpmodel -q --verbose` and `journalctl -u nvpmodel`",
        )
    reboot = "reboot" in output.lower()
    return power_status(fs), reboot


def set_clocks(
    on: bool,
    root: str | os.PathLike[str] | FsRoot | None = None,
    *,
    euid: int | None = None,
    store: str | os.PathLike[str] | None = None,
) -> PowerStatus:
    """Lock clocks at the mode's maximum (``jetson_clocks``) or restore the saved settings.

    Before locking, the current settings are saved with ``jetson_clocks --store`` (once) so
    that ``on=False`` can put them back with ``jetson_clocks --restore``. ``store`` defaults
    to :data:`DEFAULT_CLOCKS_STORE` under the root.
    """
    fs = as_fsroot(root)
    flag = "on" if on else "off"
    require_root("changing the clocks", f"amalia-edge power --clocks {flag}", euid)
    store_path = Path(store) if store is not None else fs.path(DEFAULT_CLOCKS_STORE)
    if on:
        if not store_path.exists():
            store_path.parent.mkdir(parents=True, exist_ok=True)
            _run_clocks(fs, ["jetson_clocks", "--store", str(store_path)])
        _run_clocks(fs, ["jetson_clocks"])
    else:
        if not store_path.exists():
            raise DeviceError(
                f"no saved clock settings at {store_path} to restore",
                fix="reboot (clocks are not locked after boot), or re-apply the mode with "
                "`sudo nvpmodel -m <id>`",
            )
        _run_clocks(fs, ["jetson_clocks", "--restore", str(store_path)])
    return power_status(fs)


def _run_clocks(fs: FsRoot, argv: list[str]) -> None:
    result = fs.runner.run(argv, timeout=60)
    if result is None:
        raise DeviceError(
            "jetson_clocks not found (is this a Jetson?)",
            fix="install L4T's nvidia-l4t-tools package, or run this on the Jetson itself",
        )
    if not result.ok:
        msg = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(
            f"{' '.join(argv)} failed: {msg[0]}", fix="run it by hand with sudo to see why"
        )
