"""Store options given to ``App(url, **options)``: an unknown one is a ConfigError when
the App is built, naming it and the store's known options, before anything is built or
connected (it was a ``TypeError`` from the store's constructor at the first use:
``App.start``, the worker)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tether import App, ConfigError
from tether.store import open_store, store_option_names

SQLITE_OPTIONS = "synchronous, busy_timeout, migrate, read_only, create, vfs"
PG_OPTIONS = ("schema, migrate, pool_min, pool_max, connect_timeout, pool_timeout, "
              "pool_max_idle, max_batch, query_timeout")


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _urls(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(url, kind, known options): a SQLite file in a directory that does not exist and
    a PostgreSQL server on a closed port, so that any attempt to open either fails."""
    pytest.importorskip("psycopg")
    return [(f"sqlite:///{tmp_path}/missing/t.db", "SQLite", SQLITE_OPTIONS),
            (f"postgresql://tether@127.0.0.1:{_closed_port()}/db", "PostgreSQL", PG_OPTIONS)]


def test_an_unknown_store_option_is_refused_when_the_app_is_built(tmp_path: Path) -> None:
    for url, kind, known in _urls(tmp_path):
        with pytest.raises(ConfigError) as caught:
            App(url, bogus=1)
        assert str(caught.value) == (
            f"unknown {kind} store option 'bogus'; the {kind} store takes: {known}")
        with pytest.raises(ConfigError, match=rf"options 'bogus', 'other'; the {kind} store"):
            App(url, other=2, bogus=1)
        # The same from open_store, which the App calls (a TypeError before).
        with pytest.raises(ConfigError, match=r"unknown .* store option 'bogus'"):
            open_store(url, bogus=1)
    assert not (tmp_path / "missing").exists()


def test_known_store_options_still_reach_the_store(tmp_path: Path) -> None:
    """Nothing is opened by building the App; the options are the store's."""
    for url, _kind, known in _urls(tmp_path):
        assert ", ".join(store_option_names(url)) == known
        app = App(url, migrate=False)
        assert app._store is None  # not built, let alone connected
        assert app.store.auto_migrate is False  # type: ignore[attr-defined]
    assert App(f"sqlite:///{tmp_path}/t.db",
               busy_timeout=0.25).store.busy_timeout == 0.25  # type: ignore[attr-defined]


def test_a_store_option_the_other_store_lacks_is_refused_by_use_store(
        tmp_path: Path) -> None:
    """``tether worker --app mod:app --db sqlite:///...`` on an App built with PostgreSQL
    options: said when the URL is switched, not at the first use."""
    pg_url = _urls(tmp_path)[1][0]
    app = App(pg_url, pool_max=4)
    with pytest.raises(ConfigError, match="unknown SQLite store option 'pool_max'"):
        app.use_store(f"sqlite:///{tmp_path}/t.db")
    assert app.url == pg_url  # unchanged


def test_store_options_beside_a_built_store_are_refused(tmp_path: Path) -> None:
    """They were ignored without a word: the store is already built."""
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(ConfigError, match=r"store options \(busy_timeout\) apply to a store "
                                          r"the App builds .*pass them to open_store"):
        App(store=store, busy_timeout=1)
