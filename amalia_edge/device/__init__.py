"""Device probing, the Jetson board table, power mode and clocks, and doctor checks.

```python
from amalia_edge.device import probe, DeviceInfo
info = probe(root="/")          # every file read goes under root; tests use fake trees
```

Only the standard library is imported here; llama.cpp / ONNX Runtime / TensorRT are imported
by :mod:`amalia_edge.device.checks` inside the checks that need them.
"""

from __future__ import annotations

from amalia_edge.device.boards import BOARDS, BOARDS_BY_ID, BoardSpec, PowerModeSpec, lookup_board
from amalia_edge.device.fsroot import CommandResult, CommandRunner, FsRoot
from amalia_edge.device.l4t import L4TRelease, parse_nv_tegra_release
from amalia_edge.device.power import PowerStatus, power_status
from amalia_edge.device.probe import DeviceInfo, GpuInfo, probe

__all__ = [
    "BOARDS",
    "BOARDS_BY_ID",
    "BoardSpec",
    "CommandResult",
    "CommandRunner",
    "DeviceInfo",
    "FsRoot",
    "GpuInfo",
    "L4TRelease",
    "PowerModeSpec",
    "PowerStatus",
    "lookup_board",
    "parse_nv_tegra_release",
    "power_status",
    "probe",
]
