"""Shared test helpers. Unit tests need no services; integration tests are marked."""

from __future__ import annotations

from pipelines.stack.process import free_port

__all__ = ["free_port"]
