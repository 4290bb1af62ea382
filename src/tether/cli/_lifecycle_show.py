"""What ``tether show`` prints about a run's life: its version, where a fork came from,
earlier generations (continue-as-new) and every execution attempt of its steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tether._show import in_flight, timed_out
from tether._types import RunInfo
from tether.cli._common import fmt_duration, fmt_time, safe, short

#: The NAME column's least width. A longer name widens the column for the whole table
#: rather than being cut: a ``child_result`` entry is named by the child's run id, which
#: a person copies into ``tether show`` (``<parent id>.<position>`` is longer than 24
#: characters for any parent id of 22 or more).
NAME_WIDTH = 24


def name_width(info: RunInfo) -> int:
    """The NAME column's width for every table of ``info`` (journal, earlier
    generations, attempts): its longest name, at least ``NAME_WIDTH``."""
    names = [e["name"] for e in info.journal]
    names += [e["name"] for g in info.history for e in g["journal"]]
    names += [a["name"] for a in info.attempts]
    return max([NAME_WIDTH, *(len(safe(n)) for n in names)])


def child_id(e: dict[str, Any]) -> str | None:
    """The run id a ``child_start`` entry gave its child, whole (as the entry's result
    column shows it; other results are cut to fit)."""
    if e["kind"] == "child_start" and e["status"] == "ok" and isinstance(e["result"], str):
        return safe(e["result"])
    return None


#: The STATUS cell of a signal wait that timed out (``_show.timed_out``): an expected
#: answer, not a failed operation (it printed ``error``).
TIMED_OUT_LABEL = "timed out"


def status_label(e: dict[str, Any]) -> str:
    """Journal entry ``e``'s STATUS cell: its status, or *timed out* for a signal's
    timeout."""
    return TIMED_OUT_LABEL if timed_out(e) else safe(e["status"])


def status_width(info: RunInfo) -> int:
    """The STATUS column's width for every journal table of ``info`` (8, the header's
    room, or a *timed out* cell's)."""
    entries = [*info.journal, *(e for g in info.history for e in g["journal"])]
    return max([8, *(len(status_label(e)) for e in entries)])


def timeout_text(e: dict[str, Any]) -> str:
    """A timed-out signal wait's outcome: its message ("no signal 'x' arrived within
    2.0 s"), not as an error's ``type: message``."""
    err = e.get("error")
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return f"no signal {e['name']!r} arrived in time"


def no_operations_note(info: RunInfo) -> str:
    """What ``tether show`` prints in place of the journal table of a run that has
    recorded no operation yet (as the run page's "No operations yet"): a header with no
    rows under it read as a table gone missing. A step in flight (the run in its first
    step) is listed under *attempts* below."""
    if info.status.value == "queued":
        return f"no operations yet: the run waits in queue {safe(info.queue)} for a worker"
    flying = in_flight({"journal": info.journal, "attempts": info.attempts,
                        "generation": info.generation})
    if flying:
        return ("no operations recorded yet: its first step is in flight "
                "(attempts, below)")
    return "no operations yet"


def journal_row(e: dict[str, Any], width: int, outcome: str, status: int = 8) -> str:
    """One journal entry's line, its name in a column ``width`` wide, its status in one
    ``status`` wide (``status_width``)."""
    return (f"{e['position']:>4}  {safe(e['kind']):12} {safe(e['name']):{width}} "
            f"{status_label(e):{status}} {e['attempts']:>3}  "
            f"{fmt_duration(e['duration']):>9}  {outcome}\n")


def _outcome(e: dict[str, Any]) -> str:
    if timed_out(e):
        return timeout_text(e)
    err = e.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'Error')}: {err.get('message', '')}"
    if err is not None:
        return str(err)
    return short(e["result"]) if e.get("result") is not None else ""


def print_origin(info: RunInfo, w: Callable[[str], Any], width: int) -> None:
    if info.version:
        w(f"version: {safe(info.version)}\n")
    if info.forked_from:
        w(f"forked from run {safe(info.forked_from)} at position {info.forked_at} (positions "
          f"0..{(info.forked_at or 0) - 1} copied from it)\n")
    if info.erased_at:
        w(f"payloads erased {fmt_time(info.erased_at)}\n")
    for g in info.history:
        w(f"\ngeneration {g['generation']} (continued as new)  input: "
          f"{short(g['input'], 80)}\n")
        for e in g["journal"]:
            w(journal_row(e, width, child_id(e) or short(_outcome(e), 70),
                          status_width(info)))
    if info.history:
        w(f"\ngeneration {info.generation} (current)\n")


def attempts_worth_a_look(info: RunInfo) -> list[dict[str, Any]]:
    """The attempts of every step that took more than one, or whose one failed or was
    cut off (none for a run whose every step succeeded at once)."""
    by_step: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for a in info.attempts:
        by_step.setdefault((a["generation"], a["position"]), []).append(a)
    return [a for group in by_step.values()
            if len(group) > 1 or any(a["status"] != "ok" for a in group) for a in group]


def attempt_took(info: RunInfo) -> Callable[[dict[str, Any]], str]:
    """The duration cell of each of ``info``'s attempts: how long it took once ended; for
    one in flight (``_show.in_flight``, as the run page's running row and ``in_flight``
    in ``--json``), how long it has run so far, then ``…``; else ``-``. (An attempt in
    flight printed ``-``: a run in its first step showed an empty table, and its one
    attempt ``running`` for no time.)"""
    flying = {(o["position"], o["attempt"]) for o in in_flight(
        {"journal": info.journal, "attempts": info.attempts, "generation": info.generation})}
    now = time.time()

    def took(a: dict[str, Any]) -> str:
        if a["finished_at"]:
            return fmt_duration(a["finished_at"] - a["started_at"])
        if a["generation"] == info.generation and (a["position"], a["attempt"]) in flying:
            return fmt_duration(max(now - a["started_at"], 0.0)) + "…"
        return "-"
    return took


def print_attempts(info: RunInfo, w: Callable[[str], Any], width: int) -> None:
    """Attempts worth a look (``attempts_worth_a_look``; nothing if there are none)."""
    shown = attempts_worth_a_look(info)
    if not shown:
        return
    took = attempt_took(info)
    w("\nattempts:\n")
    for a in shown:
        w(f"{a['position']:>4}  {safe(a['name']):{width}} #{a['attempt']:<3} "
          f"{safe(a['status']):12} {took(a):>9}  worker {safe(a['worker_id'])}"
          + (f"  {short(_outcome(a), 60)}" if a.get("error") is not None else "") + "\n")
