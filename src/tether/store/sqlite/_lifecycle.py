"""SQLite operations for runs over their whole life (migration 0003), run on the
store's writer thread inside its transaction, like those of ``_store.py``."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import apsw

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
from tether.store._sql import lease_params, load_queries

L = load_queries("tether.store.sqlite", "lifecycle.sql")


def _attempt(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    r = list(row)
    r[9] = bool(r[9])
    return ScheduleRecord(*r)


#: Most attempts written by one statement (one call into SQLite, see ``_APPEND_CHUNK``).
ATTEMPT_CHUNK = 512
ATTEMPT_WIDTH = 11


def pad(params: list[Any], width: int) -> int:
    """Pad ``params`` (rows of ``width`` values) with all-NULL rows up to the next power
    of two, which the statement skips; return the statement's number of rows (at most
    10 statement sizes up to 512, each prepared once and cached)."""
    n = len(params) // width
    rows = 1 << (n - 1).bit_length()
    params += [None] * ((rows - n) * width)
    return rows


def values_rows(n: int, width: int) -> str:
    """``n`` rows of ``width`` placeholders, written tight: apsw caches no statement
    longer than 16,384 bytes, and one for 512 journal appends is 15 KB this way (21 KB
    with spaces: prepared again on every call)."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * n)


def attempt_chunks(attempts: list[AttemptRecord]) -> list[list[AttemptRecord]]:
    """``attempts`` in order, cut into chunks of up to ``ATTEMPT_CHUNK``."""
    return [attempts[i:i + ATTEMPT_CHUNK] for i in range(0, len(attempts), ATTEMPT_CHUNK)]


@functools.lru_cache(maxsize=16)
def _attempt_record_sql(n: int) -> str:
    """``attempt_record`` for up to ``n`` attempts in one statement (``n`` a power of two;
    rows with a NULL id are padding), in order: a later state of the same attempt
    updates the earlier one, as row by row. The ``WHERE`` also tells SQLite's parser
    that ``ON CONFLICT`` is the upsert's."""
    return (
        "INSERT INTO tether_attempts (attempt_id, run_id, generation, position, name, "
        "attempt, worker_id, status, started_at, finished_at, error) "
        f"SELECT * FROM (VALUES {values_rows(n, ATTEMPT_WIDTH)}) "
        "WHERE column1 IS NOT NULL ON CONFLICT (attempt_id) DO UPDATE SET "
        "status = excluded.status, finished_at = excluded.finished_at, "
        "error = excluded.error"
    )


def attempt_record(conn: apsw.Connection, attempts: list[AttemptRecord]) -> None:
    """One chunk of attempts (``attempt_chunks``) in one statement: atomic by itself.

    Row by row (``executemany``), each row's step let the busy event loop take the GIL
    and the writer waited to get it back (one attempt is recorded per step: a seventh of
    a busy writer thread's time). One statement per chunk; and one operation per chunk,
    so that no savepoint wraps it: inside a savepoint SQLite keeps a copy of every page
    each multi-row statement touches until the savepoint ends (+4 MB of peak memory for
    1,000 runs x 10 steps)."""
    params: list[Any] = []
    for a in attempts:
        params += (a.attempt_id, a.run_id, a.generation, a.position, a.name, a.attempt,
                   a.worker_id, a.status, a.started_at, a.finished_at, a.error)
    conn.execute(_attempt_record_sql(pad(params, ATTEMPT_WIDTH)), params)


def attempt_list(conn: apsw.Connection, run_id: str) -> list[AttemptRecord]:
    return [_attempt(r) for r in conn.execute(L["attempt_list"], {"run_id": run_id})]


def run_retry(conn: apsw.Connection, run_id: str, version: str | None, now: float,
              get: Any, read: Any) -> RetryReport:
    run: RunRecord | None = get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status not in RETRYABLE:
        raise not_retryable(run_id, str(run.status), erased=run.erased_at is not None)
    refuse_erased(run_id, run.erased_at, "retry it")
    retried = {run_id}
    pending = [(run, version)]
    while pending:  # the run, then the children it retries (``children_to_retry``)
        current, as_version = pending.pop()
        for child in _retry_one(conn, current, as_version, now, get, read):
            if child.run_id not in retried and child.status in RETRYABLE:
                retried.add(child.run_id)
                pending.append((child, as_version))  # (on its parent's version)
    stored: RunRecord = get(conn, run_id)
    return RetryReport(stored, sorted(retried - {run_id}), run.version)


def _retry_one(conn: apsw.Connection, run: RunRecord, version: str | None, now: float,
               get: Any, read: Any) -> list[RunRecord]:
    """Queue ``run`` again as ``retry_plan`` says; the children to retry with it."""
    run_id = run.run_id
    copied = [] if run.forked_from is None else [
        p for (p,) in conn.execute(L["journal_copied_positions"], {"run_id": run_id})]
    journal = read(conn, run_id)
    plan = retry_plan(run.status, journal, copied)
    for pos in plan.delete:
        conn.execute(L["journal_delete_at"], {"run_id": run_id, "position": pos})
    for pos in plan.reset:
        conn.execute(L["journal_reset_at"], {"run_id": run_id, "position": pos})
    for pos in plan.restore:
        conn.execute(L["journal_restore_timer_at"], {"run_id": run_id, "position": pos})
    _add_metric_totals(conn, {**metric_totals_of(plan.counted, ()), **_end_totals(run)})
    conn.execute(L["run_retry"], {"run_id": run_id, "now": now, "version": version})
    children = [ChildRow(*r) for r in conn.execute(L["run_children_of"], {"run_id": run_id})]
    ids = children_to_retry(run.status, journal, plan, children)
    return [r for r in (get(conn, i) for i in ids) if r is not None]


def _end_totals(run: RunRecord) -> dict[str, float]:
    """What an ended run queued again counted for in /metrics' ended runs (kept: it
    ended once, and counts again when it ends again)."""
    ended = run.finished_at if run.finished_at is not None else run.created_at
    return run_end_totals_of([(run.workflow, str(run.status), ended - run.created_at)])


def run_fork(conn: apsw.Connection, source_run_id: str, run: RunRecord, at: int,
             entries: list[JournalEntry] | None, get: Any, insert: Any) -> RunRecord:
    source: RunRecord | None = get(conn, source_run_id)
    if source is None:
        raise RunNotFound(source_run_id)
    refuse_erased(source_run_id, source.erased_at, "fork it")
    stored, created = insert(conn, run)
    if not created:
        raise ConfigError(f"run id {run.run_id!r} is already used; choose another")
    if entries is None:
        conn.execute(L["journal_copy"], {"run_id": run.run_id,
                                         "source_run_id": source_run_id, "position": at})
    else:
        conn.executemany(L["journal_insert"], [
            {"run_id": run.run_id, "position": e.position, "kind": e.kind,
             "name": e.name, "status": e.status, "result": e.result, "error": e.error,
             "attempts": e.attempts, "started_at": e.started_at,
             "finished_at": e.finished_at, "next_attempt_at": e.next_attempt_at,
             "args": e.args} for e in entries if e.position < at])
    conn.execute(L["blob_refs_copy"], (run.run_id, source_run_id))
    result: RunRecord = stored
    return result


def blob_put(conn: apsw.Connection, blobs_json: str, run_id: str | None, put: Any) -> None:
    """Store texts; with ``run_id``, first record that the run references them (one
    transaction, so a purge never sees the texts without their reference)."""
    if run_id is not None:
        conn.execute(L["blob_ref_put"], (blobs_json, run_id))
    put(conn, blobs_json)


def run_crash_mark(conn: apsw.Connection, lease: Lease, crashes: int, progress: int) -> None:
    conn.execute(L["run_crash_mark"], (lease.run_id, lease.fencing_token, crashes, progress))
    if not conn.changes():
        raise LeaseLost(lease.run_id, lease.fencing_token)


def _drop_blob_refs(conn: apsw.Connection, run_id: str) -> list[str]:
    """Forget a run's references to texts; the keys it referenced."""
    keys = [k for (k,) in conn.execute(L["blob_refs_of"], (run_id,))]
    conn.execute(L["blob_refs_delete"], (run_id,))
    return keys


def _sweep_blobs(conn: apsw.Connection, keys: list[str], report: PurgeReport) -> None:
    """Delete the texts of ``keys`` no run references any more (the store has one writer
    at a time, so no run can add a reference between the check and the delete)."""
    if keys:
        conn.execute(L["blob_sweep"], (json.dumps(sorted(set(keys))),))
        report.blobs += conn.changes()


def run_continue(conn: apsw.Connection, lease: Lease, input_text: str, now: float) -> None:
    params = {**lease_params(lease), "input": input_text, "now": now}
    if not conn.execute(L["lease_check"], params).fetchall():
        raise LeaseLost(lease.run_id, lease.fencing_token)
    conn.execute(L["journal_archive"], params)
    conn.execute(L["journal_clear"], params)
    conn.execute(L["run_continue"], params)


def journal_archive_read(conn: apsw.Connection, run_id: str) -> list[ArchivedJournal]:
    gens: dict[int, tuple[str | None, list[JournalEntry]]] = {}
    for row in conn.execute(L["journal_archive_read"], {"run_id": run_id}):
        gen = row[0]
        _inp, entries = gens.setdefault(gen, (None, []))
        if row[12] is not None:
            gens[gen] = (row[12], entries)
        entries.append(JournalEntry(*row[1:12]))
    return [ArchivedJournal(g, inp, entries) for g, (inp, entries) in sorted(gens.items())]


def run_versions(conn: apsw.Connection) -> list[tuple[str | None, str, int]]:
    return [(v, s, int(n)) for v, s, n in conn.execute(L["run_versions"])]


def run_version_candidates(conn: apsw.Connection, version: str) -> list[tuple[str, str]]:
    return [(r, w) for r, w in conn.execute(L["run_version_candidates"], {"version": version})]


def run_version_set(conn: apsw.Connection, run_ids: list[str], from_version: str,
                    to_version: str, now: float) -> list[str]:
    moved = []
    for run_id in run_ids:
        conn.execute(L["run_version_set"], {"run_id": run_id, "from_version": from_version,
                                            "to_version": to_version, "now": now})
        if conn.changes():
            moved.append(run_id)
    return moved


def schedule_upsert(conn: apsw.Connection, s: ScheduleRecord) -> None:
    conn.execute(L["schedule_upsert"], {
        "name": s.name, "workflow": s.workflow, "queue": s.queue, "cron": s.cron,
        "timezone": s.timezone, "input": s.input, "overlap": s.overlap,
        "catchup": s.catchup, "catchup_max": s.catchup_max, "next_tick": s.next_tick,
        "version": s.version, "updated_at": s.updated_at})


def schedule_list(conn: apsw.Connection) -> list[ScheduleRecord]:
    return [_schedule(r) for r in conn.execute(L["schedule_list"])]


def schedule_get(conn: apsw.Connection, name: str) -> ScheduleRecord | None:
    for r in conn.execute(L["schedule_get"], {"name": name}):
        return _schedule(r)
    return None


def schedule_pause(conn: apsw.Connection, name: str, paused: bool, next_tick: float | None,
                   now: float) -> bool:
    conn.execute(L["schedule_pause"], {"name": name, "paused": int(paused), "now": now,
                                       "next_tick": next_tick})
    return bool(conn.changes())


def schedule_delete(conn: apsw.Connection, name: str) -> bool:
    conn.execute(L["schedule_delete"], {"name": name})
    return bool(conn.changes())


def schedule_advance(conn: apsw.Connection, name: str, expected: float | None,
                     next_tick: float | None, last_tick: float | None,
                     last_run_id: str | None, now: float) -> bool:
    conn.execute(L["schedule_advance"], {
        "name": name, "expected": expected, "next_tick": next_tick, "last_tick": last_tick,
        "last_run_id": last_run_id, "now": now})
    return bool(conn.changes())


_ERASED = json.dumps({"erased": True})


def _delete_run_rows(conn: apsw.Connection, run_id: str, report: PurgeReport) -> None:
    params = {"run_id": run_id}
    for query, attr in (("run_delete_journal", "journal_entries"),
                        ("run_delete_archive", "archived_entries"),
                        ("run_delete_attempts", "attempts"), ("run_delete_signals", "signals")):
        conn.execute(L[query], params)
        setattr(report, attr, getattr(report, attr) + conn.changes())
    conn.execute(L["run_delete"], params)
    report.runs += conn.changes()
    report.run_ids.append(run_id)


def _keep_metric_totals(conn: apsw.Connection, ids: list[str]) -> None:
    """Add what runs about to be purged counted for in /metrics' cumulative figures to
    ``tether_metric_totals``."""
    params = {"run_ids": json.dumps(ids)}
    durations = [(str(n), float(d))
                 for n, d in conn.execute(L["purge_step_durations"], params)]
    metrics = [m for (m,) in conn.execute(L["purge_run_metrics"], params)]
    ends = [(str(w), str(st), float(d))
            for w, st, d in conn.execute(L["purge_run_ends"], params)]
    _add_metric_totals(conn, {**metric_totals_of(durations, metrics),
                              **run_end_totals_of(ends)})


def _add_metric_totals(conn: apsw.Connection, totals: dict[str, float]) -> None:
    for name, value in totals.items():
        conn.execute(L["metric_totals_add"], {"name": name, "value": value})


def run_purge(conn: apsw.Connection, finished_before: float, statuses: list[str],
              limit: int, workflows: list[str] | None = None,
              exclude: list[str] | None = None) -> PurgeReport:
    report = PurgeReport()
    params: dict[str, Any] = {"finished_before": finished_before,
                              "statuses": json.dumps(statuses), "limit": limit}
    query = "purge_candidates"
    if exclude and workflows is None:
        # All but some: the workflows that have ended runs, less those (then as for
        # some), not purge_candidates with a filter, which walked the excluded ones'
        # older runs (tether_runs_finished) at every turn.
        workflows = _ended_workflows(conn)
    if workflows is not None:
        query, params["workflows"] = "purge_candidates_of", json.dumps(
            [w for w in dict.fromkeys(workflows) if w not in set(exclude or ())])
    ids = [r for (r,) in conn.execute(L[query], params)]
    if ids:
        _keep_metric_totals(conn, ids)
        [(report.attempts,)] = conn.execute(L["purge_journal_attempts"],
                                            {"run_ids": json.dumps(ids)})
    keys: list[str] = []
    for run_id in ids:
        _delete_run_rows(conn, run_id, report)
        keys += _drop_blob_refs(conn, run_id)
    _sweep_blobs(conn, keys, report)
    if ids:
        conn.execute(L["run_delete_kv"], {"keys": json.dumps(run_kv_keys(ids))})
    report.run_ids.sort()  # (as PostgreSQL's: not the order they ended in)
    return report


def _ended_workflows(conn: apsw.Connection) -> list[str]:
    """The workflows with an ended run, one index probe each (a loose index scan)."""
    found: list[str] = []
    row = conn.execute(L["purge_workflow_first"]).fetchone()
    while row is not None:
        found.append(row[0])
        row = conn.execute(L["purge_workflow_after"], {"after": row[0]}).fetchone()
    return found


def run_erase(conn: apsw.Connection, run_id: str, now: float, get: Any) -> PurgeReport:
    """Replace every payload of a run and of its family (``run_family``: the copies of
    its data in its children and forks) with a marker, and delete the events they
    published (streamed text); keep the timelines' shape (positions, kinds, names,
    statuses, times, attempts). All or none, in the writer's one transaction."""
    run: RunRecord | None = get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    family = run_family(conn, run_id) if run.status in ERASABLE else []
    refuse_unfinished(run_id, str(run.status), family)
    conn.execute("PRAGMA secure_delete=ON")
    try:
        return _erase(conn, sorted([run_id, *(r for r, _ in family)]), now)
    finally:
        conn.execute("PRAGMA secure_delete=OFF")


def run_family(conn: apsw.Connection, run_id: str) -> list[tuple[str, str]]:
    """``(run id, status)`` of the runs that hold copies of the run's data: its children
    (their input is its data, and their journals derive from it) and its forks (their
    journals start with its rows), and theirs, level by level. Each run has one parent
    or one source at most, so this is a tree; ``seen`` guards it anyway."""
    seen = {run_id}
    family: list[tuple[str, str]] = []
    level = [run_id]
    while level:
        found = [(r, s) for r, s in conn.execute(L["run_family_next"],
                                                 {"run_ids": json.dumps(level)})
                 if r not in seen]
        seen.update(r for r, _ in found)
        family += found
        level = [r for r, _ in found]
    return family


def _erase(conn: apsw.Connection, run_ids: list[str], now: float) -> PurgeReport:
    report = PurgeReport(runs=len(run_ids), run_ids=run_ids)
    params = {"run_ids": json.dumps(run_ids), "marker": _ERASED, "now": now}
    [(unerased,)] = conn.execute(L["erase_unerased"], params)
    report.already_erased = unerased == 0
    conn.execute(L["erase_run"], params)
    report.payloads += len(run_ids)
    for query, attr in (("erase_journal", "journal_entries"),
                        ("erase_archive", "archived_entries")):
        conn.execute(L[query], params)
        setattr(report, attr, conn.changes())
    conn.execute(L["erase_archive_inputs"], params)
    conn.execute(L["erase_attempts"], params)
    report.attempts = conn.changes()
    conn.execute(L["erase_signals"], params)
    report.signals = conn.changes()
    conn.execute(L["erase_events"], params)
    report.payloads += (report.journal_entries + report.archived_entries + report.signals
                        + conn.changes())
    keys = [k for r in run_ids for k in _drop_blob_refs(conn, r)]  # their messages' texts
    _sweep_blobs(conn, keys, report)
    return report
