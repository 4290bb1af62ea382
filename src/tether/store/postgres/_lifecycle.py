"""PostgreSQL operations for runs over their whole life (migration 0003): attempts,
retry, fork, continue-as-new, versions, schedules and retention.

Each function takes an autocommit connection and opens its own transaction where it
writes more than one statement; ``PostgresStore`` runs them through ``_run_op`` (error
translation, reruns after a deadlock)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from tether._types import JournalEntry, Lease, RunRecord
from tether.errors import ConfigError, LeaseLost, RunNotFound
from tether.store._lifecycle import (
    ERASABLE,
    RETRYABLE,
    ArchivedJournal,
    AttemptRecord,
    ChildRow,
    PurgeReport,
    RetryReport,
    ScheduleRecord,
    children_to_retry,
    not_retryable,
    refuse_erased,
    refuse_unfinished,
    retry_plan,
    run_kv_keys,
)
from tether.store._port import metric_totals_of, run_end_totals_of
from tether.store._sql import run_from_row
from tether.store.postgres._arrays import Float8Array, Int4Array, TextArray

Conn = psycopg.AsyncConnection[Any]

_RUN_COLS = (
    "run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner, "
    "fencing_token, available_at, cancel_requested, waiting_for, status_info, parent_run_id, "
    "finished_at, parent_position, on_parent_cancel, metrics, "
    "version, forked_from, forked_at, generation, erased_at, crashes, crashes_seen, "
    "crash_progress"
)
_ENTRY_COLS = ("position, kind, name, status, result, error, attempts, started_at, "
               "finished_at, next_attempt_at, args")
_SCHEDULE_COLS = ("name, workflow, queue, cron, timezone, input, overlap, catchup, "
                  "catchup_max, paused, next_tick, last_tick, last_run_id, version, "
                  "created_at, updated_at")
_ERASED = json.dumps({"erased": True})


class Lifecycle:
    """The SQL of migration 0003's operations for one schema."""

    def __init__(self, schema: str, channel: str) -> None:
        self.s = schema
        self.channel = channel

    async def _rows(self, conn: Conn, sql: str, params: Sequence[Any] | dict[str, Any] = ()
                    ) -> list[Any]:
        cur = await conn.execute(sql.replace("{s}", self.s), params)
        return await cur.fetchall() if cur.description is not None else []

    async def _count(self, conn: Conn, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await conn.execute(sql.replace("{s}", self.s), params)
        return cur.rowcount

    async def _wake(self, conn: Conn) -> None:
        await conn.execute(f"SELECT {self.s}.wake(%s, 1)", (self.channel,))

    async def _get(self, conn: Conn, run_id: str, lock: bool | str = False
                   ) -> RunRecord | None:
        """The run; with ``lock``, its row locked ``FOR UPDATE`` (``"SHARE"``: ``FOR
        SHARE``) until the transaction ends."""
        mode = "SHARE" if lock == "SHARE" else "UPDATE"
        rows = await self._rows(conn, f"SELECT {_RUN_COLS} FROM {{s}}.runs WHERE run_id = %s"
                                + (f" FOR {mode}" if lock else ""), (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def _journal(self, conn: Conn, run_id: str) -> list[JournalEntry]:
        rows = await self._rows(conn, f"SELECT {_ENTRY_COLS} FROM {{s}}.journal "
                                "WHERE run_id = %s ORDER BY position", (run_id,))
        return [JournalEntry(*r) for r in rows]

    # -- attempts ---------------------------------------------------------------------

    async def attempt_record(self, conn: Conn, attempts: list[AttemptRecord]) -> None:
        """One statement over one binary array per column (as journal appends): a
        batch of 50 attempts costs the client one Bind, not 50 (executemany did)."""
        batch = sorted({a.attempt_id: a for a in attempts}.values(),
                       key=lambda a: a.attempt_id)  # an id once per statement
        if not batch:
            return
        cols = [TextArray([a.attempt_id for a in batch]), TextArray([a.run_id for a in batch]),
                Int4Array([a.generation for a in batch]), Int4Array([a.position for a in batch]),
                TextArray([a.name for a in batch]), Int4Array([a.attempt for a in batch]),
                TextArray([a.worker_id for a in batch]), TextArray([a.status for a in batch]),
                Float8Array([a.started_at for a in batch]),
                Float8Array([a.finished_at for a in batch]), TextArray([a.error for a in batch])]
        await conn.execute(
            f"INSERT INTO {self.s}.attempts (attempt_id, run_id, generation, position, "
            "name, attempt, worker_id, status, started_at, finished_at, error) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::integer[], %b::integer[], "
            "%b::text[], %b::integer[], %b::text[], %b::text[], %b::float8[], "
            "%b::float8[], %b::text[]) "
            "ON CONFLICT (attempt_id) DO UPDATE SET status = excluded.status, "
            "finished_at = excluded.finished_at, error = excluded.error",
            cols, prepare=False)

    async def attempt_list(self, conn: Conn, run_id: str) -> list[AttemptRecord]:
        rows = await self._rows(
            conn, "SELECT attempt_id, run_id, generation, position, name, attempt, worker_id, "
            "status, started_at, finished_at, error FROM {s}.attempts WHERE run_id = %s "
            "ORDER BY generation, position, started_at, attempt", (run_id,))
        return [AttemptRecord(*r) for r in rows]

    # -- retry, fork, continue as new ---------------------------------------------------

    async def run_retry(self, conn: Conn, run_id: str, version: str | None,
                        now: float) -> RetryReport:
        async with conn.transaction():
            run = await self._get(conn, run_id, lock=True)
            if run is None:
                raise RunNotFound(run_id)
            if run.status not in RETRYABLE:
                raise not_retryable(run_id, str(run.status),
                                    erased=run.erased_at is not None)
            refuse_erased(run_id, run.erased_at, "retry it")
            retried = {run_id}
            pending = [(run, version)]
            while pending:  # the run, then the children it retries (children_to_retry)
                current, as_version = pending.pop()
                for child in await self._retry_one(conn, current, as_version, now):
                    if child.run_id not in retried:
                        retried.add(child.run_id)
                        pending.append((child, as_version))  # (its parent's version)
            await self._wake(conn)
            stored = await self._get(conn, run_id)
        assert stored is not None
        return RetryReport(stored, sorted(retried - {run_id}), run.version)

    async def _retry_one(self, conn: Conn, run: RunRecord, version: str | None,
                         now: float) -> list[RunRecord]:
        """Queue ``run`` (locked) again as ``retry_plan`` says; the children to retry
        with it, locked and still retryable."""
        run_id = run.run_id
        copied = [] if run.forked_from is None else [p for (p,) in await self._rows(
            conn, "SELECT position FROM {s}.journal WHERE run_id = %s "
            "AND fencing_token = 0", (run_id,))]  # (see retry_plan)
        journal = await self._journal(conn, run_id)
        plan = retry_plan(run.status, journal, copied)
        if plan.delete:
            await conn.execute(f"DELETE FROM {self.s}.journal WHERE run_id = %s "
                               "AND position = ANY(%s)", (run_id, plan.delete))
        if plan.reset:
            await conn.execute(
                f"UPDATE {self.s}.journal SET status = 'pending', attempts = 0, "
                "next_attempt_at = NULL, finished_at = NULL, started_at = NULL "
                "WHERE run_id = %s AND position = ANY(%s)", (run_id, plan.reset))
        if plan.restore:  # (see RetryPlan.restore)
            await conn.execute(
                f"UPDATE {self.s}.journal SET kind = 'sleep', name = 'sleep', "
                "status = 'pending', finished_at = NULL WHERE run_id = %s "
                "AND position = ANY(%s) AND kind = 'cancel'", (run_id, plan.restore))
        ended = run.finished_at if run.finished_at is not None else run.created_at
        await self._add_metric_totals(conn, {  # (an ended run counts again when it ends)
            **metric_totals_of(plan.counted, ()),
            **run_end_totals_of([(run.workflow, str(run.status), ended - run.created_at)])})
        await conn.execute(
            f"UPDATE {self.s}.runs SET status = 'queued', result = NULL, error = NULL, "
            "finished_at = NULL, owner = NULL, available_at = %s, updated_at = %s, "
            "cancel_requested = false, cancel_requested_at = NULL, cancel_reason = NULL, "
            "cancelled_with = NULL, waiting_for = NULL, "
            "wait_signal = NULL, wait_child = NULL, version = %s, crashes = 0, "
            "crashes_seen = 0, crash_progress = NULL WHERE run_id = %s",
            (now, now, version, run_id))
        rows = await self._rows(
            conn, "SELECT run_id, parent_position, status, on_parent_cancel, erased_at "
            "FROM {s}.runs WHERE parent_run_id = %s ORDER BY run_id", (run_id,))
        ids = children_to_retry(run.status, journal, plan, [ChildRow(*r) for r in rows])
        children = [await self._get(conn, i, lock=True) for i in ids]
        return [c for c in children if c is not None and c.status in RETRYABLE]

    async def run_fork(self, conn: Conn, source_run_id: str, run: RunRecord,
                       at: int, entries: list[JournalEntry] | None = None) -> RunRecord:
        async with conn.transaction():
            # (Locked, shared: an erase of its family, which locks it for update, either
            # waits for the fork and then finds it, or ends first and the fork is refused.)
            source = await self._get(conn, source_run_id, lock="SHARE")
            if source is None:
                raise RunNotFound(source_run_id)
            refuse_erased(source_run_id, source.erased_at, "fork it")
            created = await self._count(
                conn, "INSERT INTO {s}.runs (run_id, workflow, queue, status, input, "
                "created_at, updated_at, available_at, version, forked_from, forked_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO NOTHING",
                (run.run_id, run.workflow, run.queue, run.status, run.input, run.created_at,
                 run.updated_at, run.available_at, run.version, run.forked_from,
                 run.forked_at))
            if not created:
                raise ConfigError(
                    f"run id {run.run_id!r} is already used; choose another")
            if entries is None:
                await conn.execute(
                    f"INSERT INTO {self.s}.journal (run_id, position, kind, name, status, "
                    "result, error, attempts, started_at, finished_at, next_attempt_at, "
                    "args, fencing_token) SELECT %s, position, kind, name, status, result, "
                    "error, attempts, started_at, finished_at, next_attempt_at, args, 0 "
                    f"FROM {self.s}.journal WHERE run_id = %s AND position < %s",
                    (run.run_id, source_run_id, at))
            else:
                for e in entries:  # (a fork's journal: given, encoded again for it)
                    if e.position >= at:
                        continue
                    await conn.execute(
                        f"INSERT INTO {self.s}.journal (run_id, position, kind, name, "
                        "status, result, error, attempts, started_at, finished_at, "
                        "next_attempt_at, args, fencing_token) VALUES (%s, %s, %s, %s, %s, "
                        "%s, %s, %s, %s, %s, %s, %s, 0)",
                        (run.run_id, e.position, e.kind.value, e.name, e.status.value,
                         e.result, e.error, e.attempts, e.started_at, e.finished_at,
                         e.next_attempt_at, e.args))
            await conn.execute(
                f"INSERT INTO {self.s}.blob_refs (key, run_id) SELECT key, %s "
                f"FROM {self.s}.blob_refs WHERE run_id = %s ORDER BY key "
                "ON CONFLICT DO NOTHING", (run.run_id, source_run_id))
            await self._wake(conn)
            stored = await self._get(conn, run.run_id)
        assert stored is not None
        return stored

    async def run_crash_mark(self, conn: Conn, lease: Lease, crashes: int,
                             progress: int) -> None:
        if not await self._count(
                conn, "UPDATE {s}.runs SET crashes = %s, crashes_seen = %s, "
                "crash_progress = %s WHERE run_id = %s AND fencing_token = %s "
                "AND status = 'running'",
                (crashes, crashes, progress, lease.run_id, lease.fencing_token)):
            raise LeaseLost(lease.run_id, lease.fencing_token)

    async def _drop_blob_refs(self, conn: Conn, run_ids: list[str]) -> list[str]:
        """Forget what runs reference; the keys they referenced. Takes the lock that
        keeps new references out until this transaction ends (see ``_sweep_blobs``)."""
        await conn.execute(f"LOCK TABLE {self.s}.blob_refs IN SHARE ROW EXCLUSIVE MODE")
        rows = await self._rows(conn, "DELETE FROM {s}.blob_refs WHERE run_id = ANY(%s) "
                                "RETURNING key", (run_ids,))
        return sorted({r[0] for r in rows})

    async def _sweep_blobs(self, conn: Conn, keys: list[str], report: PurgeReport) -> None:
        """Delete the texts of ``keys`` that no run references any more.

        Safe against a run storing a reference to one of them meanwhile: the caller's
        transaction holds SHARE ROW EXCLUSIVE on blob_refs, so a run's ``blob_put`` (which
        adds its reference first, then the texts, in one transaction) either committed
        before the lock was granted (this statement, with a fresh snapshot, sees its
        reference) or waits until this transaction commits, and then stores the texts
        again."""
        if keys:
            report.blobs += await self._count(
                conn, "DELETE FROM {s}.blobs b WHERE b.key = ANY(%s) AND NOT EXISTS ("
                "SELECT 1 FROM {s}.blob_refs r WHERE r.key = b.key)", (keys,))

    async def run_continue(self, conn: Conn, lease: Lease, input_text: str,
                           now: float) -> None:
        async with conn.transaction():
            held = await self._rows(
                conn, "SELECT 1 FROM {s}.runs WHERE run_id = %s AND fencing_token = %s "
                "AND status = 'running' FOR UPDATE", (lease.run_id, lease.fencing_token))
            if not held:
                raise LeaseLost(lease.run_id, lease.fencing_token)
            await conn.execute(
                f"INSERT INTO {self.s}.journal_archive (run_id, generation, position, kind, "
                "name, status, result, error, attempts, started_at, finished_at, "
                "next_attempt_at, args, input, fencing_token) SELECT j.run_id, "
                "r.generation, j.position, j.kind, j.name, j.status, j.result, j.error, "
                "j.attempts, j.started_at, j.finished_at, j.next_attempt_at, j.args, "
                "CASE WHEN j.position = 0 THEN r.input END, j.fencing_token "
                f"FROM {self.s}.journal j JOIN {self.s}.runs r ON r.run_id = j.run_id "
                "WHERE j.run_id = %s", (lease.run_id,))
            await conn.execute(f"DELETE FROM {self.s}.journal WHERE run_id = %s",
                               (lease.run_id,))
            await conn.execute(
                f"UPDATE {self.s}.runs SET status = 'queued', input = %s, "
                "generation = generation + 1, owner = NULL, available_at = %s, "
                "updated_at = %s, waiting_for = NULL, wait_signal = NULL, wait_child = NULL, "
                "status_info = NULL WHERE run_id = %s",
                (input_text, now, now, lease.run_id))
            await self._wake(conn)

    async def journal_archive_read(self, conn: Conn, run_id: str) -> list[ArchivedJournal]:
        rows = await self._rows(
            conn, f"SELECT generation, {_ENTRY_COLS}, input FROM {{s}}.journal_archive "
            "WHERE run_id = %s ORDER BY generation, position", (run_id,))
        gens: dict[int, tuple[str | None, list[JournalEntry]]] = {}
        for row in rows:
            _inp, entries = gens.setdefault(row[0], (None, []))
            if row[12] is not None:
                gens[row[0]] = (row[12], entries)
            entries.append(JournalEntry(*row[1:12]))
        return [ArchivedJournal(g, i, e) for g, (i, e) in sorted(gens.items())]

    # -- versions -----------------------------------------------------------------------

    async def run_versions(self, conn: Conn) -> list[tuple[str | None, str, int]]:
        rows = await self._rows(conn, "SELECT version, status, count(*) FROM {s}.runs "
                                "GROUP BY version, status ORDER BY version, status")
        return [(v, s, int(n)) for v, s, n in rows]

    async def run_version_candidates(self, conn: Conn, version: str) -> list[tuple[str, str]]:
        rows = await self._rows(
            conn, "SELECT run_id, workflow FROM {s}.runs WHERE version = %s "
            "AND status NOT IN ('completed', 'failed', 'cancelled') ORDER BY run_id",
            (version,))
        return [(r, w) for r, w in rows]

    async def run_version_set(self, conn: Conn, run_ids: list[str], from_version: str,
                              to_version: str, now: float) -> list[str]:
        async with conn.transaction():
            rows = await self._rows(
                conn, "UPDATE {s}.runs SET version = %s, updated_at = %s "
                "WHERE run_id = ANY(%s) AND version = %s "
                "AND status NOT IN ('completed', 'failed', 'cancelled', 'running') "
                "RETURNING run_id", (to_version, now, list(run_ids), from_version))
            if rows:
                await self._wake(conn)
        return sorted(r[0] for r in rows)

    # -- schedules ----------------------------------------------------------------------

    async def schedule_upsert(self, conn: Conn, s: ScheduleRecord) -> None:
        await conn.execute(
            f"INSERT INTO {self.s}.schedules AS t (name, workflow, queue, cron, timezone, "
            "input, overlap, catchup, catchup_max, paused, next_tick, version, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow, "
            "queue = excluded.queue, input = excluded.input, overlap = excluded.overlap, "
            "catchup = excluded.catchup, catchup_max = excluded.catchup_max, "
            "version = excluded.version, updated_at = excluded.updated_at, "
            "next_tick = CASE WHEN t.cron = excluded.cron AND t.timezone = excluded.timezone "
            "THEN t.next_tick ELSE excluded.next_tick END, "
            "cron = excluded.cron, timezone = excluded.timezone",
            (s.name, s.workflow, s.queue, s.cron, s.timezone, s.input, s.overlap, s.catchup,
             s.catchup_max, s.next_tick, s.version, s.updated_at, s.updated_at))

    async def schedule_list(self, conn: Conn) -> list[ScheduleRecord]:
        rows = await self._rows(conn, f"SELECT {_SCHEDULE_COLS} FROM {{s}}.schedules "
                                "ORDER BY name")
        return [ScheduleRecord(*r) for r in rows]

    async def schedule_get(self, conn: Conn, name: str) -> ScheduleRecord | None:
        rows = await self._rows(conn, f"SELECT {_SCHEDULE_COLS} FROM {{s}}.schedules "
                                "WHERE name = %s", (name,))
        return ScheduleRecord(*rows[0]) if rows else None

    async def schedule_pause(self, conn: Conn, name: str, paused: bool,
                             next_tick: float | None, now: float) -> bool:
        return await self._count(
            conn, "UPDATE {s}.schedules SET paused = %s, updated_at = %s, "
            "next_tick = coalesce(%s, next_tick) WHERE name = %s",
            (paused, now, next_tick, name)) > 0

    async def schedule_delete(self, conn: Conn, name: str) -> bool:
        return await self._count(conn, "DELETE FROM {s}.schedules WHERE name = %s",
                                 (name,)) > 0

    async def schedule_advance(self, conn: Conn, name: str, expected: float | None,
                               next_tick: float | None, last_tick: float | None,
                               last_run_id: str | None, now: float) -> bool:
        return await self._count(
            conn, "UPDATE {s}.schedules SET next_tick = %s, "
            "last_tick = coalesce(%s, last_tick), last_run_id = coalesce(%s, last_run_id), "
            "updated_at = %s WHERE name = %s AND next_tick IS NOT DISTINCT FROM %s",
            (next_tick, last_tick, last_run_id, now, name, expected)) > 0

    # -- retention ----------------------------------------------------------------------

    async def _keep_metric_totals(self, conn: Conn, ids: list[str]) -> None:
        """Add what runs about to be purged counted for in /metrics' cumulative figures
        to ``metric_totals``."""
        # (not a fork's entries copied from its source: token 0, never counted; an
        # entry archived before migration 0011 has none, and counts)
        finished = ("kind = 'step' AND status <> 'pending' AND started_at IS NOT NULL "
                    "AND finished_at IS NOT NULL AND fencing_token IS DISTINCT FROM 0 "
                    "AND run_id = ANY(%s)")
        durations = await self._rows(
            conn, f"SELECT name, finished_at - started_at FROM {{s}}.journal WHERE "
            f"{finished} UNION ALL SELECT name, finished_at - started_at FROM "
            f"{{s}}.journal_archive WHERE {finished}", (ids, ids))
        metrics = await self._rows(conn, "SELECT metrics FROM {s}.runs WHERE run_id = "
                                   "ANY(%s) AND metrics IS NOT NULL", (ids,))
        ends = await self._rows(
            conn, "SELECT workflow, status, coalesce(finished_at, created_at) - created_at "
            "FROM {s}.runs WHERE run_id = ANY(%s)", (ids,))
        await self._add_metric_totals(conn, {
            **metric_totals_of(((str(n), float(d)) for n, d in durations),
                               (m for (m,) in metrics)),
            **run_end_totals_of((str(w), str(st), float(d)) for w, st, d in ends)})

    async def _add_metric_totals(self, conn: Conn, totals: dict[str, float]) -> None:
        if totals:
            await conn.execute(
                f"INSERT INTO {self.s}.metric_totals (name, value) "
                "SELECT * FROM unnest(%s::text[], %s::float8[]) "
                "ON CONFLICT (name) DO UPDATE "
                f"SET value = {self.s}.metric_totals.value + excluded.value",
                (list(totals), list(totals.values())))

    def purge_candidates(self, finished_before: float, statuses: list[str], limit: int,
                         workflows: list[str] | None = None,
                         exclude: list[str] | None = None) -> tuple[str, list[Any]]:
        """The statement (``{s}`` for the schema) and parameters that lock the runs a
        purge batch deletes: ended before a time, of some statuses, of ``workflows``
        (None: any) less ``exclude``; not a run with an unfinished child, nor a child
        whose parent has not ended."""
        # Of some workflows (a workflow's own retention, `tether purge --workflow`), or
        # of all but some (the app's retention, less the workflows with their own: the
        # workflows with an ended run, one probe of runs_workflow_finished each, less
        # those). By workflow, then oldest first: runs_workflow_finished (migration 0016)
        # gives that order, so a batch reads what it takes. Ordered by finished_at
        # alone the planner walked runs_finished through the other workflows' older
        # runs (1.2 M runs: 545,618 read to find 100, 1.5 s a turn; now 0.4 ms).
        which, order, params = "", "finished_at", [finished_before, list(statuses)]
        if workflows is not None:
            which = "AND r.workflow = ANY(%s) "
            params.append([w for w in dict.fromkeys(workflows) if w not in (exclude or ())])
        elif exclude:
            # (the names left out in the array, not filtered from the scan: the scan
            # would read through their runs)
            which = (
                "AND r.workflow = ANY(ARRAY(WITH RECURSIVE w(name) AS ("
                "(SELECT workflow FROM {s}.runs WHERE finished_at IS NOT NULL "
                "ORDER BY workflow LIMIT 1) UNION ALL "
                "SELECT (SELECT workflow FROM {s}.runs WHERE finished_at IS NOT NULL "
                "AND workflow > w.name ORDER BY workflow LIMIT 1) FROM w "
                "WHERE w.name IS NOT NULL) "
                "SELECT name FROM w WHERE name IS NOT NULL AND name <> ALL(%s))) ")
            params.append(list(exclude))
        if which:
            order = "r.workflow, r.finished_at"
        return ("SELECT run_id FROM {s}.runs r WHERE finished_at IS NOT NULL "
                "AND finished_at < %s AND status = ANY(%s) " + which + "AND NOT EXISTS ("
                "SELECT 1 FROM {s}.runs c WHERE c.parent_run_id = r.run_id "
                "AND c.status NOT IN ('completed', 'failed', 'cancelled')) "
                "AND NOT EXISTS (SELECT 1 FROM {s}.runs p WHERE p.run_id = r.parent_run_id "
                "AND p.status NOT IN ('completed', 'failed', 'cancelled')) "
                f"ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED", [*params, limit])

    async def run_purge(self, conn: Conn, finished_before: float, statuses: list[str],
                        limit: int, workflows: list[str] | None = None,
                        exclude: list[str] | None = None) -> PurgeReport:
        report = PurgeReport()
        sql, params = self.purge_candidates(finished_before, statuses, limit, workflows,
                                            exclude)
        async with conn.transaction():
            # First, so that it is not taken while holding row locks a run's blob_put
            # could wait for (it waits only for this table).
            await conn.execute(f"LOCK TABLE {self.s}.blob_refs IN SHARE ROW EXCLUSIVE MODE")
            rows = await self._rows(conn, sql, params)
            ids = [r[0] for r in rows]
            if not ids:
                return report
            await self._keep_metric_totals(conn, ids)
            for table, attr in (("journal", "journal_entries"),
                                ("journal_archive", "archived_entries"),
                                ("attempts", "attempts"), ("signals", "signals")):
                n = await self._count(conn, f"DELETE FROM {{s}}.{table} "
                                      "WHERE run_id = ANY(%s)", (ids,))
                setattr(report, attr, n)
            await conn.execute(f"DELETE FROM {self.s}.kv WHERE key = ANY(%s)",
                               (run_kv_keys(ids),))
            report.runs = await self._count(
                conn, "DELETE FROM {s}.runs WHERE run_id = ANY(%s)", (ids,))
            report.run_ids = sorted(ids)
            await self._sweep_blobs(conn, await self._drop_blob_refs(conn, ids), report)
        return report

    async def run_erase(self, conn: Conn, run_id: str, now: float) -> PurgeReport:
        async with conn.transaction():
            run = await self._get(conn, run_id, lock=True)
            if run is None:
                raise RunNotFound(run_id)
            family = await self._family(conn, run_id) if run.status in ERASABLE else []
            refuse_unfinished(run_id, str(run.status), family)
            ids = sorted([run_id, *(r for r, _ in family)])
            report = PurgeReport(runs=len(ids), run_ids=ids)
            [(unerased,)] = await self._rows(
                conn, "SELECT count(*) FROM {s}.runs WHERE run_id = ANY(%s) "
                "AND erased_at IS NULL", (ids,))
            report.already_erased = unerased == 0
            e = _ERASED
            await conn.execute(
                f"UPDATE {self.s}.runs SET input = %s, "
                "result = CASE WHEN result IS NULL THEN NULL ELSE %s END, "
                "error = CASE WHEN error IS NULL THEN NULL ELSE %s END, status_info = NULL, "
                "erased_at = COALESCE(erased_at, %s), updated_at = %s WHERE run_id = ANY(%s)",
                (e, e, e, now, now, ids))
            report.payloads = len(ids)
            for table, attr in (("journal", "journal_entries"),
                                ("journal_archive", "archived_entries")):
                n = await self._count(
                    conn, f"UPDATE {{s}}.{table} SET "
                    "result = CASE WHEN result IS NULL THEN NULL ELSE %s END, "
                    "error = CASE WHEN error IS NULL THEN NULL ELSE %s END, "
                    "args = CASE WHEN args IS NULL THEN NULL ELSE %s END "
                    "WHERE run_id = ANY(%s)", (e, e, e, ids))
                setattr(report, attr, n)
            await conn.execute(f"UPDATE {self.s}.journal_archive SET input = %s "
                               "WHERE run_id = ANY(%s) AND input IS NOT NULL", (e, ids))
            report.attempts = await self._count(
                conn, "UPDATE {s}.attempts SET error = %s WHERE run_id = ANY(%s) "
                "AND error IS NOT NULL", (e, ids))
            report.signals = await self._count(
                conn, "UPDATE {s}.signals SET payload = %s WHERE run_id = ANY(%s) "
                "AND payload IS NOT NULL", (e, ids))
            # The events they published (streamed LLM text, kept for serve's resumable
            # streams); the timeline's events (operations, statuses) stay.
            # The rows stored since migration 0013 by the run id's hash (the index
            # run_events_key, migration 0018), the older ones by the id.
            events = await self._count(
                conn, "DELETE FROM {s}.run_events WHERE hashtextextended(run_id, 0) = ANY("
                "ARRAY(SELECT hashtextextended(i, 0) FROM unnest(%s::text[]) AS i)) "
                "AND run_id = ANY(%s) AND kind = 'chunk' AND txid IS NULL", (ids, ids))
            events += await self._count(
                conn, "DELETE FROM {s}.run_events WHERE run_id = ANY(%s) "
                "AND kind = 'chunk' AND txid IS NOT NULL", (ids,))
            report.payloads += (report.journal_entries + report.archived_entries
                                + report.signals + events)
            await self._sweep_blobs(conn, await self._drop_blob_refs(conn, ids), report)
        return report

    async def _family(self, conn: Conn, run_id: str) -> list[tuple[str, str]]:
        """``(run id, status)`` of the runs that hold copies of the (locked) run's data:
        its children and forks, and theirs, level by level (one parent or one source
        each: a tree). Each level is locked (``FOR UPDATE``) before the next is looked
        up, so none gains a member meanwhile: a fork locks its source first
        (``run_fork``), and only a running run (refused) starts children. Top-down, as
        ``run_retry`` locks a tree: two erases of one tree wait for each other, they do
        not deadlock."""
        seen = {run_id}
        family: list[tuple[str, str]] = []
        level = [run_id]
        while level:
            rows = await self._rows(
                conn, "SELECT run_id, status FROM {s}.runs WHERE parent_run_id = ANY(%s) "
                "OR forked_from = ANY(%s) ORDER BY run_id FOR UPDATE", (level, level))
            found = [(r, str(st)) for r, st in rows if r not in seen]
            seen.update(r for r, _ in found)
            family += found
            level = [r for r, _ in found]
        return family
