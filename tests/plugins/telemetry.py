"""Shared pytest fixtures (telemetry)."""

from __future__ import annotations
