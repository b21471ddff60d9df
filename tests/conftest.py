"""Root conftest: shared fixtures live in tests/plugins/, one module per area."""

from __future__ import annotations

import os
from typing import Any

import pytest

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


@pytest.fixture(autouse=True)
def _private_amalia_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any) -> None:
    """Autotune results and measured bandwidth go to a per-session folder, never to the
    user's cache (a bandwidth a test measured would change selection elsewhere)."""
    cache = tmp_path_factory.getbasetemp() / "amalia-cache"
    monkeypatch.setenv("AMALIA_EDGE_CACHE_DIR", str(cache))
