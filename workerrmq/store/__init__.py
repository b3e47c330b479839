"""Persistent state: API keys and consumer definitions, through SQLAlchemy."""

from workerrmq.store.db import Database

__all__ = ["Database"]
