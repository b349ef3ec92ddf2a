"""The embedded local backend: everything in ``HSOPS_HOME`` (files and SQLite)."""

from hsops.platform.local.state_store import StateStore

__all__ = ["StateStore"]
