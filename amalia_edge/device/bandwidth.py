"""Memory bandwidth measured by ``amalia-edge bench``, remembered per device.

A Jetson's bandwidth comes from the board table; elsewhere the probe knows none, so bench
measures it (a large-buffer copy, :mod:`amalia_edge.bench.bandwidth`) and records it here,
keyed by :meth:`DeviceInfo.fingerprint`. ``doctor`` shows it and selection ranks candidates
with it instead of its assumed default. One small JSON file in the user cache directory,
written atomically; importing this module costs nothing (doctor stays instant).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalia_edge.device.probe import DeviceInfo

FILE_NAME = "bandwidth.json"

# What the probe says on a machine outside the board table before anything was measured.
UNKNOWN_NOTE = "memory bandwidth unknown until measured (amalia-edge bench)"


def store_path() -> Path:
    """``bandwidth.json`` beside ``autotune.json``: ``AMALIA_EDGE_CACHE_DIR`` or the user
    cache dir (the XDG rule platformdirs follows on Linux, without importing it)."""
    env = os.environ.get("AMALIA_EDGE_CACHE_DIR")
    if env:
        return Path(env) / FILE_NAME
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "amalia-edge" / FILE_NAME
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("amalia-edge")) / FILE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(
    device: DeviceInfo, bytes_per_second: float, how: str, path: Path | None = None
) -> None:
    """Record a measurement for this device (replaces the previous one)."""
    from amalia_edge.artifacts.atomic import atomic_write_json

    path = path or store_path()
    data = _read(path)
    data[device.fingerprint()] = {
        "bytes_per_second": float(bytes_per_second),
        "how": how,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, data)


def remembered(device: DeviceInfo, path: Path | None = None) -> tuple[float, str] | None:
    """(bytes/s, source text) measured earlier on this device, or None."""
    entry = _read(path or store_path()).get(device.fingerprint())
    if not isinstance(entry, dict):
        return None
    bw = entry.get("bytes_per_second")
    if not isinstance(bw, (int, float)) or bw <= 0:
        return None
    when = str(entry.get("measured_at", "?"))[:10]
    return float(bw), f"measured by amalia-edge bench on {when}"


def apply_remembered(device: DeviceInfo, path: Path | None = None) -> bool:
    """Give ``device`` its remembered bandwidth when the probe found none; True if it did."""
    if device.memory_bandwidth:
        return False
    found = remembered(device, path)
    if found is None:
        return False
    device.memory_bandwidth = int(found[0])
    device.memory_bandwidth_source = found[1]
    device.notes = [n for n in device.notes if UNKNOWN_NOTE not in n]
    return True
