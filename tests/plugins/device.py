"""Shared pytest fixtures (device)."""

from __future__ import annotations
