"""Shared pytest fixtures (device): fake Jetson / x86 trees and fake board tools.

``tests/fixtures/boards/<name>/`` holds /proc, /sys and /etc files modelled on real boards
(device-tree model and compatible strings, nv_tegra_release, meminfo, cpuinfo,
nvpmodel.conf, cpufreq/devfreq clock files). ``tests/fixtures/bin/`` holds fake
``nvpmodel``, ``jetson_clocks`` and ``nvidia-smi`` that act on such a tree and append every
call to ``$AMALIA_FAKE_LOG``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from amalia_edge.device.fsroot import FsRoot

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BOARDS_DIR = FIXTURES / "boards"
FAKE_BIN = FIXTURES / "bin"
BOARD_NAMES = (
    "agx-orin-64gb-jp6",
    "agx-orin-32gb-jp5",
    "agx-orin-32gb-jp60",
    "agx-orin-64gb-jp72",
    "orin-nano-8gb-jp6",
    "x86-rtx",
    "x86-plain",
)


@dataclass
class FakeDevice:
    """A writable copy of a fixture tree plus the log the fake tools append to."""

    name: str
    root: Path
    log: Path
    bin: Path

    def calls(self) -> list[str]:
        """Every fake-tool invocation so far, one ``"tool args"`` string each."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def fsroot(self, *, tools: bool = True) -> FsRoot:
        from amalia_edge.device.fsroot import CommandRunner, FsRoot

        return FsRoot(self.root, CommandRunner([self.bin] if tools else [], system=False))


@pytest.fixture
def fake_bin() -> Path:
    return FAKE_BIN


@pytest.fixture
def fake_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeDevice]:
    """``fake_device("agx-orin-64gb-jp6")``: copy the tree to tmp, point the environment at it.

    Sets ``AMALIA_EDGE_ROOT`` (the tree), ``AMALIA_EDGE_BIN_PATH`` (the fake tools, unless
    ``tools=False``) and ``AMALIA_FAKE_LOG``, so both library calls and a CLI subprocess see
    the fake board.
    """

    def make(name: str, *, tools: bool = True) -> FakeDevice:
        src = BOARDS_DIR / name
        if not src.is_dir():
            raise ValueError(f"no fixture tree {name!r}; have {BOARD_NAMES}")
        root = tmp_path / name
        shutil.copytree(src, root)
        log = tmp_path / f"{name}.calls.log"
        bin_dir = FAKE_BIN if tools else tmp_path / "empty-bin"
        bin_dir.mkdir(exist_ok=True)
        monkeypatch.setenv("AMALIA_EDGE_ROOT", str(root))
        monkeypatch.setenv("AMALIA_EDGE_BIN_PATH", str(bin_dir))
        monkeypatch.setenv("AMALIA_FAKE_LOG", str(log))
        return FakeDevice(name, root, log, bin_dir)

    return make
