"""Named SQL queries kept in ``.sql`` files, one file per backend, and the row mappers
and parameter builders both backends share.

A query starts with ``-- name --`` on its own line, then one line of description. A name
that starts with ``_`` is a fragment, not a query: the queries of the same file that
share it (and fragments defined after it) write ``{_name}`` where it goes.
``{_name|a,b,c}`` writes the fragment once per value of the list, each copy with the
value where the fragment says ``{status}``, the copies joined by ``UNION ALL``: the
per-status branches of the run listings (``serve.sql``), which SQLite, without LATERAL,
needs spelled out, are each written once (``{_all_branch|queued,running}`` is the
``_all_branch`` of 'queued', ``UNION ALL``, that of 'running').
Parameters are named (``%(run_id)s`` on PostgreSQL, ``:run_id`` on SQLite) and bound
from one dict, built by the functions below where a record supplies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import partial
from importlib import resources
from typing import Any

from tether._types import JournalEntry, Lease, RunRecord
from tether.errors import StoreError
from tether.store._port import ChildrenFigures, RunChildren
from tether.store._values import decode_metrics

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_EACH = re.compile(r"\{(_[a-z_]+)\|([a-z_]+(?:,[a-z_]+)*)\}")  # {_name|a,b,c}


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The queries of ``filename`` in ``package`` by name, their fragments written in.

    ``{_name}`` is the fragment ``_name`` as it is; ``{_name|a,b,c}`` is the fragment once
    per value (``a``, ``b``, ``c``), each copy with the value where the fragment says
    ``{status}``, the copies joined by ``UNION ALL``. A fragment must come before the
    queries that use it; an ``{_name|...}`` of a fragment not yet defined is a
    ``ValueError`` here, not SQL the database would refuse."""
    text = resources.files(package).joinpath(filename).read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    fragments: dict[str, str] = {}  # (a fragment may include those defined before it)
    out: dict[str, str] = {}
    for name, sql in queries.items():
        sql = _EACH.sub(partial(_each, fragments=fragments, name=name), sql)
        for ref, fragment in fragments.items():
            sql = sql.replace(ref, fragment)
        if name[0] == "_":
            fragments["{" + name + "}"] = sql
        else:
            out[name] = sql
    return out


def _each(m: re.Match[str], fragments: dict[str, str], name: str) -> str:
    """``{_name|a,b,c}``: the fragment once per value, as its ``{status}``."""
    fragment = fragments.get("{" + m.group(1) + "}")
    if fragment is None:  # (a typo would otherwise reach the database as SQL)
        raise ValueError(f"{name}: no fragment {m.group(1)} defined before it")
    return "\nUNION ALL\n".join(fragment.replace("{status}", value)
                                 for value in m.group(2).split(","))


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for each ``migrations/NNNN_name.sql``, in order."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for item in folder.iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", item.name)
        if m:
            found.append((int(m.group(1)), m.group(2), item.read_text()))
    return sorted(found)


# -- rows and parameters, the same for both backends -------------------------------------
#
# Both stores select a run's columns and a journal entry's columns in the order below
# (``run_get``, ``journal_read`` and the queries that return the same rows), and name
# their query parameters after the record's fields.


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A run from a row of the run columns (``run_id`` ... ``metrics``, then migration
    0003's ``version`` ... ``erased_at``, 0005's ``crashes`` ... ``crash_progress``,
    ``cancel_requested_at``, ``cancel_reason`` and ``cancelled_with`` when the query
    selected them).

    ``waiting_for`` is a ``waiting`` run's only: the row keeps its last wait's after a
    worker claims the run (the claim does not clear it), and a running or queued run
    said "waiting for signal approval" on its page, in the runs list, the API and
    ``tether show``, until it waited again or ended."""
    return RunRecord(
        run_id=row[0], workflow=row[1], queue=row[2], status=row[3], input=row[4],
        created_at=row[5], updated_at=row[6], result=row[7], error=row[8], owner=row[9],
        fencing_token=row[10], available_at=row[11], cancel_requested=bool(row[12]),
        waiting_for=row[13] if row[3] == "waiting" else None, status_info=row[14],
        parent_run_id=row[15], finished_at=row[16],
        parent_position=row[17], on_parent_cancel=row[18], metrics=decode_metrics(row[19]),
        **_life_fields(row),
    )


def children_from_rows(parents: Sequence[str],
                       rows: Iterable[Sequence[Any]]) -> dict[str, RunChildren]:
    """``run_children_many``'s answer from its query's rows (both backends): a parent's
    id, then either a status's figures (status, count, cost, tokens) and the run's
    columns NULL, or the figures NULL and a drawn child's run columns."""
    out = {p: RunChildren([], {}) for p in parents}
    for row in rows:
        got = out.setdefault(row[0], RunChildren([], {}))
        if row[5] is None:
            got.rest[str(row[1])] = ChildrenFigures(int(row[2]), float(row[3]),
                                                    float(row[4]))
        else:
            got.runs.append(run_from_row(row[5:]))
    for got in out.values():  # newest first, as run_search lists them
        got.runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return out


def _life_fields(row: Sequence[Any]) -> dict[str, Any]:
    """Migration 0003's columns, when the query selected them (listings need not); then
    migration 0005's (the claims, ``run_get``), then ``cancel_requested_at`` and
    migration 0023's ``cancel_reason`` and ``cancelled_with`` (``run_get`` only: no claim
    or step reads them)."""
    if len(row) < 25:
        return {}
    crashes = ({"crashes": row[25], "crashes_seen": row[26], "crash_progress": row[27]}
               if len(row) >= 28 else {})  # migration 0005's, selected by the claims
    if len(row) >= 29:
        crashes["cancel_requested_at"] = row[28]
    if len(row) >= 31:
        crashes["cancel_reason"], crashes["cancelled_with"] = row[29], row[30]
    return {"version": row[20], "forked_from": row[21], "forked_at": row[22],
            "generation": row[23], "erased_at": row[24], **crashes}


def entry_from_row(row: Sequence[Any]) -> JournalEntry:
    """A journal entry from a row of the entry columns (``position`` ... ``args``)."""
    return JournalEntry(
        position=row[0], kind=row[1], name=row[2], status=row[3], result=row[4],
        error=row[5], attempts=row[6], started_at=row[7], finished_at=row[8],
        next_attempt_at=row[9], args=row[10],
    )


def lease_params(lease: Lease) -> dict[str, Any]:
    """``run_id`` and ``fencing_token``: the parameters of a fenced write."""
    return {"run_id": lease.run_id, "fencing_token": lease.fencing_token}


def entry_params(lease: Lease, e: JournalEntry) -> dict[str, Any]:
    """The parameters of ``journal_append``: the lease's, and the entry's fields."""
    return {
        "run_id": lease.run_id, "fencing_token": lease.fencing_token,
        "position": e.position, "kind": e.kind, "name": e.name, "status": e.status,
        "result": e.result, "error": e.error, "attempts": e.attempts,
        "started_at": e.started_at, "finished_at": e.finished_at,
        "next_attempt_at": e.next_attempt_at, "args": e.args,
    }


def same_entry(stored: JournalEntry, e: JournalEntry) -> bool:
    """Whether ``stored``, the final entry at ``e``'s position written under the lease
    that appends ``e``, is ``e`` itself: an append retried after its first attempt
    committed and its answer was lost (a connection cut mid-way), which is then a
    success, not a conflict. Its start time and arguments are left out: the upsert
    keeps those of a pending entry it replaced."""
    return (stored.status == e.status and stored.kind == e.kind and stored.name == e.name
            and stored.result == e.result and stored.error == e.error
            and stored.attempts == e.attempts and stored.finished_at == e.finished_at
            and stored.next_attempt_at == e.next_attempt_at)


def final_conflict(run_id: str, position: int) -> StoreError:
    """The error of a journal append refused because a final entry holds its position."""
    return StoreError(f"run {run_id!r}: position {position} already holds a final journal "
                      "entry")


def run_params(run: RunRecord, prefix: str = "") -> dict[str, Any]:
    """The parameters of ``run_insert``, each name after ``prefix``."""
    return {
        f"{prefix}run_id": run.run_id, f"{prefix}workflow": run.workflow,
        f"{prefix}queue": run.queue, f"{prefix}status": run.status,
        f"{prefix}input": run.input, f"{prefix}created_at": run.created_at,
        f"{prefix}updated_at": run.updated_at, f"{prefix}available_at": run.available_at,
        f"{prefix}parent_run_id": run.parent_run_id,
        f"{prefix}parent_position": run.parent_position,
        f"{prefix}on_parent_cancel": run.on_parent_cancel,
        f"{prefix}version": run.version, f"{prefix}forked_from": run.forked_from,
        f"{prefix}forked_at": run.forked_at,
    }
