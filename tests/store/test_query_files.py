"""The ``.sql`` files' named queries: fragments (``-- _name --``) are written into the
queries that include them (``{_name}``) and are not queries themselves."""

from __future__ import annotations

import json
from pathlib import Path

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


SEARCHES = [(store, "serve.sql", name) for store in ("postgres", "sqlite")
            for name in ("run_search_all", "run_search_workflow", "run_search_queue")]
SEARCHES += [("postgres", "queries.sql", "run_list"), ("sqlite", "queries.sql", "run_list_all")]
EXPANDED = json.loads((Path(__file__).parent / "data" / "run_search_expanded.json")
                      .read_text())


@pytest.mark.parametrize(("store", "filename", "name"), SEARCHES)
def test_each_status_branch_expands_to_the_sql_written_out_before(store: str, filename: str,
                                                                    name: str) -> None:
    """The per-status listings write their branch once (``{_branch|queued,...}``); the
    loader's expansion is, but for whitespace, the SQL they spelled out branch by branch
    before (``data/run_search_expanded.json``, captured from those files), so that no
    branch's status, cursor or index predicate changed with the rewrite."""
    sql = load_queries(f"tether.store.{store}", filename)[name]
    key = f"{store} {name}" if filename == "serve.sql" else f"{store} {filename} {name}"
    assert " ".join(sql.split()) == EXPANDED[key]
    assert "{status}" not in sql


def test_an_each_expansion_of_an_unknown_fragment_is_refused(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    (tmp_path / "each_pkg").mkdir()
    (tmp_path / "each_pkg" / "__init__.py").write_text("")
    (tmp_path / "each_pkg" / "queries.sql").write_text(
        "-- _branch --\n-- one status\nSELECT '{status}'\n\n"
        "-- both --\n-- the branch twice\n{_branch|queued,running};\n\n"
        "-- typo --\n-- an unknown fragment\n{_brnach|queued,running};\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="typo: no fragment _brnach"):
        load_queries("each_pkg")
    (tmp_path / "each_pkg" / "queries.sql").write_text(
        "-- _branch --\n-- one status\nSELECT '{status}'\n\n"
        "-- both --\n-- the branch twice\n{_branch|queued,running};\n")
    assert load_queries("each_pkg") == {
        "both": "SELECT 'queued'\nUNION ALL\nSELECT 'running'"}
