"""Store factory: the composition root that names concrete backends."""

from __future__ import annotations

import inspect
import os

from tether.errors import ConfigError
from tether.store._copy import CopyRefused, CopyResult, copy_store
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

__all__ = ["DEFAULT_URL", "FAIL_FAST", "REQUEST_TIMEOUT", "CopyRefused", "CopyResult",
           "HeartbeatResult", "SignalSent", "Store", "StoreCapabilities", "Wait", "WorkerInfo",
           "check_store_options", "copy_store", "open_store", "resolve_url",
           "store_option_names", "unsupported_url"]


def resolve_url(url: str | None) -> str:
    """The store URL: the argument, else ``TETHER_DATABASE_URL``, else ``./tether.db``."""
    return url or os.environ.get("TETHER_DATABASE_URL") or DEFAULT_URL


def unsupported_url(url: str) -> str | None:
    """Why no backend takes ``url`` (a resolved URL), or None: its scheme is neither
    ``sqlite:`` nor ``postgresql:`` (``postgres:``)."""
    if url.startswith(("sqlite:", "postgresql:", "postgres:")):
        return None
    return f"unsupported store URL {url!r}: use sqlite:///path.db or postgresql://host/db"


def _store_class(url: str) -> type[Store]:
    """The backend class for ``url`` (a resolved URL), imported.

    Raises:
        ConfigError: an unsupported URL, or a PostgreSQL URL without psycopg.
    """
    if url.startswith("sqlite:"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore
    if url.startswith(("postgresql:", "postgres:")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the PostgreSQL store needs psycopg: pip install 'tether[postgres]'"
            ) from None
        from tether.store import postgres

        return postgres.PostgresStore
    raise ConfigError(unsupported_url(url) or url)


def store_option_names(url: str | None = None) -> tuple[str, ...]:
    """The keyword options the store for ``url`` takes (``open_store(url, **options)``,
    ``App(url, **options)``), in the order of its constructor.

    Raises:
        ConfigError: an unsupported URL, or a PostgreSQL URL without psycopg.
    """
    params = inspect.signature(_store_class(resolve_url(url)).__init__).parameters
    return tuple(p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_store_options(url: str | None, options: dict[str, object]) -> None:
    """Refuse an option the store for ``url`` does not take, before anything is
    built or connected. Checks names only: the values are checked when the store is
    built.

    Raises:
        ConfigError: an unknown option (the message names it and the known ones), an
            unsupported URL, or a PostgreSQL URL without psycopg.
    """
    if not options:
        return
    url = resolve_url(url)
    known = store_option_names(url)
    unknown = sorted(set(options) - set(known))
    if unknown:
        kind = "SQLite" if url.startswith("sqlite:") else "PostgreSQL"
        names = ", ".join(repr(name) for name in unknown)
        raise ConfigError(
            f"unknown {kind} store option{'s' if len(unknown) > 1 else ''} {names}; "
            f"the {kind} store takes: {', '.join(known)}")


def open_store(url: str | None = None, **options: object) -> Store:
    """A store for ``url`` (not yet opened).

    Raises:
        ConfigError: an unsupported URL, a PostgreSQL URL without psycopg, an unknown
            option (naming the known ones) or a bad value of one.
    """
    url = resolve_url(url)
    check_store_options(url, options)
    store: Store = _store_class(url)(url, **options)  # type: ignore[call-arg]
    return store
