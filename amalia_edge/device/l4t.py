"""L4T (Jetson Linux) release parsing and the L4T → JetPack table.

``/etc/nv_tegra_release`` starts with a line like::

    # R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ...

which is L4T 36.4.3. JetPack is the SDK around an L4T release; the mapping is data below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# L4T release → JetPack version. Source: NVIDIA JetPack archive,
# https://developer.nvidia.com/embedded/jetpack-archive (one row per release note).
L4T_TO_JETPACK: dict[str, str] = {
    "35.1.0": "5.0.2",  # JetPack 5.0.2 GA release notes
    "35.2.1": "5.1",  # JetPack 5.1
    "35.3.1": "5.1.1",  # JetPack 5.1.1
    "35.4.1": "5.1.2",  # JetPack 5.1.2
    "35.5.0": "5.1.3",  # JetPack 5.1.3
    "35.6.0": "5.1.4",  # JetPack 5.1.4
    "35.6.1": "5.1.5",  # JetPack 5.1.5
    "36.2.0": "6.0 DP",  # JetPack 6.0 Developer Preview
    "36.3.0": "6.0",  # JetPack 6.0 GA
    "36.4.0": "6.1",  # JetPack 6.1
    "36.4.3": "6.2",  # JetPack 6.2 (adds Orin Nano/NX "super" modes)
    "36.4.4": "6.2.1",  # JetPack 6.2.1
}

# L4T major → JetPack major, for releases newer than the table. Same source.
L4T_MAJOR_TO_JETPACK_MAJOR: dict[int, int] = {32: 4, 34: 5, 35: 5, 36: 6}

_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


@dataclass(frozen=True)
class L4TRelease:
    major: int
    minor: int
    patch: int
    board: str | None = None

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def jetpack(self) -> str | None:
        """The JetPack version, or ``"6.x"``-style when the release is newer than the table."""
        if self.version in L4T_TO_JETPACK:
            return L4T_TO_JETPACK[self.version]
        major = L4T_MAJOR_TO_JETPACK_MAJOR.get(self.major)
        return f"{major}.x" if major is not None else None

    @property
    def jetpack_major(self) -> int | None:
        return L4T_MAJOR_TO_JETPACK_MAJOR.get(self.major)


def parse_nv_tegra_release(text: str) -> L4TRelease | None:
    """Parse the first line of ``/etc/nv_tegra_release``; ``None`` if it is not that format.

    ``REVISION: 4.3`` means minor 4, patch 3; ``REVISION: 4.0`` means 36.4.0.
    """
    m = _RELEASE_RE.search(text)
    if m is None:
        return None
    parts = [int(p) for p in m.group(2).split(".") if p.isdigit()]
    minor = parts[0] if parts else 0
    patch = parts[1] if len(parts) > 1 else 0
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    return L4TRelease(int(m.group(1)), minor, patch, board.group(1) if board else None)
