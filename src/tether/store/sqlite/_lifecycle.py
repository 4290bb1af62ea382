"""SQLite operations for runs over their whole life (migration 0003), run on the
store's writer thread inside its transaction, like those of ``_store.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apsw

from tether._types import JournalEntry, Lease, RunRecord
from tether.errors import ConfigError, LeaseLost, RunNotFound, RunStateError
from tether.store._lifecycle import (
    RETRYABLE,
    ArchivedJournal,
    AttemptRecord,
    PurgeReport,
    ScheduleRecord,
    retry_plan,
)
from tether.store._sql import load_queries

L = load_queries("tether.store.sqlite", "lifecycle.sql")


def _attempt(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    r = list(row)
    r[9] = bool(r[9])
    return ScheduleRecord(*r)


def attempt_record(conn: apsw.Connection, attempts: list[AttemptRecord]) -> None:
    conn.executemany(L["attempt_record"], [(
        a.attempt_id, a.run_id, a.generation, a.position, a.name, a.attempt, a.worker_id,
        a.status, a.started_at, a.finished_at, a.error) for a in attempts])


def attempt_list(conn: apsw.Connection, run_id: str) -> list[AttemptRecord]:
    return [_attempt(r) for r in conn.execute(L["attempt_list"], (run_id,))]


def run_retry(conn: apsw.Connection, run_id: str, version: str | None, now: float,
              get: Any, read: Any) -> RunRecord:
    run: RunRecord | None = get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status not in RETRYABLE:
        raise RunStateError(run_id, str(run.status), "retry it (only a failed, blocked "
                            "or cancelled run can be retried)")
    plan = retry_plan(run.status, read(conn, run_id))
    for pos in plan.delete:
        conn.execute(L["journal_delete_at"], (run_id, pos))
    for pos in plan.reset:
        conn.execute(L["journal_reset_at"], (run_id, pos))
    conn.execute(L["run_retry"], (run_id, now, version))
    stored: RunRecord = get(conn, run_id)
    return stored


def run_fork(conn: apsw.Connection, source_run_id: str, run: RunRecord, at: int,
             get: Any, insert: Any) -> RunRecord:
    source: RunRecord | None = get(conn, source_run_id)
    if source is None:
        raise RunNotFound(source_run_id)
    stored, created = insert(conn, run)
    if not created:
        raise ConfigError(f"run id {run.run_id!r} is already used; choose another --id")
    conn.execute(L["journal_copy"], (run.run_id, source_run_id, at))
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
    rows = conn.execute("SELECT 1 FROM tether_runs WHERE run_id = ? AND fencing_token = ? "
                        "AND status = 'running'", (lease.run_id, lease.fencing_token)).fetchall()
    if not rows:
        raise LeaseLost(lease.run_id, lease.fencing_token)
    conn.execute(L["journal_archive"], (lease.run_id,))
    conn.execute(L["journal_clear"], (lease.run_id,))
    conn.execute(L["run_continue"], (lease.run_id, lease.fencing_token, input_text, now))


def journal_archive_read(conn: apsw.Connection, run_id: str) -> list[ArchivedJournal]:
    gens: dict[int, tuple[str | None, list[JournalEntry]]] = {}
    for row in conn.execute(L["journal_archive_read"], (run_id,)):
        gen = row[0]
        _inp, entries = gens.setdefault(gen, (None, []))
        if row[12] is not None:
            gens[gen] = (row[12], entries)
        entries.append(JournalEntry(*row[1:12]))
    return [ArchivedJournal(g, inp, entries) for g, (inp, entries) in sorted(gens.items())]


def run_versions(conn: apsw.Connection) -> list[tuple[str | None, str, int]]:
    return [(v, s, int(n)) for v, s, n in conn.execute(L["run_versions"])]


def run_version_candidates(conn: apsw.Connection, version: str) -> list[tuple[str, str]]:
    return [(r, w) for r, w in conn.execute(L["run_version_candidates"], (version,))]


def run_version_set(conn: apsw.Connection, run_ids: list[str], from_version: str,
                    to_version: str, now: float) -> list[str]:
    moved = []
    for run_id in run_ids:
        conn.execute(L["run_version_set"], (run_id, from_version, to_version, now))
        if conn.changes():
            moved.append(run_id)
    return moved


def schedule_upsert(conn: apsw.Connection, s: ScheduleRecord) -> None:
    conn.execute(L["schedule_upsert"], (
        s.name, s.workflow, s.queue, s.cron, s.timezone, s.input, s.overlap, s.catchup,
        s.catchup_max, s.next_tick, s.version, s.updated_at))


def schedule_list(conn: apsw.Connection) -> list[ScheduleRecord]:
    return [_schedule(r) for r in conn.execute(L["schedule_list"])]


def schedule_get(conn: apsw.Connection, name: str) -> ScheduleRecord | None:
    for r in conn.execute(L["schedule_get"], (name,)):
        return _schedule(r)
    return None


def schedule_pause(conn: apsw.Connection, name: str, paused: bool, next_tick: float | None,
                   now: float) -> bool:
    conn.execute(L["schedule_pause"], (name, int(paused), now, next_tick))
    return bool(conn.changes())


def schedule_delete(conn: apsw.Connection, name: str) -> bool:
    conn.execute(L["schedule_delete"], (name,))
    return bool(conn.changes())


def schedule_advance(conn: apsw.Connection, name: str, expected: float | None,
                     next_tick: float | None, last_tick: float | None,
                     last_run_id: str | None, now: float) -> bool:
    conn.execute(L["schedule_advance"], (name, expected, next_tick, last_tick, last_run_id,
                                         now))
    return bool(conn.changes())


_ERASED = json.dumps({"erased": True})


def _delete_run_rows(conn: apsw.Connection, run_id: str, report: PurgeReport) -> None:
    for table, attr in (("tether_journal", "journal_entries"),
                        ("tether_journal_archive", "archived_entries"),
                        ("tether_attempts", "attempts"), ("tether_signals", "signals")):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        setattr(report, attr, getattr(report, attr) + conn.changes())
    conn.execute("DELETE FROM tether_runs WHERE run_id = ?", (run_id,))
    report.runs += conn.changes()
    report.run_ids.append(run_id)


def run_purge(conn: apsw.Connection, finished_before: float, statuses: list[str],
              limit: int) -> PurgeReport:
    report = PurgeReport()
    ids = [r for (r,) in conn.execute(L["purge_candidates"],
                                      (finished_before, json.dumps(statuses), limit))]
    keys: list[str] = []
    for run_id in ids:
        _delete_run_rows(conn, run_id, report)
        keys += _drop_blob_refs(conn, run_id)
    _sweep_blobs(conn, keys, report)
    return report


def run_erase(conn: apsw.Connection, run_id: str, now: float, get: Any) -> PurgeReport:
    """Replace every payload of a run (input, result, error, step arguments and results,
    signal payloads, live status) with a marker; keep the timeline's shape (positions,
    kinds, names, statuses, times, attempts)."""
    run: RunRecord | None = get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status not in ("completed", "failed", "cancelled", "blocked"):
        raise RunStateError(run_id, str(run.status), "erase it before it has ended "
                                    "(cancel it first)")
    report = PurgeReport(runs=1, run_ids=[run_id])
    conn.execute(
        "UPDATE tether_runs SET input = ?2, result = CASE WHEN result IS NULL THEN NULL "
        "ELSE ?2 END, error = CASE WHEN error IS NULL THEN NULL ELSE ?2 END, "
        "status_info = NULL, erased_at = ?3, updated_at = ?3 WHERE run_id = ?1",
        (run_id, _ERASED, now))
    report.payloads += 1
    for table, attr in (("tether_journal", "journal_entries"),
                        ("tether_journal_archive", "archived_entries")):
        conn.execute(
            f"UPDATE {table} SET result = CASE WHEN result IS NULL THEN NULL ELSE ?2 END, "
            "error = CASE WHEN error IS NULL THEN NULL ELSE ?2 END, "
            "args = CASE WHEN args IS NULL THEN NULL ELSE ?2 END WHERE run_id = ?1",
            (run_id, _ERASED))
        setattr(report, attr, conn.changes())
    conn.execute("UPDATE tether_journal_archive SET input = ?2 WHERE run_id = ?1 AND "
                 "input IS NOT NULL", (run_id, _ERASED))
    conn.execute("UPDATE tether_attempts SET error = ?2 WHERE run_id = ?1 AND "
                 "error IS NOT NULL", (run_id, _ERASED))
    report.attempts = conn.changes()
    conn.execute("UPDATE tether_signals SET payload = ?2 WHERE run_id = ?1 AND "
                 "payload IS NOT NULL", (run_id, _ERASED))
    report.signals = conn.changes()
    report.payloads += report.journal_entries + report.archived_entries + report.signals
    _sweep_blobs(conn, _drop_blob_refs(conn, run_id), report)  # its messages' texts
    return report
