"""The ``.sql`` files' named queries: fragments (``-- _name --``) are written into the
queries that include them (``{_name}``) and are not queries themselves."""

from __future__ import annotations

import pytest

from tether.store._sql import load_queries

FILES = [("tether.store.postgres", "queries.sql"), ("tether.store.postgres", "serve.sql"),
         ("tether.store.sqlite", "queries.sql"), ("tether.store.sqlite", "serve.sql"),
         ("tether.store.sqlite", "lifecycle.sql")]


@pytest.mark.parametrize(("package", "filename"), FILES)
def test_no_fragment_is_left_out_or_loaded_as_a_query(package: str, filename: str) -> None:
    queries = load_queries(package, filename)
    assert queries
    for name, sql in queries.items():
        assert not name.startswith("_")
        assert "{_" not in sql, name


def test_the_append_statements_share_their_upsert_and_op_events() -> None:
    queries = load_queries("tether.store.postgres")
    tails = [queries[name][queries[name].index("ON CONFLICT"):]
             for name in ("journal_append", "journal_append_one",
                          "journal_append_one_metered")]
    assert tails[0] == tails[1] == tails[2]
    assert "\nev AS (\n    INSERT INTO {schema}.run_events" in tails[0]


def test_every_journal_upsert_replaces_only_a_pending_entry() -> None:
    """One definition of a journal insert's conflict (``_journal_upsert``), in every
    PostgreSQL statement that inserts journal entries from a worker."""
    queries = load_queries("tether.store.postgres")
    upserts = [name for name, sql in queries.items()
               if "ON CONFLICT (run_id, position) DO UPDATE" in sql]
    assert sorted(upserts) == ["child_start", "journal_append", "journal_append_one",
                               "journal_append_one_metered", "signal_take"]
    for name in upserts:
        assert ("started_at = coalesce(j.started_at, excluded.started_at)\n"
                "    WHERE j.status = 'pending'") in queries[name], name
