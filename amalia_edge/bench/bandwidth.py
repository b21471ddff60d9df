"""Memory bandwidth for the roofline: the board table on Jetson, a quick copy test elsewhere.

The copy test times ``numpy.copyto`` of a buffer much larger than any CPU cache; each copy
reads and writes every byte once, so bytes moved = 2 × size (the STREAM "copy" convention).
The best of a few runs is taken: the slower runs measure interference, not the memory.
It measures what the CPU can stream (one thread), a lower bound on the DRAM peak and the
relevant limit for a CPU backend.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo

MEASURED = "measured (numpy copy, 1 thread)"


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


def memory_bandwidth(
    device: DeviceInfo | None, measure: bool = True
) -> tuple[float | None, str | None]:
    """(bytes/s, source): the device's table value when it has one, else a measured copy,
    which is remembered for this device (``doctor`` and selection use it from then on)."""
    if device is not None and device.memory_bandwidth:
        return float(device.memory_bandwidth), device.memory_bandwidth_source or "board table"
    if not measure:
        return None, None
    bw = measure_copy_bandwidth()
    if device is not None:
        from amalia_edge.device.bandwidth import remember
        from amalia_edge.errors import AmaliaEdgeError

        try:
            remember(device, bw, MEASURED)
        except (OSError, AmaliaEdgeError) as exc:  # a read-only cache costs only the memory
            import logging

            logging.getLogger(__name__).warning("could not remember the bandwidth: %s", exc)
    return bw, MEASURED
