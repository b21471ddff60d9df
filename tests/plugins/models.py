"""Shared pytest fixtures (models)."""

from __future__ import annotations
