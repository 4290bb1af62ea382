"""The embedded SQLite store."""

from tether.store.sqlite._store import SqliteStore

__all__ = ["SqliteStore"]
