"""The control plane's queries on PostgreSQL (``ServeQueries``): listing with filters
and a cursor, the stored events of a run, and store-wide numbers for ``/metrics``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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

SERVE_QUERIES = load_queries("tether.store.postgres", "serve.sql")
#: ``<txid>-<event_id>``: a row stored before migration 0013; ``<event_id>``: one after.
_CURSOR = re.compile(r"^(?:(\d{1,20})-)?(\d{1,19})$")
_BIGINT_MAX = 2**63 - 1


class PostgresServeQueries:
    """Mixed into ``PostgresStore``; every method is one round trip on the pool.

    Event ids are ``<event_id>``: per run, ids are taken in commit order (migration
    0013), so a cursor never skips an event that commits late. Rows stored before that
    migration keep the ids ``<txid>-<event_id>`` that their readers handed out, and come
    first, in that order, so a cursor held across the upgrade resumes where it was."""

    _q: dict[str, str]  # PostgresStore's

    async def _one(self, name: str, params: Any, *,
                   prepare: bool | None = None) -> Any: ...  # PostgresStore's

    async def _run_op(self, fn: Any) -> Any: ...  # PostgresStore's

    async def run_search(self, *, status: str | None = None, workflow: str | None = None,
                         queue: str | None = None, parent: str | None = None,
                         text: str | None = None, limit: int = 50,
                         before: tuple[float, str] | None = None) -> list[RunRecord]:
        # Nothing to narrow the runs by: the per-status merge (serve.sql, run_search_all);
        # a workflow: the same merge within it (run_search_workflow, runs_workflow); a
        # queue without parent or text: the merge filtered by queue (run_search_queue).
        unfiltered = not (status or workflow or queue or parent or text)
        name = ("run_search_all" if unfiltered else
                "run_search_workflow" if workflow else
                "run_search_queue" if queue and not (parent or text) else "run_search")
        # Every query but run_search_all unprepared, so planned with its values every
        # time: after five calls psycopg prepares a statement, and PostgreSQL may then
        # switch it to a generic plan, planned once for any values. run_search_workflow's
        # guessed one run per workflow and status and read all of them to sort them (a
        # common workflow's page on 1.1 M runs: 90-135 ms instead of 3-4); run_search's,
        # with its `%(x)s IS NULL OR col = %(x)s` filters, is a scan of every run for
        # any filter (a status or parent page 0.24-0.42 s instead of 0.5-1.7 ms), chosen
        # once a filter's plans cost more than it (queue=default on 1.1 M runs: 107,978
        # against 103,351); run_search_queue's would guess the queue's share. Planning
        # each time costs ~0.2 ms. run_search_all's generic plan is its custom one.
        rows, _ = await self._one(name, {
            "status": status, "workflow": workflow, "queue": queue, "parent": parent,
            "text": text or None, "limit": limit,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None},
            prepare=None if unfiltered else False)
        return [run_from_row(r) for r in rows]

    async def run_children_many(self, *, parents: Sequence[str],
                                limit: int) -> dict[str, RunChildren]:
        ids = list(dict.fromkeys(parents))
        if not ids:
            return {}
        # Never prepared (planned with its parents every time, as run_search with a
        # filter): a generic plan guesses ten parents' children of any parents, and on
        # a store of a few large families that guess is most runs, a scan of them all.
        rows, _ = await self._one("run_children_many", {
            "parents": ids, "limit": max(0, min(limit, _BIGINT_MAX))}, prepare=False)
        return children_from_rows(ids, rows)

    async def run_list_awaiting_approval(self, *, limit: int = 1000,
                                         after: tuple[float, str] | None = None
                                         ) -> list[RunRecord]:
        rows, _ = await self._one("run_list_awaiting_approval", {
            "limit": limit, "after_at": after[0] if after else float("-inf"),
            "after_id": after[1] if after else ""})
        return [run_from_row(r) for r in rows]

    async def signals_pending_many(self, *, run_ids: Sequence[str],
                                   name: str) -> dict[str, list[str | None]]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        # (never prepared, as run_children_many: planned with its runs every time)
        rows, _ = await self._one("signals_pending_many", {"run_ids": ids, "name": name},
                                  prepare=False)
        found: dict[str, list[str | None]] = {}
        for run_id, payload in rows:
            found.setdefault(run_id, []).append(payload)
        return found

    async def run_count_awaiting_approval(self, *, now: float, limit: int,
                                          upto: tuple[float, str] | None = None
                                          ) -> tuple[int, int]:
        rows, _ = await self._one("run_count_awaiting_approval", {
            "now": now, "limit": max(0, min(limit, _BIGINT_MAX)),
            "upto_at": upto[0] if upto else float("-inf"), "upto_id": upto[1] if upto else ""})
        return int(rows[0][0]), int(rows[0][1] or 0)

    async def run_events_read(self, *, run_id: str, after: str | None,
                              limit: int = 500) -> list[RunEvent]:
        txid, event_id, last = _cursor(after)
        rows, _ = await self._one("run_events_read", {
            "run_id": run_id, "txid": txid, "event_id": event_id, "after": last,
            "limit": limit})
        return [RunEvent(str(i) if tx is None else f"{tx}-{i}", kind, data)
                for tx, i, kind, data in rows]

    async def run_event_exists(self, *, run_id: str, event_id: str) -> bool:
        txid, old_id, new_id = _cursor(event_id)
        if txid is None:
            rows, _ = await self._one("run_event_exists",
                                      {"run_id": run_id, "event_id": new_id})
        else:
            rows, _ = await self._one("run_event_exists_txid",
                                      {"run_id": run_id, "txid": txid, "event_id": old_id})
        return bool(rows[0][0])

    async def run_events_latest(self, *, run_id: str, limit: int = 500,
                                kind: str | None = None) -> list[RunEvent]:
        rows, _ = await self._one("run_events_latest", {
            "run_id": run_id, "limit": max(0, min(limit, _BIGINT_MAX)),
            "kinds": None if kind is None else stored_event_kinds(kind)})
        return [RunEvent(str(i) if tx is None else f"{tx}-{i}", kind, data)
                for tx, i, kind, data in rows]

    async def store_stats(self, *, now: float) -> StoreStats:
        steps = [("stats_workflows", None), ("stats_queues", None), ("stats_steps", None),
                 ("stats_metrics", None), ("stats_workers", {"since": now - WORKER_STALE}),
                 ("metric_totals", None), ("stats_run_durations", None)]

        async def go(conn: Any) -> list[list[Any]]:
            # One snapshot (REPEATABLE READ): a purge that commits between the live
            # figures' query and metric_totals' would be counted twice, then once.
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                out = []
                for name, params in steps:
                    cur = await conn.execute(self._q[name], params)
                    out.append(await cur.fetchall())
                return out

        by_workflow, queues, step_rows, llm, workers, totals, durations = (
            await self._run_op(go))
        return stats_with_totals(
            by_workflow,
            {q: (int(n), float(oldest)) for q, n, oldest in queues}, step_rows, llm[0],
            int(workers[0][0]), {str(k): float(v) for k, v in totals}, durations)

    async def store_live_stats(self, *, now: float) -> LiveStats:
        queues, _ = await self._one("stats_queues", None)
        workers, _ = await self._one("stats_workers", {"since": now - WORKER_STALE})
        return LiveStats({q: (int(n), float(oldest)) for q, n, oldest in queues},
                         int(workers[0][0]))

    async def queue_counts(self, *, now: float) -> dict[str, QueueCounts]:
        rows, _ = await self._one("queue_counts", {"now": now})
        return queue_counts_of(rows)



def _cursor(after: str | None) -> tuple[str | None, int, int]:
    """What ``run_events_read`` reads after ``after``: (txid, event_id) among the rows
    stored before migration 0013 (txid None: none of them), and the event_id after
    which the rows stored since are read. Raises: ValueError."""
    if not after:
        return "0", 0, 0
    m = _CURSOR.match(after)
    if m is None or int(m.group(2)) > _BIGINT_MAX:
        raise ValueError(f"not an event id of this store: {after!r}")
    if m.group(1) is None:
        return None, 0, int(m.group(2))
    return m.group(1), int(m.group(2)), 0
