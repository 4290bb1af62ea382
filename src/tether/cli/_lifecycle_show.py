"""What ``tether show`` prints about a run's life: its version, where a fork came from,
earlier generations (continue-as-new) and every execution attempt of its steps."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from tether._show import (
    bookkeeping,
    in_flight,
    info_dict,
    timed_out,
    unattempted,
    untimed,
    waiting_since,
)
from tether._show import (
    version_idle_note as idle_note,
)
from tether._show import (
    version_unknown_note as unknown_note,
)
from tether._types import ENDED_VALUES, RunInfo, RunStatus
from tether.cli._common import fmt_duration, fmt_time, safe, short, wait_words

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


#: ``waiting_for`` of a run waiting for an approval (``tether.ai``: the signal that
#: answers it), which the faces say in words.
APPROVAL_WAIT = "signal approval"


def waiting_text(info: RunInfo, answer: Any = None) -> str:
    """What a waiting run waits for, and since when if that is known
    (``_show.waiting_since``), as stored: the caller makes it safe to print. An
    approval (``waiting_for`` the signal that answers it, ``signal approval``) is said
    in words (``asks_person`` adds its arguments and the command that answers it), and
    one answered already, its run awaiting a worker (``answer``: the answer waiting,
    ``tether.ai._approvals.waiting_answer``), says so: ``approval of refund answered
    (approved), waiting for a worker`` (it said the approval was awaited)."""
    since = waiting_since(info_dict(info))
    when = f" (since {fmt_time(since)})" if since is not None else ""
    if info.waiting_for == APPROVAL_WAIT:
        from tether.ai._approvals import approval_wait, awaited_approval

        pending = awaited_approval(info)
        if pending is not None and answer is not None:
            return f"{answer.words(pending.tool)}{when}"
        if pending is not None:  # (the command that answers it: asks_person's lines)
            return f"{approval_wait(pending.tool)}{when}"
    return wait_words(info.waiting_for or "") + when


def approval_cell(app: Any, run: Any, answer: Any = None) -> str | None:
    """``tether runs``' WAITING FOR cell of a run record waiting for an approval
    (``approval of TOOL``; ``answer``: the answer waiting for it, from
    ``tether.ai._approvals.waiting_answers``, ``approval of TOOL answered (approved),
    waiting for a worker``), or None (another wait; an approval whose live status this
    command cannot decode keeps its raw ``signal approval``)."""
    if run.waiting_for != APPROVAL_WAIT or run.status != "waiting":
        return None
    from tether.ai._approvals import approval_wait, pending_of

    pending = pending_of(app, run)
    if pending is None:
        return None
    return answer.words(pending.tool) if answer is not None else approval_wait(pending.tool)


def asks_person(info: RunInfo, answer: Any = None) -> list[tuple[str, str]]:
    """What a waiting run asks a person for and the command that answers it, as
    ``(label, text)`` lines under its ``waiting for:`` line: an approval's tool and
    arguments (``tether approve``; no command for one answered already, ``answer``,
    whose run awaits a worker), or the message of a signal the workflow asked a
    person for in its live status (``input``: the budget's raise, ``tether budget``).
    The live status line, cut to the width, kept the figures and the tool's arguments
    out of sight; the web UI's run page shows them. Empty for any other run."""
    from tether.ai._approvals import awaited_approval
    from tether.ai._budget import raise_command

    run = shlex.quote(info.run_id)
    approval = awaited_approval(info)
    if approval is not None:
        asked = [(f"  approval {safe(approval.approval_id)}: ",
                  f"{safe(approval.tool)} {short(approval.arguments, 200)}")]
        if answer is not None:
            return asked
        return [*asked, ("  answer: ", f"tether approve {run} --approval-id "
                                       f"{shlex.quote(approval.approval_id)} (--reject to "
                                       "refuse; --note TEXT)")]
    kind, _, name = (info.waiting_for or "").partition(" ")
    status = info.status_info if isinstance(info.status_info, dict) else {}
    ask = status.get("input")
    if (info.status is not RunStatus.WAITING or kind != "signal" or not isinstance(ask, dict)
            or ask.get("signal") != name or not isinstance(ask.get("message"), str)):
        return []
    answer = (raise_command(status.get("hint"), info.run_id)
              or f"tether signal {run} {shlex.quote(name)} --data JSON")
    return [("  asks: ", safe(ask["message"])), ("  answer: ", safe(answer))]


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


def no_operations_note(info: RunInfo, unregistered: str | None = None,
                       queue_limit: int | None = None) -> str:
    """What ``tether show`` prints in place of the journal table of a run that has
    recorded no operation yet (as the run page's "No operations yet"): a header with no
    rows under it read as a table gone missing. A step in flight (the run in its first
    step) is listed under *attempts* below. ``unregistered``: no worker of the store
    has registered the queued run's workflow (a typo'd name), and the closest name's
    hint (``did_you_mean``, maybe empty). ``queue_limit``: the run's queue's limit
    (``tether queue-limit``), if it has one."""
    if info.status.value == "queued" and unregistered is not None:
        # ("waits ... for a worker" read as if none was up, while the queue's workers
        # were serving, none of them with this workflow)
        return (f"no operations yet: no worker has registered workflow "
                f"{safe(info.workflow)!r} in this store{safe(unregistered)}; the run waits "
                f"in queue {safe(info.queue)} until a worker with that workflow serves it")
    if info.status.value == "queued":
        queue = safe(info.queue)
        if queue_limit == 0:
            # (until 2026-12-07 "for a worker", with the workers up: the queue was paused)
            return (f"no operations yet: the run waits in queue {queue}, which is paused "
                    f"(its limit is 0: `tether queue-resume {queue}` lifts it)")
        if queue_limit is not None:
            return (f"no operations yet: the run waits in queue {queue} for a worker "
                    f"(at most {queue_limit} of its runs at once: tether queue-limit)")
        return f"no operations yet: the run waits in queue {queue} for a worker"
    if info.status.value in ENDED_VALUES:
        # (an ended run records no more: "yet" promised operations to come)
        return f"no operations: the run ended {info.status.value} before recording one"
    flying = in_flight({"journal": info.journal, "attempts": info.attempts,
                        "generation": info.generation})
    if flying:
        return ("no operations recorded yet: its first step is in flight "
                "(attempts, below)")
    return "no operations yet"


#: Where ``tether show``'s full lines (``--wide``, a pipe) cut a result (an error: at 70).
RESULT_WIDTH = 60


def llm_cell(e: dict[str, Any], outcome: str, width: int) -> str:
    """``outcome`` (an entry's error, or its result), cut to ``width``, with what the run
    page's row says of an LLM call before it (``tether.ai._rows.call_summary``): "MODEL
    · N in / M out · $COST" (and "→ TOOL, …") then as much of its answer's text as
    ``width`` holds, in place of the reply's JSON; "MODEL · billed …" before a failed
    call's error. The figures stay whole. (``tether show`` printed an answered call's
    reply as cut JSON, and a cut call's error without what it was billed.)"""
    summary = llm_summary(e)
    if summary is None:
        return short(outcome, width)
    from tether.ai._rows import llm_call

    call = llm_call(e)
    if call is not None:
        outcome = call["text"] if isinstance(call["text"], str) else ""
    outcome = " ".join(outcome.split())
    return summary + (f" · {short(outcome, width)}" if outcome else "")


def llm_summary(e: dict[str, Any]) -> str | None:
    """The figures ``llm_cell`` puts first in an LLM call's cell (safe for the
    terminal); ``None`` for any other entry. A model request of the pydantic-ai and
    OpenAI Agents SDK integrations (a ``MeteredModel`` record: its ``usage`` and
    ``cost_usd``) has them too; until 2026-12-08 its row was the record's JSON."""
    result, error = e.get("result"), e.get("error")
    attrs = error.get("attrs") if isinstance(error, dict) else None
    # (tether.ai imported for LLM calls only)
    if not (str(e["name"]).startswith("llm:")
            or (isinstance(result, dict) and "usage" in result and "cost_usd" in result)
            or (isinstance(attrs, dict) and "failed_attempts" in attrs)):
        return None
    from tether.ai._rows import call_summary

    summary = call_summary(e)
    return None if summary is None else safe(summary)


def result_cell(e: dict[str, Any], width: int) -> str:
    """A recorded result as its row gives it: the time a ``now`` entry recorded and a
    durable timer's due time (a ``sleep``'s, and a ``cancel`` that took a timer's place)
    as times, not epoch seconds; an LLM call's figures and answer (``llm_cell``), else
    its JSON cut to ``width``. (Until 2026-12-06 a sleep's row read ``1796549922.757283``.)"""
    result = e["result"]
    if result is None:
        return ""
    if isinstance(result, int | float) and not isinstance(result, bool):
        if e["kind"] == "now":
            return fmt_time(result)
        if e["kind"] == "sleep":
            return f"due {fmt_time(result)}"
        if e["kind"] == "cancel":
            return f"its timer was due {fmt_time(result)}"
    return llm_cell(e, result if isinstance(result, str) else short(result, 10_000), width)


#: What ``tether show`` of a blocked run tells the operator to do, before the command.
OPERATOR_NOTE = ("the run waits for an operator: fix the workflow code (or use "
                 "tether.patched()), then run")


def resume_command(run_id: str) -> str:
    """The command that resumes ``run_id``, quoted for a shell: on a line of its own
    under ``OPERATOR_NOTE``, whole, to copy (it said ``tether resume RUN_ID``)."""
    return f"  tether resume {shlex.quote(safe(run_id))}"


def attempts_cell(e: dict[str, Any]) -> str:
    """An entry's ATT cell: its attempts, ``-`` for one that ran none (``unattempted``)."""
    return "-" if unattempted(e) else str(e["attempts"])


def duration_cell(e: dict[str, Any]) -> str:
    """An entry's DURATION cell: ``-`` for one that took no time of its own
    (``untimed``)."""
    return "-" if untimed(e) else fmt_duration(e["duration"])


def bookkeeping_cell(e: dict[str, Any], outcome: str) -> str:
    """``outcome`` of entry ``e``, labelled ``[bookkeeping: WHAT]`` first when ``e`` is
    one of Tether's own bookkeeping operations (``_show.bookkeeping``)."""
    what = bookkeeping(e)
    if what is None:
        return outcome
    return f"[bookkeeping: {what}] {outcome}".rstrip()


def journal_header(width: int, status: int = 8) -> str:
    """The header line of a journal table (every generation's, each under its own
    heading: an earlier generation's rows had none until 2026-12-07)."""
    return (f"{'POS':>4}  {'KIND':12} {'NAME':{width}} {'STATUS':{status}} {'ATT':>3}  "
            f"{'DURATION':>9}  RESULT / ERROR\n")


def journal_row(e: dict[str, Any], width: int, outcome: str, status: int = 8) -> str:
    """One journal entry's line, its name in a column ``width`` wide, its status in one
    ``status`` wide (``status_width``). A bookkeeping entry's outcome is labelled
    (``bookkeeping_cell``)."""
    outcome = bookkeeping_cell(e, outcome)
    return (f"{e['position']:>4}  {safe(e['kind']):12} {safe(e['name']):{width}} "
            f"{status_label(e):{status}} {attempts_cell(e):>3}  "
            f"{duration_cell(e):>9}  {outcome}".rstrip() + "\n")


#: The states whose error ``tether show`` says the origin of (``error_origin``): a
#: failure (its traceback's line) and a block (the line that asked for the operation
#: the journal does not hold: ``code_at``), not a cancel.
ORIGIN_SHOWN = (RunStatus.FAILED, RunStatus.BLOCKED)


def error_summary(err: dict[str, Any]) -> str:
    """A recorded error (a decoded dict) on one line: ``Type: message``; an erased one
    (``tether erase`` put ``{"erased": true}`` in its place) as that marker, as results
    and inputs show it (it printed "Error: ", as if an error without a message)."""
    if "type" not in err and err.get("erased") is True:
        return '{"erased": true}'
    return f"{err.get('type', 'Error')}: {err.get('message', '')}"


def _error_text(e: dict[str, Any]) -> str:
    if timed_out(e):
        return timeout_text(e)
    err = e.get("error")
    if isinstance(err, dict):
        return error_summary(err)
    return "" if err is None else str(err)


def _outcome(e: dict[str, Any], width: int) -> str:
    if e.get("error") is None:
        return result_cell(e, RESULT_WIDTH)
    return llm_cell(e, _error_text(e), width) if isinstance(e["error"], dict) and not timed_out(
        e) else short(_error_text(e), width)


def parent_text(info: RunInfo, parent_gone: bool) -> str | None:
    """What ``tether show`` says of a child run's parent (None for a run without one):
    its id, and that it is no longer stored when a purge deleted it (a purge keeps a
    child its parent's end did not end, and ``--status`` may leave a child whose parent
    it took)."""
    if info.parent_run_id is None:
        return None
    return (f"{info.parent_run_id}" + (" (no longer stored: purged)" if parent_gone
                                       else ""))


def fork_cut(info: RunInfo) -> str:
    """Where a fork was cut and what it copied: ``at position 3 (positions 0..2 copied
    from it)``; at 0 nothing was (it said "positions 0..-1")."""
    at = info.forked_at or 0
    copied = f"positions 0..{at - 1} copied from it" if at else "nothing copied from it"
    return f"at position {at} ({copied})"


def version_text(info: RunInfo, live: Sequence[str] = ()) -> str | None:
    """``tether show``'s version line: the code version the run is pinned to; for a run
    of none while versioned workers are live (``live``: their versions), that it has
    none, which any of them claims (the claim records no version: which one ran it is
    not known); else None (no line)."""
    if info.version:
        return f"version: {safe(info.version)}"
    if not live:
        return None
    return ("version: none (a run of none is claimed by workers of every version; live "
            f"now: {', '.join(map(safe, live))})")


def version_idle_note(version: str, live: Sequence[str]) -> str:
    """``tether._show.version_idle_note``, its names made safe to print."""
    return idle_note(safe(version), [safe(v) for v in live])


def version_unknown_note(version: str, why: str) -> str:
    """``tether._show.version_unknown_note``, its words made safe to print."""
    return unknown_note(safe(version), safe(why))


def print_origin(info: RunInfo, w: Callable[[str], Any], width: int,
                 parent_gone: bool = False, live: Sequence[str] = ()) -> None:
    parent = parent_text(info, parent_gone)
    if parent is not None:
        w(f"child of run {safe(parent)}\n")
    version = version_text(info, live)
    if version is not None:
        w(f"{version}\n")
    if info.forked_from:
        w(f"forked from run {safe(info.forked_from)} {fork_cut(info)}\n")
    if info.erased_at:
        w(f"payloads erased {fmt_time(info.erased_at)}\n")
    for g in info.history:
        w(f"\ngeneration {g['generation']} (continued as new)  input: "
          f"{short(g['input'], 80)}\n")
        if g["journal"]:  # (the current generation's header: its rows read alike)
            w(f"\n{journal_header(width, status_width(info))}")
        for e in g["journal"]:
            w(journal_row(e, width, child_id(e) or _outcome(e, 70),
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


def attempt_position(info: RunInfo, a: dict[str, Any]) -> str:
    """An attempt's POS cell: its position, and for one of an earlier generation
    (continue-as-new) that generation, as ``g0.3`` (the notation of a child's id). The
    attempts of every generation are listed together, under the current generation's
    table: before, an attempt cut off in generation 0 read as one of the current
    generation's step at that position."""
    if a["generation"] == info.generation:
        return str(a["position"])
    return f"g{a['generation']}.{a['position']}"


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
        w(f"{attempt_position(info, a):>4}  {safe(a['name']):{width}} #{a['attempt']:<3} "
          f"{safe(a['status']):12} {took(a):>9}  worker {safe(a['worker_id'])}"
          + (f"  {short(_error_text(a), 60)}" if a.get("error") is not None else "") + "\n")
