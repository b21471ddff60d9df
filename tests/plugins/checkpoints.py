"""Shared pytest fixtures (checkpoints)."""

from __future__ import annotations
