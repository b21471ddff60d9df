"""What the conversion benchmarks share: the generated checkpoint, child processes that
report their own peak RSS, and the plain-copy time baseline.

Imported by ``convert_speed.py`` and ``onnx_export_memory.py`` when run as scripts
(``python3 benchmarks/NAME.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Prepended to every child's code: hwm() is the child's own peak RSS in bytes, VmHWM from
# /proc/self/status. Not ru_maxrss: Linux carries the parent's high-water mark into a
# forked child's ru_maxrss across exec, so a child of the (large) benchmark process would
# report the generator's memory instead of its own.
HWM = (
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1]) * 1024\n"
)

# Baseline: copy argv[1] to argv[2] on the same disk (read + write + fsync).
COPY_CHILD = (
    HWM
    + """
import os, sys, time
t = time.perf_counter()
with open(sys.argv[1], 'rb') as src, open(sys.argv[2], 'wb') as dst:
    while chunk := src.read(64 << 20):
        dst.write(chunk)
    dst.flush(); os.fsync(dst.fileno())
print(time.perf_counter() - t, hwm())
"""
)


def work_child(imports: str, work: str) -> str:
    """Code for :func:`run_child` that runs ``imports``, then ``work`` timed.

    With ``sys.argv[3] == 'idle'`` it stops after the imports, so its peak RSS is the share of
    the interpreter and those modules. Prints ``seconds hwm()`` either way.
    """
    return (
        HWM
        + "import sys, time\n"
        + imports.strip()
        + "\nif sys.argv[3] == 'idle':\n    print(0.0, hwm()); sys.exit()\n"
        + "t = time.perf_counter()\n"
        + work.strip()
        + "\nprint(time.perf_counter() - t, hwm())\n"
    )


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # timed inside the child, around the work only
    peak_rss: int  # the child's VmHWM, bytes
    wall_s: float  # the whole child, interpreter start and imports included


def run_child(code: str, *args: str, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``code`` (which must end by printing ``seconds hwm()``) in a fresh interpreter.

    Raises :class:`subprocess.CalledProcessError` if the child fails.
    """
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    wall = time.perf_counter() - t
    inner, rss = proc.stdout.split()[-2:]
    return ChildRun(float(inner), int(rss), wall)


def copy_seconds(src: Path, scratch: Path) -> float:
    """Seconds a child takes to copy ``src`` to ``scratch/copy.bin`` (deleted after)."""
    dst = scratch / "copy.bin"
    try:
        return run_child(COPY_CHILD, str(src), str(dst)).seconds
    finally:
        dst.unlink(missing_ok=True)


def build_checkpoint(directory: Path, layers: int) -> Path:
    """A random-weight BF16 Llama checkpoint in ``directory``: hidden 1024, FFN 4096, 16 heads,
    4 KV heads, a EuroLLM/AMÁLIA-size 128k vocabulary; 22 layers ≈ 0.6B parameters."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import factory

    factory.build_checkpoint(
        directory,
        dtype="BF16",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        extra_vocab=128000 - 1536,  # the factory's tokenizer has 1536 pieces of its own
    )
    return directory
