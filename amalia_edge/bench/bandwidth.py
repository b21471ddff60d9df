"""Memory bandwidth for the roofline: the board table on Jetson, a quick copy test elsewhere.

The copy test times ``numpy.copyto`` of a buffer much larger than any CPU cache; each copy
reads and writes every byte once, so bytes moved = 2 × size (the STREAM "copy" convention).
The best of a few runs is taken: the slower runs measure interference, not the memory.
It measures what the CPU can stream (one thread), a lower bound on the DRAM peak and the
relevant limit for a CPU backend.
"""

from __future__ import annotations

import time
from typing import Any


def measure_copy_bandwidth(nbytes: int = 128 * 2**20, runs: int = 3) -> float:
    """Bytes/s of a single-threaded large-buffer copy (best of ``runs``)."""
    import numpy as np

    n = max(1, nbytes // 8)
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def memory_bandwidth(device: Any | None, measure: bool = True) -> tuple[float | None, str | None]:
    """(bytes/s, source): the device's table value when it has one, else a measured copy."""
    if device is not None and getattr(device, "memory_bandwidth", None):
        return float(device.memory_bandwidth), getattr(
            device, "memory_bandwidth_source", None
        ) or "board table"
    if not measure:
        return None, None
    return measure_copy_bandwidth(), "measured (numpy copy, 1 thread)"
