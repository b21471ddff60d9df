"""L4T (Jetson Linux) release parsing, the L4T → JetPack table, and the rule for newer ones.

``/etc/nv_tegra_release`` starts with a line like::

    # R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ...

which is L4T 36.4.3. JetPack is the SDK around an L4T release; the mapping is data below.
A release the table does not know is not refused: its L4T major gives the JetPack family
(:data:`L4T_MAJOR_TO_JETPACK_MAJOR`), and a major newer than every row is taken as the
newest family, with the guess visible as ``"7.x"``-style text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# L4T release → JetPack version, one row per release with its source:
# [jc]   dusty-nv/jetson-containers jetson_containers/l4t_version.py, get_jetpack_version()
#        (its NVIDIA_JETPACK table, itself taken from jetson_stats' jetson_variables.py)
# [arc]  NVIDIA JetPack archive, https://developer.nvidia.com/embedded/jetpack-archive
# [jc64] dusty-nv/jetson-containers pull request #1676, "add R35.6.4 to version list", linking
#        https://developer.nvidia.com/embedded/jetson-linux-r3564 (with JetPack 5.1.6,
#        https://developer.nvidia.com/embedded/jetpack-sdk-516); jetson_stats pull request #829
# [js791] rbonghi/jetson_stats issue #791: an Orin Nano devkit whose /etc/nv_tegra_release reads
#        "R36 (release), REVISION: 4.7" with `nvidia-jetpack` 6.2.1 installed (dpkg -l)
# [365]  rbonghi/jetson_stats pull request #803, "L4T 36.5.0 is JetPack 6.2.2" (citing the
#        JetPack archive); NVIDIA forum announcement "JetPack 6.2.2 / Jetson Linux 36.5 is now
#        live", https://forums.developer.nvidia.com/t/jetpack-6-2-2-jetson-linux-36-5-is-now-live/359622
# [3652] anduril/jetpack-nixos pull request #541, "Bump JetPack 6 from JP6.2.2 / L4T 36.5.0 to
#        JP6.2.3 / L4T 36.5.2", tested on AGX Orin, Orin NX and Orin Nano devkits
# [jp70] NVIDIA, "JetPack 7.0 with Jetson Linux 38.2/38.2.1",
#        https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.0
# [jp71] NVIDIA, "JetPack 7.1 with Jetson Linux 38.4",
#        https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.1; jetson_stats pull
#        request #792 ("L4T r38.4 should be 7.1", citing the JetPack archive)
# [jp72] OE4T/meta-tegra pull requests #2224 ("JetPack 7.2 / L4T R39.2.0 support: both Orin and
#        Thor are supported", by NVIDIA, which co-maintains meta-tegra from JetPack 7.2) and
#        #2281 ("Update to L4T R39.2.0/JetPack 7.2"); anduril/jetpack-nixos pull request #510
#        ("Update JetPack 7 to 7.2 (L4T r39.2) and enable JetPack 7 Orin"); a real AGX Orin
#        devkit on "R39 (release), REVISION: 2.0" (rbonghi/jetson_stats issue #864)
# [721]  OE4T/meta-tegra pull request #2339, "Update to JetPack 7.2.1/L4T R39.2.1"
L4T_TO_JETPACK: dict[str, str] = {
    "35.1.0": "5.0.2",  # [jc] [arc]
    "35.2.1": "5.1",  # [jc] [arc]
    "35.3.1": "5.1.1",  # [jc] [arc]
    "35.4.1": "5.1.2",  # [jc] [arc]
    "35.5.0": "5.1.3",  # [jc] [arc]
    "35.6.0": "5.1.4",  # [jc] [arc]
    "35.6.1": "5.1.5",  # [jc] [arc]
    "35.6.2": "5.1.5",  # [jc] (security update of 5.1.5)
    # 35.6.3: no source found; the major rule gives "5.x".
    "35.6.4": "5.1.6",  # [jc64]
    "36.2.0": "6.0 DP",  # [jc] [arc]
    "36.3.0": "6.0",  # [jc] [arc]
    "36.4.0": "6.1",  # [jc] [arc]
    "36.4.2": "6.1.1",  # [jc]
    "36.4.3": "6.2",  # [jc] [arc] (adds Orin Nano/NX "super" modes)
    "36.4.4": "6.2.1",  # [jc] [arc]
    "36.4.7": "6.2.1",  # [jc] [js791]
    "36.5.0": "6.2.2",  # [365]
    "36.5.2": "6.2.3",  # [3652]
    # JetPack 7.0 and 7.1 (L4T r38) support only Jetson Thor; Orin returns with r39 (7.2).
    "38.1.0": "7.0 EA",  # [jc]
    "38.2.0": "7.0",  # [jc] [jp70]
    "38.2.1": "7.0",  # [jp70]
    "38.2.2": "7.0",  # [jc]
    "38.3.0": "7.1",  # [jc]
    "38.4.0": "7.1",  # [jp71]
    "39.2.0": "7.2",  # [jp72]
    "39.2.1": "7.2.1",  # [721]
}

# L4T major → JetPack major, for releases the table does not list. [jc] [arc]
L4T_MAJOR_TO_JETPACK_MAJOR: dict[int, int] = {32: 4, 34: 5, 35: 5, 36: 6, 38: 7, 39: 7}

# L4T majors whose releases run on Jetson Thor only (JetPack 7.0/7.1): an Orin cannot boot
# them, and this kit (built for Orin's sm_87) does not target Thor. [jc] get_cuda_arch();
# NVIDIA's r38.4 Developer Guide: "Version 38.4 of Jetson Linux does not support the Jetson
# Orin product family" (https://docs.nvidia.com/jetson/archives/r38.4/DeveloperGuide/), while
# the r39.2 guide has a "Jetson AGX Orin, Orin NX, and Orin Nano Boot Flow" section again
# (https://docs.nvidia.com/jetson/archives/r39.2/DeveloperGuide/).
THOR_ONLY_L4T_MAJORS: frozenset[int] = frozenset({38})

_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def jetpack_major_for(l4t_major: int) -> int | None:
    """The JetPack family of an L4T major; a major newer than the table is the newest family."""
    if l4t_major in L4T_MAJOR_TO_JETPACK_MAJOR:
        return L4T_MAJOR_TO_JETPACK_MAJOR[l4t_major]
    newest = max(L4T_MAJOR_TO_JETPACK_MAJOR)
    if l4t_major > newest:
        return L4T_MAJOR_TO_JETPACK_MAJOR[newest]
    return None


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
    def in_table(self) -> bool:
        return self.version in L4T_TO_JETPACK

    @property
    def jetpack(self) -> str | None:
        """The JetPack version, or ``"6.x"``-style when the release is newer than the table."""
        if self.version in L4T_TO_JETPACK:
            return L4T_TO_JETPACK[self.version]
        major = jetpack_major_for(self.major)
        return f"{major}.x" if major is not None else None

    @property
    def jetpack_major(self) -> int | None:
        return jetpack_major_for(self.major)

    @property
    def thor_only(self) -> bool:
        return self.major in THOR_ONLY_L4T_MAJORS


def parse_l4t_version(text: str) -> L4TRelease | None:
    """``"36.4.3"`` (or ``"36.4"``) as an :class:`L4TRelease`; ``None`` if not that form."""
    parts = text.strip().lstrip("rR").split(".")
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    nums = [int(p) for p in parts] + [0, 0]
    return L4TRelease(nums[0], nums[1], nums[2])


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
