"""The control plane's run listing (``Store.run_search``) on every backend: without a
filter it merges the newest runs of each status (serve.sql, run_search_all) instead of
ordering the whole table, and must list exactly what an ordering of all runs lists, page
after page; on SQLite that query reads indexes only, never the whole runs table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tether._types import RunStatus
from tether.store import Store

from .conftest import T0, run_record, sqlite_plans


async def _all_pages(store: Store, limit: int, **filters: str) -> list[str]:
    ids: list[str] = []
    before: tuple[float, str] | None = None
    while True:
        page = await store.run_search(limit=limit, before=before, **filters)
        ids += [r.run_id for r in page]
        if len(page) < limit:
            return ids
        before = (page[-1].created_at, page[-1].run_id)


#: A run's field each ``run_search`` filter matches (``text``: a substring of the id).
_FIELDS = {"status": "status", "workflow": "workflow", "queue": "queue",
           "parent": "parent_run_id"}


async def _pages_match(store: Store, newest_first: list[Any], by: str,
                       values: tuple[str, ...], filters: list[dict[str, str]], *,
                       cursor_at: float) -> None:
    """Every page of ``run_search`` filtered by ``by`` (each of ``values``) and each of
    ``filters`` lists exactly the runs of ``newest_first`` that match, in that order, at
    page sizes 1, 4 and 50; and a cursor from the middle of the period (the web UI's
    and the API's later pages) lists the older runs of ``values[0]``."""
    for value in values:
        for more in filters:
            wanted = {by: value, **more}
            expected = [r.run_id for r in newest_first if all(
                getattr(r, _FIELDS[k]) == v if k in _FIELDS else v in r.run_id
                for k, v in wanted.items())]
            for limit in (1, 4, 50):
                assert await _all_pages(store, limit, **wanted) == expected, (wanted, limit)
    cursor = (cursor_at, "")
    expected = [r.run_id for r in newest_first
                if getattr(r, _FIELDS[by]) == values[0] and (r.created_at, r.run_id) < cursor]
    page = await store.run_search(**{by: values[0]}, limit=100, before=cursor)
    assert [r.run_id for r in page] == expected


async def test_unfiltered_pages_list_every_run_of_every_status_newest_first(
        store: Store) -> None:
    expected: list[tuple[float, str]] = []
    for i in range(40):
        status = list(RunStatus)[i % len(RunStatus)]
        # Ties of created_at (four runs per instant) are ordered by run id, descending.
        at = T0 + i // 4
        run_id = f"r{(i * 7) % 40:02d}"
        await store.run_insert(run=run_record(run_id, status=status.value, now=at))
        expected.append((at, run_id))
    newest_first = [rid for _, rid in sorted(expected, reverse=True)]
    for limit in (1, 3, 7, 40, 100):
        assert await _all_pages(store, limit) == newest_first
    # The filtered query (workflow "wf" is every run's) agrees.
    assert await _all_pages(store, 3, workflow="wf") == newest_first
    for status in RunStatus:
        assert await _all_pages(store, 2, status=status.value) == [
            rid for rid in newest_first if int(rid[1:]) in {(i * 7) % 40 for i in range(40)
                                                          if list(RunStatus)[i % 7] == status}]
    first = await store.run_search(limit=5)
    assert [r.run_id for r in first] == newest_first[:5]
    assert {r.status for r in await store.run_search(limit=40)} == {s.value for s in RunStatus}


def test_sqlite_unfiltered_listing_scans_no_table(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN: each status's branch searches an index (no "SCAN tether_runs"
    that reads every run, as run_search did without a filter)."""
    plan_of = sqlite_plans(tmp_path, "run_search_all")
    for before in (None, T0):
        plan = plan_of({"status": None, "limit": 50, "before_at": before,
                        "before_id": "r" if before else None})
        searches = [p for p in plan if "tether_runs" in p]
        assert searches, plan
        assert all(p.startswith("SEARCH") for p in searches), plan


async def test_run_list_without_a_status_lists_every_status_newest_first(
        store: Store) -> None:
    """``Store.run_list`` (``tether runs``, ``App.list_runs``): ties of created_at by run
    id ascending, as before the per-status merge."""
    expected: list[tuple[float, str]] = []
    for i in range(21):
        status = list(RunStatus)[i % len(RunStatus)]
        at = T0 + i // 3
        run_id = f"r{(i * 5) % 21:02d}"
        await store.run_insert(run=run_record(run_id, status=status.value, now=at))
        expected.append((-at, run_id))
    order = [rid for _, rid in sorted(expected)]
    for limit in (1, 4, 21, 50):
        assert [r.run_id for r in await store.run_list(limit=limit)] == order[:limit]
    assert {r.status for r in await store.run_list(limit=21)} == {s.value for s in RunStatus}


async def test_a_listed_fork_says_its_origin_under_every_listing(store: Store) -> None:
    """The runs page and ``GET /api/v1/runs`` mark a fork "fork of X at N" from the
    listed record: every variant of the listing (the per-status merge without a filter
    or with a status alone, the filtered query) returns ``forked_from`` and
    ``forked_at`` as ``run_get`` does, not None; a run that is no fork has None."""
    await store.run_insert(run=run_record("src", status="completed", now=T0))
    fork = dataclasses.replace(run_record("src-fork", now=T0 + 1), forked_from="src",
                               forked_at=2)
    await store.run_insert(run=fork)
    await store.run_insert(run=run_record("kid", now=T0 + 2, parent="src",
                                          parent_position=0))
    expected = {"src": (None, None), "src-fork": ("src", 2), "kid": (None, None)}
    listings: list[dict[str, object]] = [
        {}, {"status": "queued"}, {"workflow": "wf"}, {"queue": "q"}, {"text": "src-"},
        {"before": (T0 + 1.5, "")}, {"status": "queued", "text": "fork"}]
    for filters in listings:
        found = await store.run_search(limit=10, **filters)  # type: ignore[arg-type]
        assert found, filters
        for r in found:
            assert (r.forked_from, r.forked_at) == expected[r.run_id], (filters, r)
            stored = await store.run_get(r.run_id)
            assert stored is not None
            assert (r.version, r.generation, r.erased_at) == (
                stored.version, stored.generation, stored.erased_at), (filters, r)
    assert {r.run_id for r in await store.run_search(limit=10)} == set(expected)
    assert [r.run_id for r in await store.run_search(parent="src")] == ["kid"]


async def test_workflow_filter_pages_list_exactly_the_matching_runs(store: Store) -> None:
    """A workflow filter (run_search_workflow: the newest runs of the workflow in each
    status, merged) lists what ordering all runs and filtering them lists, page after
    page: with a status, a queue, a parent or ``q`` too, across ties of created_at, for
    every status (``queued`` and ``running`` through another index than the rest)."""
    statuses = [s.value for s in RunStatus]
    records = []
    for i in range(84):
        record = dataclasses.replace(
            run_record(f"r{(i * 11) % 84:02d}", status=statuses[i % 7], now=T0 + i // 3,
                       workflow=("chat", "ingest", "rare")[(i // 7) % 3 if i % 13 else 2],
                       queue="q" if i % 5 else "bulk"),
            parent_run_id="p" if i % 4 == 0 else None)
        await store.run_insert(run=record)
        records.append(record)
    newest_first = sorted(records, key=lambda r: (r.created_at, r.run_id), reverse=True)
    filters: list[dict[str, str]] = [{}]
    filters += [{"status": s} for s in statuses]
    filters += [{"queue": "bulk"}, {"parent": "p"}, {"text": "1"},
                {"status": "running", "text": "3"}, {"status": "queued", "queue": "q"}]
    await _pages_match(store, newest_first, "workflow", ("chat", "rare", "absent"),
                       filters, cursor_at=T0 + 14)


def test_sqlite_workflow_listing_reads_the_workflow_index(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of run_search_workflow: every branch searches an index, the
    ones of the statuses other than ``queued``, ``running`` and ``waiting``
    tether_runs_workflow (migration 0016), those three tether_runs_status; run_search
    scanned every run and sorted the workflow's (0.3-5 s on 1.1 M runs)."""
    plan_of = sqlite_plans(tmp_path, "run_search_workflow")
    for status, before in ((None, None), (None, T0), ("completed", T0), ("running", None),
                           ("queued", T0)):
        plan = plan_of({"workflow": "wf", "status": status, "queue": None, "parent": None,
                        "text": None, "limit": 50, "before_at": before,
                        "before_id": "r" if before else None})
        searches = [p for p in plan if "tether_runs" in p]
        assert all(p.startswith("SEARCH") for p in searches), plan
        assert sum("tether_runs_workflow" in p for p in searches) == 4, plan
        assert sum("tether_runs_status" in p for p in searches) == 3, plan


async def test_queue_filter_pages_list_exactly_the_matching_runs(store: Store) -> None:
    """A queue filter (on PostgreSQL run_search_queue: the newest runs of each status
    read until the queue's are found, merged) lists what ordering all runs and filtering
    them lists, page after page: with a status too, across ties of created_at, for every
    status (``running`` through runs_held), for a queue with no run of some status and
    for one with no run at all; with a parent or ``q`` too (run_search)."""
    statuses = [s.value for s in RunStatus]
    records = []
    for i in range(70):
        record = dataclasses.replace(
            run_record(f"r{(i * 11) % 70:02d}", status=statuses[i % 7], now=T0 + i // 3,
                       queue="bulk" if i % 5 == 0 else "q"),
            parent_run_id="p" if i % 4 == 0 else None)
        await store.run_insert(run=record)
        records.append(record)
    newest_first = sorted(records, key=lambda r: (r.created_at, r.run_id), reverse=True)
    filters: list[dict[str, str]] = [{}]
    filters += [{"status": s} for s in statuses]
    filters += [{"parent": "p"}, {"text": "1"}, {"status": "failed", "text": "3"}]
    await _pages_match(store, newest_first, "queue", ("q", "bulk", "absent"), filters,
                       cursor_at=T0 + 11)


def test_sqlite_queue_listing_searches_the_status_index(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of run_search_queue: every status's branch searches an index
    (no "SCAN tether_runs", which run_search's plan was for a queue: every run read,
    0.4-0.6 s on 1.1 M runs), with a status and a cursor or not: the ended statuses'
    tether_runs_queue (migration 0018), the queued, running and waiting runs'
    tether_runs_status. Before tether_runs_queue every branch read tether_runs_status,
    and a queue with no run read every run's entry (1.1 M runs: 0.27-0.52 s)."""
    plan_of = sqlite_plans(tmp_path, "run_search_queue")
    for status in (None, "failed"):
        for before in (None, T0):
            plan = plan_of({"queue": "q", "status": status, "limit": 50,
                            "before_at": before, "before_id": "r" if before else None})
            searches = [p for p in plan if "tether_runs" in p]
            assert len(searches) == 7 and all(p.startswith("SEARCH") for p in searches), plan
            assert sum("tether_runs_queue" in p for p in searches) == 4, plan
            assert sum("tether_runs_status" in p for p in searches) == 3, plan


async def test_parent_filter_pages_list_exactly_the_matching_runs(store: Store) -> None:
    """A parent filter (the children of a run: a run page's tree, GET /api/v1/runs
    ?parent=, the run's document; on SQLite run_search_parent, through
    tether_runs_parent) lists what ordering all runs and filtering them lists, page after
    page: with a status, a queue or ``q`` too (a workflow too: run_search_workflow),
    across ties of created_at, for a parent with no child."""
    statuses = [s.value for s in RunStatus]
    records = []
    for i in range(70):
        record = dataclasses.replace(
            run_record(f"r{(i * 11) % 70:02d}", status=statuses[i % 7], now=T0 + i // 3,
                       queue="bulk" if i % 5 == 0 else "q"),
            parent_run_id=("p", "p2", None)[i % 3])
        await store.run_insert(run=record)
        records.append(record)
    newest_first = sorted(records, key=lambda r: (r.created_at, r.run_id), reverse=True)
    filters: list[dict[str, str]] = [{}]
    filters += [{"status": s} for s in statuses]
    filters += [{"queue": "bulk"}, {"text": "1"}, {"workflow": "wf"},
                {"status": "failed", "queue": "q"}]
    await _pages_match(store, newest_first, "parent", ("p", "p2", "absent"), filters,
                       cursor_at=T0 + 11)


def test_sqlite_children_are_read_through_the_parent_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPLAIN QUERY PLAN of run_search_parent: a SEARCH of
    tether_runs_parent, never a scan of every run, which run_search's plan was for a
    parent (``:parent IS NULL OR ...`` keeps SQLite off the index): a run page's tree
    asks for the children of each child it draws, 101 scans a redraw (110,000 runs:
    3-5 s). And the store sends a parent filter there."""
    import asyncio

    from tether.store import open_store
    from tether.store.sqlite import _serve

    plan_of = sqlite_plans(tmp_path, "run_search_parent")
    for extra in ({}, {"status": "failed", "before_at": T0, "before_id": "r"},
                  {"queue": "q", "text": "1"}):
        plan = plan_of({"parent": "p", "status": None, "queue": None, "text": None,
                        "limit": 50, "before_at": None, "before_id": None, **extra})
        searches = [p for p in plan if "tether_runs" in p]
        assert searches and all(p.startswith("SEARCH") and "tether_runs_parent" in p
                                for p in searches), plan

    used: list[str] = []

    class Seen(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: str) -> str:
            used.append(key)
            return str(super().__getitem__(key))

    monkeypatch.setattr(_serve, "Q", Seen(_serve.Q))

    async def search() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
        await store.open()
        try:
            await store.run_search(parent="p", limit=5)
            await store.run_search(parent="p", status="failed", queue="q", limit=5)
        finally:
            await store.close()

    asyncio.run(search())
    assert used == ["run_search_parent", "run_search_parent"], used


def test_sqlite_the_children_of_many_runs_are_read_through_the_parent_index(
        tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of run_children_many (a run page's tree: the children of all
    the runs it draws at a level, in one query): a SEARCH of tether_runs_parent for the
    parents' children, the runs drawn read again by rowid; never a scan of every run."""
    plan = sqlite_plans(tmp_path, "run_children_many")(
        {"parents": '["p", "q", "r"]', "limit": 100})
    reads = [p for p in plan if p.startswith(("SCAN", "SEARCH")) and "json_each" not in p
             and "subquery" not in p and p != "SCAN kids" and p != "SCAN k"]
    assert reads == ["SEARCH tether_runs USING INDEX tether_runs_parent (parent_run_id=?)",
                     "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)"], plan
