"""The control plane's queries on SQLite (``ServeQueries``): listing with filters and a
cursor, the stored events of a run, and store-wide numbers for ``/metrics``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import apsw

from tether._types import RunRecord
from tether.store._port import (
    WORKER_STALE,
    LiveStats,
    QueueCounts,
    RunChildren,
    RunEvent,
    StoreStats,
    queue_counts_of,
    stats_with_totals,
    stored_event_kinds,
)
from tether.store._sql import children_from_rows, load_queries, run_from_row
from tether.store.sqlite._writer import WriterClient

Q = load_queries("tether.store.sqlite", "serve.sql")
#: The largest event id SQLite can hold (a signed 64-bit integer).
_MAX_EVENT_ID = (1 << 63) - 1


class SqliteServeQueries(WriterClient):
    """Mixed into ``SqliteStore``: reads run on its writer thread like every query, but
    ``store_stats``, which scans the whole store, on a connection of its own."""

    path: str  # SqliteStore's
    vfs: str | None  # SqliteStore's

    _open_file: Callable[[], apsw.Connection]  # SqliteStore's method

    async def run_search(self, *, status: str | None = None, workflow: str | None = None,
                         queue: str | None = None, parent: str | None = None,
                         text: str | None = None, limit: int = 50,
                         before: tuple[float, str] | None = None) -> list[RunRecord]:
        params = {"status": status, "workflow": workflow, "queue": queue, "parent": parent,
                  "text": text or None, "limit": limit,
                  "before_at": before[0] if before else None,
                  "before_id": before[1] if before else None}
        return await self._read(_run_search, params)

    async def run_events_read(self, *, run_id: str, after: str | None,
                              limit: int = 500) -> list[RunEvent]:
        last = _event_id(after) if after else 0
        return await self._read(_run_events_read, run_id, last, limit)

    async def run_event_exists(self, *, run_id: str, event_id: str) -> bool:
        params = {"run_id": run_id, "event_id": _event_id(event_id)}
        return await self._read(_run_event_exists, params)

    async def run_events_latest(self, *, run_id: str, limit: int = 500,
                                kind: str | None = None) -> list[RunEvent]:
        kinds = None if kind is None else json.dumps(stored_event_kinds(kind))
        return await self._read(_run_events_latest, run_id, max(0, min(limit, 2**62)), kinds)

    async def store_stats(self, *, now: float) -> StoreStats:
        if self.vfs is not None:  # (a VFS without shared memory: one connection only)
            return await self._read(_store_stats, now - WORKER_STALE)
        # Seconds on a large store: not on the writer thread, which every other
        # operation of this process waits for, but on a reading connection of its own
        # in a thread (WAL: it reads one snapshot and holds no writer back).
        return await asyncio.to_thread(self._store_stats_apart, now - WORKER_STALE)

    def _store_stats_apart(self, alive_since: float) -> StoreStats:
        conn = self._open_file()
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute("BEGIN")  # (one snapshot: a purge is counted once)
            try:
                return _store_stats(conn, alive_since)
            finally:
                conn.execute("COMMIT")
        finally:
            conn.close()

    async def run_list_awaiting_approval(self, *, limit: int = 1000,
                                         after: tuple[float, str] | None = None
                                         ) -> list[RunRecord]:
        params = {"limit": max(0, min(limit, 2**62)),  # SQLite integers are 64-bit
                  "after_at": after[0] if after else float("-inf"),
                  "after_id": after[1] if after else ""}
        return await self._read(_run_list_awaiting_approval, params)

    async def signals_pending_many(self, *, run_ids: Sequence[str],
                                   name: str) -> dict[str, list[str | None]]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        return await self._read(_signals_pending_many, json.dumps(ids), name)

    async def run_count_awaiting_approval(self, *, now: float, limit: int,
                                          upto: tuple[float, str] | None = None
                                          ) -> tuple[int, int]:
        params = {"now": now, "limit": max(0, min(limit, 2**62)),
                  "upto_at": upto[0] if upto else float("-inf"),
                  "upto_id": upto[1] if upto else ""}
        return await self._read(_run_count_awaiting_approval, params)

    async def store_live_stats(self, *, now: float) -> LiveStats:
        return await self._read(_store_live_stats, now - WORKER_STALE)

    async def queue_counts(self, *, now: float) -> dict[str, QueueCounts]:
        return await self._read(_queue_counts, now)

    async def run_children_many(self, *, parents: Sequence[str],
                                limit: int) -> dict[str, RunChildren]:
        ids = list(dict.fromkeys(parents))
        if not ids:
            return {}
        params = {"parents": json.dumps(ids), "limit": max(0, min(limit, 2**62))}
        return await self._read(_run_children_many, ids, params)


def _run_search(conn: apsw.Connection, params: dict[str, Any]) -> list[RunRecord]:
    # Nothing but a status to narrow the runs by: the per-status merge (serve.sql,
    # run_search_all); `:status IS NULL OR status = :status` scans every run (5.6 s on 1.1 M).
    # A workflow: the same merge within it (run_search_workflow, tether_runs_workflow); a
    # queue without parent or text: the merge filtered by queue (run_search_queue); a
    # parent: its children through tether_runs_parent (run_search_parent).
    unfiltered = not any(params[k] for k in ("workflow", "queue", "parent", "text"))
    by_queue = bool(params["queue"]) and not (params["workflow"] or params["parent"]
                                               or params["text"])
    if unfiltered or by_queue:
        keep = ("status", "limit", "before_at", "before_id") + (("queue",) if by_queue else ())
        params = {k: params[k] for k in keep}
    name = ("run_search_all" if unfiltered else "run_search_queue" if by_queue else
            "run_search_workflow" if params["workflow"] else
            "run_search_parent" if params["parent"] else "run_search")
    if name == "run_search_parent":
        params = {k: v for k, v in params.items() if k != "workflow"}
    return [run_from_row(r) for r in conn.execute(Q[name], params)]


def _run_children_many(conn: apsw.Connection, parents: list[str],
                       params: dict[str, Any]) -> dict[str, RunChildren]:
    return children_from_rows(parents, conn.execute(Q["run_children_many"], params))


def _run_list_awaiting_approval(conn: apsw.Connection,
                                params: dict[str, Any]) -> list[RunRecord]:
    return [run_from_row(r) for r in conn.execute(Q["run_list_awaiting_approval"], params)]


def _signals_pending_many(conn: apsw.Connection, ids: str,
                          name: str) -> dict[str, list[str | None]]:
    found: dict[str, list[str | None]] = {}
    for run_id, payload in conn.execute(Q["signals_pending_many"],
                                        {"run_ids": ids, "name": name}):
        found.setdefault(run_id, []).append(payload)
    return found

def _run_count_awaiting_approval(conn: apsw.Connection,
                                 params: dict[str, Any]) -> tuple[int, int]:
    total, upto = next(iter(conn.execute(Q["run_count_awaiting_approval"], params)))
    return int(total), int(upto or 0)


def _run_events_read(conn: apsw.Connection, run_id: str, last: int,
                     limit: int) -> list[RunEvent]:
    params = {"run_id": run_id, "after": last, "limit": limit}
    return [RunEvent(str(i), kind, data)
            for i, kind, data in conn.execute(Q["run_events_read"], params)]


def _event_id(text: str) -> int:
    """An event id as the store holds it. Raises: ValueError for one it never makes."""
    # ASCII digits within SQLite's 64-bit integers: "²" passes isdigit() and a larger
    # number overflows the query's parameter (both were a 500).
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_EVENT_ID:
        raise ValueError(f"not an event id of this store: {text!r}")
    return int(text)


def _run_event_exists(conn: apsw.Connection, params: dict[str, Any]) -> bool:
    rows: list[Any] = conn.execute(Q["run_event_exists"], params).fetchall()
    return bool(rows[0][0])


def _run_events_latest(conn: apsw.Connection, run_id: str, limit: int,
                       kinds: str | None) -> list[RunEvent]:
    params = {"run_id": run_id, "limit": limit, "kinds": kinds}
    return [RunEvent(str(i), kind, data)
            for i, kind, data in conn.execute(Q["run_events_latest"], params)]


def event_chunk(conn: apsw.Connection, run_id: str, data: str) -> None:
    """Store a streamed chunk as an event of its run (inside the writer's transaction)."""
    conn.execute(Q["run_event_chunk"], {"run_id": run_id, "data": data})


def _store_stats(conn: apsw.Connection, alive_since: float) -> StoreStats:
    by_workflow: Any = conn.execute(Q["stats_workflows"]).fetchall()
    rows: Any = conn.execute(Q["stats_queues"]).fetchall()
    queues = {str(q): (int(n), float(oldest)) for q, n, oldest in rows}
    steps: Any = conn.execute(Q["stats_steps"]).fetchall()
    llm: Any = conn.execute(Q["stats_metrics"]).fetchall()[0]
    workers: Any = conn.execute(Q["stats_workers"], {"alive_since": alive_since}).fetchall()[0][0]
    totals = {str(k): float(v) for k, v in conn.execute(Q["metric_totals"])}
    durations: Any = conn.execute(Q["stats_run_durations"]).fetchall()
    return stats_with_totals(by_workflow, queues, steps, llm, int(workers), totals,
                             durations)


def _queue_counts(conn: apsw.Connection, now: float) -> dict[str, QueueCounts]:
    return queue_counts_of(conn.execute(Q["queue_counts"], {"now": now}).fetchall())


def _store_live_stats(conn: apsw.Connection, alive_since: float) -> LiveStats:
    rows: Any = conn.execute(Q["stats_queues"]).fetchall()
    workers: Any = conn.execute(Q["stats_workers"], {"alive_since": alive_since}).fetchall()[0][0]
    return LiveStats({str(q): (int(n), float(oldest)) for q, n, oldest in rows}, int(workers))
