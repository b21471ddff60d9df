"""Root conftest: shared fixtures live in tests/plugins/, one module per area."""

from __future__ import annotations

import os

# One BLAS thread: the numpy reference forward pass runs on small matrices where a second
# OpenBLAS thread only adds contention (measured 12x slower on a loaded 2-core machine).
# Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

pytest_plugins = [
    "tests.plugins.checkpoints",
    "tests.plugins.models",
    "tests.plugins.device",
    "tests.plugins.telemetry",
]
