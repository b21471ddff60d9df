"""One injectable root for every file the device code reads, and one runner for its commands.

Everything in :mod:`amalia_edge.device` reads ``/proc``, ``/sys`` and ``/etc`` through an
:class:`FsRoot` and runs ``nvpmodel``, ``jetson_clocks`` and ``nvidia-smi`` through a
:class:`CommandRunner`. Production code uses the real root ``/`` and the real ``PATH``; tests
point the root at a fake tree made from a real board's files (``tests/fixtures/boards/``)
and the runner at fake executables that record how they were called (``tests/fixtures/bin/``).

Two environment variables let a whole process (the CLI, ``jetson/setup.sh``) run against a
fake tree: ``AMALIA_EDGE_ROOT`` (default ``/``) and ``AMALIA_EDGE_BIN_PATH`` (directories
searched before ``PATH``, ``os.pathsep``-separated).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT_ENV = "AMALIA_EDGE_ROOT"
BIN_PATH_ENV = "AMALIA_EDGE_BIN_PATH"

# nvpmodel lives in /usr/sbin and jetson_clocks in /usr/bin on L4T; /usr/sbin is not on a
# normal user's PATH on Ubuntu, so it is searched explicitly (seen on JetPack 5.1 and 6.x).
_SYSTEM_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it exited."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandRunner:
    """Finds and runs the board's command-line tools.

    ``search_path`` directories are searched first (tests put fake executables there), then
    ``PATH``, then the system binary directories. :meth:`run` returns ``None`` when the
    command does not exist, so callers can tell "not a Jetson" from "the tool failed".
    """

    def __init__(
        self,
        search_path: Sequence[str | os.PathLike[str]] = (),
        timeout: float = 10.0,
        *,
        system: bool = True,
    ) -> None:
        self.search_path = [str(p) for p in search_path]
        self.timeout = timeout
        self.system = system

    @classmethod
    def from_env(cls, *, system: bool = True) -> CommandRunner:
        """``AMALIA_EDGE_BIN_PATH`` first; ``system=False`` searches nothing else (fake roots)."""
        extra = os.environ.get(BIN_PATH_ENV, "")
        return cls([p for p in extra.split(os.pathsep) if p], system=system)

    def which(self, name: str) -> str | None:
        dirs = list(self.search_path)
        if self.system:
            dirs += [*os.environ.get("PATH", "").split(os.pathsep), *_SYSTEM_BIN_DIRS]
        if not dirs:
            return None
        return shutil.which(name, path=os.pathsep.join(d for d in dirs if d))

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None
    ) -> CommandResult | None:
        exe = self.which(argv[0])
        if exe is None:
            log.debug("%s: not found", argv[0])
            return None
        import subprocess  # here: a probe that finds no tool to run does not pay for the import

        try:
            proc = subprocess.run(
                [exe, *argv[1:]],
                input=input,
                capture_output=True,
                text=True,
                timeout=self.timeout if timeout is None else timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("%s failed to run: %s", argv[0], exc)
            return CommandResult(tuple(argv), 127, "", str(exc))
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


class FsRoot:
    """Reads files below ``root``: ``FsRoot("/tmp/agx").read_text("/proc/meminfo")``.

    Absolute paths are re-rooted; reads never raise for missing or unreadable files (they
    return ``None``), because a missing file is an answer ("not a Jetson") rather than an error.
    """

    def __init__(self, root: str | os.PathLike[str] = "/", runner: CommandRunner | None = None):
        self.root = Path(root)
        # A fake tree must never be mixed with the real board's tools: outside "/", only
        # explicitly given directories are searched for nvpmodel and friends.
        self.runner = runner if runner is not None else CommandRunner.from_env(system=self.is_real)

    @classmethod
    def from_env(cls) -> FsRoot:
        return cls(os.environ.get(ROOT_ENV) or "/")

    @property
    def is_real(self) -> bool:
        """True when reading the real machine (root ``/``), so live-only reads are allowed."""
        return str(self.root) == "/" or self.root.resolve() == Path("/")

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def exists(self, p: str) -> bool:
        return self.path(p).exists()

    def read_bytes(self, p: str) -> bytes | None:
        try:
            return self.path(p).read_bytes()
        except OSError:
            return None

    def read_text(self, p: str) -> str | None:
        data = self.read_bytes(p)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_int(self, p: str) -> int | None:
        text = self.read_text(p)
        try:
            return int(text.strip()) if text is not None else None
        except ValueError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Absolute (un-rooted) paths matching ``pattern``, sorted."""
        base = self.root
        return sorted("/" + str(p.relative_to(base)) for p in base.glob(pattern.lstrip("/")))


def as_fsroot(root: str | os.PathLike[str] | FsRoot | None) -> FsRoot:
    """Accept a path, an :class:`FsRoot` or ``None`` (from the environment, default ``/``)."""
    if isinstance(root, FsRoot):
        return root
    if root is None:
        return FsRoot.from_env()
    return FsRoot(root)
