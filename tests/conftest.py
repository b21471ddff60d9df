"""Root conftest: shared fixtures live in tests/plugins/, one module per area."""

from __future__ import annotations

pytest_plugins = [
    "tests.plugins.checkpoints",
    "tests.plugins.models",
    "tests.plugins.device",
    "tests.plugins.telemetry",
]
