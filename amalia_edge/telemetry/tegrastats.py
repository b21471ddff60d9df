"""``tegrastats`` as a fallback telemetry source (Jetson, when hwmon sysfs is unreadable).

The line format changed between releases; :func:`parse_line` accepts all of these (the
fixtures in ``tests/fixtures/telemetry/tegrastats_*.txt`` hold one example per release):

* JetPack 5 (L4T r35): upper-case temperatures (``CPU@47.062C``), ``GR3D_FREQ 0%@[0,0]``
  (one frequency per GPC in MHz), rails as ``VDD_GPU_SOC 2397mW/2397mW`` (instant/average),
  unconnected rails printed as ``NC 0mW/0mW``; powered-off sensors as ``-256C``.
* JetPack 6 (L4T r36): a leading ``MM-DD-YYYY HH:MM:SS`` timestamp, lower-case temperatures
  (``cpu@45.5C``); on the AGX Orin only ``VDD_GPU_SOC``, ``VDD_CPU_CV`` and ``VIN_SYS_5V0``
  (no ``VDDQ_VDD2_1V8AO``, no ``NC``). The fixture is a real AGX Orin 32GB on L4T 36.4.
* A bare ``GR3D_FREQ 0%`` (no ``@[...]`` frequencies) is what tegrastats prints when it cannot
  read the GPU, i.e. when it is not run as root (the real L4T 36.4 line above was taken by a
  user; lines run with ``sudo tegrastats`` carry ``GR3D_FREQ 14%@[407,407]``). It means
  "GPU load unknown", not "idle": the load is left ``None``.
* JetPack 7.2 (L4T r39, the first JetPack 7 for Orin; r38 is Jetson Thor only): rails with
  three values (``VDD_GPU_SOC 5139mW/5139mW/5139mW``: instant/average/peak) and temperatures
  with two (``cpu@52.968C/52.968C``: now/peak); the first value is the one read. The AGX
  Orin prints the same three rails as on JetPack 6, no ``tj@`` and, without swap, no
  ``SWAP`` field. The fixture is a real AGX Orin 64GB devkit line on L4T R39.2 (from
  jetson_stats' tests), run as root: ``GR3D_FREQ 12%@[1300,1300]``.
* L4T r32 (JetPack 4) rails without units (``POM_5V_IN 2545/2547``) still parse.

Sources: NVIDIA Jetson Linux Developer Guide, "tegrastats Utility" (reported statistics table);
jetson_stats jtop/core/tegra_parse.py (the same fields, parsed by regular expression).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus
from amalia_edge.telemetry.ina3221 import module_total

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"(\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
# name@12.5C — temperatures; upper case on JetPack 5, lower case on JetPack 6.
_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
# NAME 1234mW/1234mW[/1234mW] — the unit is absent on L4T r32; RAM/SWAP "x/yMB" never match
# because the last number must be followed by whitespace or the end of the line.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "NC"}
_INVALID_TEMP = -256.0  # sensor without a reading (CV0..CV2, gated GPU) on AGX Orin


def parse_line(line: str) -> Reading:
    """Parse one tegrastats line into a :class:`Reading` (fields absent from the line: None)."""
    r = Reading()
    if m := _RAM.search(line):
        r.mem_used = int(m.group(1)) * 1024 * 1024
    if m := _CPU.search(line):
        loads = [int(c.group(1)) for c in map(_CORE.match, m.group(1).split(",")) if c]
        if loads:
            r.cpu_percent = sum(loads) / len(loads)
    if m := _GR3D.search(line):
        if m.group(1) is not None and m.group(2):
            r.gpu_load = float(m.group(1))
        if m.group(2):
            freqs = [int(f) for f in m.group(2).split(",") if f]
            if freqs:
                r.gpu_freq = max(freqs) * 1_000_000  # per-GPC MHz; the fastest GPC
    for m in _TEMP.finditer(line):
        deg = float(m.group(2))
        if deg > _INVALID_TEMP:
            r.temps[m.group(1)] = deg
    for m in _RAIL.finditer(line):
        name = m.group(1)
        if name in _NOT_RAILS:
            continue
        r.rails[name] = int(m.group(2)) / 1000.0  # first value: instantaneous mW
    r.power_w, r.power_label = module_total(r.rails)
    return r


class TegrastatsSampler(Sampler):
    """Run ``tegrastats --interval MS`` and hand out its latest parsed line."""

    name = "tegrastats"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        interval: float = 0.1,
        root: str | os.PathLike[str] = "/",
        first_line_timeout: float = 3.0,
    ) -> None:
        self.binary = binary
        self.root = root
        self.interval_ms = max(1, round(interval * 1000))
        self.first_line_timeout = first_line_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._latest: Reading | None = None
        self._lines = 0
        self._got_line = threading.Event()

    def _find(self) -> str | None:
        if self.binary is not None:
            return str(self.binary)
        if str(self.root) != "/":
            candidate = Path(self.root, "usr/bin/tegrastats")
            return str(candidate) if candidate.exists() else None
        return shutil.which("tegrastats")

    def open(self) -> SourceStatus:
        binary = self._find()
        if binary is None or not Path(binary).exists():
            return SourceStatus(self.name, False, "tegrastats not found (not a Jetson?)")
        if not os.access(binary, os.X_OK):
            return SourceStatus(self.name, False, f"permission denied: {binary} not executable")
        try:
            self._proc = subprocess.Popen(
                [binary, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            return SourceStatus(self.name, False, f"cannot run {binary}: {exc.strerror}")
        self._thread = threading.Thread(target=self._pump, name="tegrastats-reader", daemon=True)
        self._thread.start()
        # Wait for the first line, but stop early if the process already died (bad flags, no root).
        deadline = time.monotonic() + self.first_line_timeout
        while not self._got_line.wait(0.02):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                break
        if not self._got_line.is_set():
            err = self._stderr_tail()
            self.close()
            return SourceStatus(self.name, False, err or "tegrastats printed nothing")
        return SourceStatus(self.name, True, f"{binary} --interval {self.interval_ms}")

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            reading = parse_line(line)
            self._latest = reading  # one reference assignment: atomic under the GIL
            self._lines += 1
            self._got_line.set()

    def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None or proc.poll() is None:
            return ""
        lines = proc.stderr.read().strip().splitlines()
        return lines[-1] if lines else f"tegrastats exited with status {proc.returncode}"

    def read(self) -> Reading:
        if self._latest is None:
            raise OSError("tegrastats produced no line")
        if self._proc is not None and self._proc.poll() not in (None, 0):
            raise OSError(f"tegrastats exited with status {self._proc.returncode}")
        return self._latest

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
        # The reader thread ends at EOF once the process is gone; join it before closing pipes.
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if proc is not None:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
