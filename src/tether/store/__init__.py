"""Store factory: the composition root that names concrete backends."""

from __future__ import annotations

import os

from tether.errors import ConfigError
from tether.store._port import (
    FAIL_FAST,
    REQUEST_TIMEOUT,
    HeartbeatResult,
    SignalSent,
    Store,
    StoreCapabilities,
    Wait,
    WorkerInfo,
)

DEFAULT_URL = "sqlite:///./tether.db"

__all__ = ["DEFAULT_URL", "FAIL_FAST", "REQUEST_TIMEOUT", "HeartbeatResult", "SignalSent",
           "Store", "StoreCapabilities", "Wait", "WorkerInfo", "open_store", "resolve_url"]


def resolve_url(url: str | None) -> str:
    """The store URL: the argument, else ``TETHER_DATABASE_URL``, else ``./tether.db``."""
    return url or os.environ.get("TETHER_DATABASE_URL") or DEFAULT_URL


def open_store(url: str | None = None, **options: object) -> Store:
    """A store for ``url`` (not yet opened)."""
    url = resolve_url(url)
    if url.startswith("sqlite:"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore(url, **options)  # type: ignore[arg-type]
    if url.startswith(("postgresql:", "postgres:")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the PostgreSQL store needs psycopg: pip install 'tether[postgres]'"
            ) from None
        from tether.store import postgres

        store: Store = postgres.PostgresStore(url, **options)  # type: ignore[arg-type]
        return store
    raise ConfigError(
        f"unsupported store URL {url!r}: use sqlite:///path.db or postgresql://host/db"
    )
