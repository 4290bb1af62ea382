"""One source of truth for states: the enums, what "ended" means, and conversion."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tether
from tether import RunStatus
from tether._types import (
    ENDED,
    ENDED_VALUES,
    EntryStatus,
    JournalEntry,
    OperationKind,
    RunRecord,
)


def test_ended_is_completed_failed_cancelled_and_blocked_is_not() -> None:
    """blocked waits for an operator: not ended, but a result waiter stops there."""
    assert {s.value for s in ENDED} == {"completed", "failed", "cancelled"}
    assert [s for s in RunStatus if s.is_ended] == sorted(ENDED, key=list(RunStatus).index)
    assert not RunStatus.BLOCKED.is_ended and RunStatus.BLOCKED.is_settled
    assert {s for s in RunStatus if s.is_settled} == set(ENDED) | {RunStatus.BLOCKED}
    for live in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
        assert not live.is_ended and not live.is_settled


def test_records_from_a_store_carry_enums_equal_to_their_plain_values() -> None:
    """Strings read from a row become enums, which compare and serialize as before."""
    entry = JournalEntry(0, "step", "fetch", "pending")
    assert entry.kind is OperationKind.STEP and entry.status is EntryStatus.PENDING
    assert entry.kind == "step" and f"{entry.status}" == "pending"
    run = RunRecord(run_id="r", workflow="w", queue="q", status="waiting", input="[]",
                    created_at=0.0, updated_at=0.0)
    assert run.status is RunStatus.WAITING and run.status == "waiting"


def test_an_unknown_state_is_refused_at_the_boundary() -> None:
    """A row with a status no version of Tether wrote fails loudly, not later."""
    with pytest.raises(ValueError, match="'paused' is not a valid RunStatus"):
        RunRecord(run_id="r", workflow="w", queue="q", status="paused", input="[]",
                  created_at=0.0, updated_at=0.0)
    with pytest.raises(ValueError, match="is not a valid OperationKind"):
        JournalEntry(0, "teleport", "x", "ok")


def test_the_sql_of_both_stores_uses_the_one_ended_set() -> None:
    """SQL cannot import the enum: every status list in the stores' queries that names
    an ended status is exactly the ended set, so a change to ENDED that the SQL does not
    follow fails here (the other lists name live states only)."""
    import re
    from importlib import resources

    ended = {s.value for s in ENDED}
    found = 0
    for backend in ("sqlite", "postgres"):
        sql = resources.files(f"tether.store.{backend}").joinpath("queries.sql").read_text()
        for listed in re.findall(r"status\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", sql):
            names = set(re.findall(r"'(\w+)'", listed))
            assert names <= {s.value for s in RunStatus}, listed
            if names & (ended | {"blocked"}):
                assert names == ended, listed
                found += 1
        for single in re.findall(r"status\s*=\s*'(\w+)'", sql):
            assert single in {s.value for s in RunStatus} or single in {
                s.value for s in EntryStatus}, single
    assert found >= 4


# -- the ended set written once (ENDED_VALUES): Python, the stores' SQL, the web page ----

_SRC = Path(tether.__file__).resolve().parent
_VALUES = {s.value for s in RunStatus}


def _store_status_lists() -> list[tuple[str, list[str]]]:
    """(file, statuses) of each list of run statuses in the stores' SQL: the quoted
    lists of ``IN (...)`` in every ``.sql`` file (migrations included) and in the SQL the
    store modules write in Python strings, and the ``{_fragment|a,b}`` lists of the
    query loader. A list that names no run status (``{_x|a,b}``) is no status list."""
    found = []
    for path in sorted((_SRC / "store").rglob("*")):
        if path.suffix not in (".sql", ".py"):
            continue
        text = path.read_text()
        where = str(path.relative_to(_SRC))
        lists = [re.findall(r"'(\w+)'", m) for m in
                 re.findall(r"\(\s*('\w+'(?:\s*,\s*'\w+')*)\s*\)", text)]
        lists += [m.split(",") for m in re.findall(r"\{_\w+\|([\w,]+)\}", text)]
        found += [(where, items) for items in lists if set(items) & _VALUES]
    return found


def test_every_status_list_of_the_stores_sql_names_all_ended_statuses_or_none() -> None:
    """SQL cannot import ``ENDED_VALUES``: each status list in the stores' SQL (each
    file, each query) names every ended status or none of them, so a status added to
    ENDED fails here until each list that names the others names it too. The one list
    that names some is the retry rule's (``store._lifecycle.RETRYABLE``, failed, blocked
    and cancelled), checked against that constant. (The test above it read only
    ``queries.sql``, not ``lifecycle.sql``, ``serve.sql``, the migrations or the SQL
    written in ``store/postgres/_lifecycle.py``.)"""
    from tether.store._lifecycle import RETRYABLE

    ended = set(ENDED_VALUES)
    lists = _store_status_lists()
    assert len(lists) >= 30, lists
    for where, items in lists:
        assert set(items) <= _VALUES, (where, items)
        named = set(items) & ended
        assert named in (set(), ended) or set(items) == set(RETRYABLE), (where, items)
    # Each backend's SQL has lists of the ended statuses in several files.
    with_ended = {where for where, items in lists if ended <= set(items)}
    for backend in ("sqlite", "postgres"):
        assert len([w for w in with_ended if w.startswith(f"store/{backend}/")]) >= 3, \
            with_ended


def test_ended_values_is_enum_ordered_ended() -> None:
    assert ENDED_VALUES == ("completed", "failed", "cancelled")
    assert set(ENDED_VALUES) == {s.value for s in ENDED}


#: Lists of these three that are not run statuses: the MCP Tasks extension's terminal
#: task statuses (``mcp_tasks._TERMINAL``; the MCP face maps runs onto tasks).
_NOT_RUN_STATUSES = {"mcp_tasks.py"}


def test_no_python_module_writes_the_ended_statuses_itself() -> None:
    """``tether._types.ENDED_VALUES`` (or ``ENDED``) is the one list of ended statuses in
    the Python code: until 2026-12-06 six modules wrote ("completed", "failed",
    "cancelled") themselves (serve's events, pages and API, the retention rules, the
    replayer, erasure), and a new ended status would have been missed wherever one was
    forgotten."""
    ended = set(ENDED_VALUES)
    found = []
    for path in sorted(_SRC.rglob("*.py")):
        where = str(path.relative_to(_SRC))
        if where == "_types.py" or where in _NOT_RUN_STATUSES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if ended <= names and names <= _VALUES:
                    found.append(f"{where}:{node.lineno}")
    assert not found, found


def test_the_run_page_script_reads_the_ended_statuses_from_the_page() -> None:
    """app.js hides a run's actions once its status is an ended one: the statuses come
    from the page (``data-ended``, written from ``ENDED_VALUES``), not from a list of
    its own."""
    script = (_SRC / "serve" / "static" / "app.js").read_text()
    for array in re.findall(r"\[([^\[\]]*)\]", script):
        assert not set(ENDED_VALUES) <= set(re.findall(r'"(\w+)"', array)), array
    assert "root.dataset.ended.split(" in script
    page = (_SRC / "serve" / "templates" / "run.html").read_text()
    assert 'data-ended="{{ ended|join(\' \') }}"' in page
