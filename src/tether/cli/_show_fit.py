"""``tether show`` fitted to a terminal's width (``_fit``): the same run, its long cells
cut (ids in their middle, payloads and messages at their end), each row on one line.

What a person copies from it stays whole: the run's id in the header, and a child id
the table had to cut is listed in full under it. ``--wide`` (and any output that is not
a terminal) prints ``_runs.print_timeline``'s full lines instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether._clock import age
from tether._fit import cells, cut_end, cut_middle, hang, pack, pad, wrap
from tether._show import (
    HELD_NOTE,
    bookkeeping,
    cancel_unheeded,
    error_origin,
    held,
    timed_out,
)
from tether._types import RunInfo, RunStatus
from tether.cli._budget import budget_line
from tether.cli._common import fmt_time, safe, short
from tether.cli._lifecycle_show import (
    OPERATOR_NOTE,
    ORIGIN_SHOWN,
    asks_person,
    attempt_position,
    attempt_took,
    attempts_cell,
    attempts_worth_a_look,
    bookkeeping_cell,
    child_id,
    duration_cell,
    error_summary,
    fork_cut,
    llm_cell,
    llm_summary,
    no_operations_note,
    parent_text,
    result_cell,
    resume_command,
    status_label,
    timeout_text,
    version_text,
    waiting_text,
)

Write = Callable[[str], Any]

#: A name is cut to no less than this (each outcome on a line of its own, at worst).
NAME_MIN = 16
#: What a name keeps when the row's outcome needs the room (a longer one is cut to it).
NAME_WANT = 32
#: The least room worth giving a result or an error on the row's own line.
OUTCOME_MIN = 30
#: A cell's text before the table cuts it to its column.
WHOLE = 10_000
#: How an outcome on a line of its own (a narrow terminal) is marked.
ARROW = "→ "


@dataclass
class Row:
    """One journal entry's cells, whole; ``*_id``: the cell is a child's run id."""

    pos: str
    kind: str
    name: str
    status: str
    att: str
    took: str
    outcome: str
    name_id: bool = False
    outcome_id: bool = False
    #: How many characters the outcome starts with that the table keeps whole if it can
    #: (an LLM call's model, tokens and cost, ``llm_summary``); the rest is cut to fit.
    lead: int = 0


@dataclass
class Layout:
    """The journal table's column widths at one terminal width; ``out`` is 0 when each
    outcome goes on a line of its own under its row."""

    pos: int
    kind: int
    name: int
    status: int
    took: int
    out: int
    width: int
    #: The names on a line of their own under their row (a terminal too narrow for
    #: a NAME column of ``NAME_MIN`` beside the other cells): ``name`` is that line's.
    name_under: bool = False


def cancel_note(info: RunInfo, now: float) -> str:
    """What ``tether show`` says of a run with a cancel pending: since when (``now``: the
    app's clock), and what it waits for, a worker to replay it or a step that did not
    stop (``_show.cancel_unheeded``)."""
    at = info.cancel_requested_at
    said = ("cancel requested" if at is None  # (asked by a version that keeps no time)
            else f"cancel requested {age(now - at)} ago ({fmt_time(at)})") + _with(info)
    steps = cancel_unheeded({"status": info.status.value, "journal": info.journal,
                             "attempts": info.attempts, "generation": info.generation,
                             "cancel_requested": info.cancel_requested})
    if steps:
        names = ", ".join(repr(safe(name)) for name in steps)
        return (f"{said}; the run has not stopped: its step{'s' if len(steps) > 1 else ''}"
                f" {names} {'are' if len(steps) > 1 else 'is'} still running (a cancel "
                "interrupts a step at its next await; one that catches CancelledError or "
                "blocks its worker's event loop runs on)")
    return (f"{said}: it ends cancelled when a worker serving queue {safe(info.queue)!r} "
            "replays it")


def cancelled_note(info: RunInfo) -> str:
    """What ``tether show`` says of a run that ended cancelled: when its cancel was
    requested, and whose it was, its own or its parent's (``RunInfo.cancelled_with``);
    its reason goes on the line under it, as under ``cancel_note``."""
    return f"cancel requested at {fmt_time(info.cancel_requested_at)}{_with(info)}"


def _with(info: RunInfo) -> str:
    """`` with its parent run 'p-1'`` for a run its parent's cancel cascaded to, else
    "" (its own request)."""
    return ("" if info.cancelled_with is None
            else f" with its parent run {safe(info.cancelled_with)!r}")


def _line(text: str) -> str:
    """A cell's text on one line, safe for the terminal."""
    return safe(text.replace("\r", " ").replace("\n", " "))


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return error_summary(err)
    return short(err, 10_000)  # not decodable here: the key id it needs, not ciphertext


def journal_row(e: dict[str, Any], on_hold: bool = False) -> Row:
    """``e``'s cells: its outcome is its error, its wait, a child's id, the time a
    ``now`` entry recorded, or its result (``on_hold``: a pending entry of a blocked
    run, ``_show.held``, said first)."""
    row = _journal_row(e)
    if bookkeeping(e) is not None and not row.outcome_id:
        row.outcome, row.lead = bookkeeping_cell(e, row.outcome), 0
    if on_hold:
        row.outcome = f"{HELD_NOTE}; once resumed: {row.outcome}" if row.outcome else HELD_NOTE
        row.lead = 0
    return row


def _journal_row(e: dict[str, Any]) -> Row:
    row = Row(str(e["position"]), _line(e["kind"]), _line(e["name"]), _line(status_label(e)),
              attempts_cell(e), duration_cell(e), "",
              name_id=e["kind"] == "child_result")
    figures = (llm_summary(e) or "").partition(" → ")[0]  # (the tools' names: cut)
    row.lead = len(figures) + 1 if figures else 0  # (+ the "…" of the text cut after)
    if timed_out(e):  # (a signal's timeout: "nothing came", not an error)
        row.outcome = _line(timeout_text(e))
    elif e["error"] is not None:
        row.outcome = _line(_error_text(e["error"]))
        if e["status"] == "pending" and e.get("next_attempt_at"):
            row.outcome = f"next attempt {fmt_time(e['next_attempt_at'])}; last: {row.outcome}"
        row.outcome = llm_cell(e, row.outcome, WHOLE)  # (what a failed call was billed)
    elif e["status"] == "pending" and e.get("next_attempt_at"):
        row.outcome = f"until {fmt_time(e['next_attempt_at'])}"
    elif child_id(e) is not None:  # (the id it gave its child: cut in its middle, listed)
        row.outcome, row.outcome_id = _line(e["result"]), True
    else:  # (a ``now`` entry's time; an LLM call's figures, then its answer's text)
        row.outcome = result_cell(e, WHOLE)
    return row


def layout(rows: list[Row], width: int) -> Layout:
    """The widths that fit ``rows`` in ``width``: every cell whole if they can be; else
    the names cut to ``NAME_WANT`` (or what the longest outcome leaves, if more; or to
    ``NAME_MIN`` at least, for an LLM call's figures to stay whole) and the outcomes to
    the rest, if that is ``OUTCOME_MIN`` and every row's ``lead`` at least; else each
    outcome on a line of its own under its row, the names as wide as the line lets them
    be (down to ``NAME_MIN``; narrower still, each name on a line of its own too)."""
    pos = max([3, *(len(r.pos) for r in rows)])
    kind = max([4, *(len(r.kind) for r in rows)])
    status = max([6, *(len(r.status) for r in rows)])
    took = max([8, *(len(r.took) for r in rows)])
    fixed = pos + 2 + kind + 1 + 1 + status + 1 + 3 + 2 + took + 2  # all but name, outcome
    name_all = max([4, *(cells(r.name) for r in rows)])
    out_all = max([len("RESULT / ERROR"), *(cells(r.outcome) for r in rows)])
    room = width - fixed
    if name_all + out_all <= room:
        return Layout(pos, kind, status=status, took=took, name=name_all,
                      out=room - name_all, width=width)
    name = min(name_all, max(NAME_WANT, room - out_all))
    lead = max([0, *(r.lead for r in rows)])
    if room - name < lead:  # (an LLM call's figures: the names cut further for them)
        name = min(name_all, max(NAME_MIN, room - lead))
    if room - name >= max(OUTCOME_MIN, lead):
        return Layout(pos, kind, status=status, took=took, name=name, out=room - name,
                      width=width)
    name = min(name_all, max(NAME_MIN, room + 2))  # (no outcome column: nor its gap)
    if room + 2 < name:  # (the names cut to their least leave the row too long)
        # Narrower still (under 56 columns): each name goes under its row, cut to the
        # line, its outcome under it.
        name = min(name_all, width - pos - 2)
        return Layout(pos, kind, status=status, took=took, name=name, out=0, width=width,
                      name_under=True)
    return Layout(pos, kind, status=status, took=took, name=name, out=0, width=width)


def _cut(text: str, width: int, is_id: bool) -> str:
    return cut_middle(text, width) if is_id else cut_end(text, width)


def header(lay: Layout) -> list[str]:
    if lay.name_under:
        return [f"{'POS':>{lay.pos}}  {'KIND':{lay.kind}} {'STATUS':{lay.status}} ATT  "
                f"{'DURATION':>{lay.took}}", " " * (lay.pos + 2) + "NAME",
                " " * (lay.pos + 2) + ARROW + "RESULT / ERROR"]
    head = (f"{'POS':>{lay.pos}}  {'KIND':{lay.kind}} {'NAME':{lay.name}} "
            f"{'STATUS':{lay.status}} ATT  {'DURATION':>{lay.took}}")
    if lay.out:
        return [f"{head}  RESULT / ERROR"]
    return [head, " " * (lay.pos + 2) + ARROW + "RESULT / ERROR"]


def table(rows: list[Row], lay: Layout, cut_ids: dict[str, str]) -> list[str]:
    """The rows' lines; each child id cut in them is added to ``cut_ids`` (id → the
    position it was first seen at)."""
    lines = []
    for r in rows:
        name = cut_middle(r.name, lay.name)  # (a step's name too: "agent.tool:NAME")
        line = (f"{r.pos:>{lay.pos}}  {r.kind:{lay.kind}} {pad(name, lay.name)} "
                f"{r.status:{lay.status}} {r.att:>3}  {r.took:>{lay.took}}")
        if lay.name_under:
            line = (f"{r.pos:>{lay.pos}}  {r.kind:{lay.kind}} {r.status:{lay.status}} "
                    f"{r.att:>3}  {r.took:>{lay.took}}\n{' ' * (lay.pos + 2)}{name}")
        indent = lay.pos + 2 + len(ARROW)
        out_width = lay.out or (lay.width - indent)
        outcome = _cut(r.outcome, out_width, r.outcome_id)
        for text, cell, is_id in ((name, r.name, r.name_id), (outcome, r.outcome, r.outcome_id)):
            if is_id and text != cell:
                cut_ids.setdefault(cell, r.pos)
        if lay.out:
            lines.append(f"{line}  {outcome}".rstrip())
        else:
            lines.append(line.rstrip())
            if outcome:
                lines.append(" " * (lay.pos + 2) + ARROW + outcome)
    return lines


def print_fitted(info: RunInfo, width: int, w: Write, parent_gone: bool = False, *,
                 unregistered: str | None = None, queue_limit: int | None = None,
                 live: Sequence[str] = (), idle: str | None = None,
                 child: str | None = None, answer: Any = None,
                 now: float | None = None) -> None:
    """``info`` as ``tether show`` prints it on a terminal ``width`` columns wide
    (``parent_gone``: its parent run was purged; ``unregistered``: as for
    ``no_operations_note``; ``queue_limit``: its queue's limit; ``live``: the versions
    of the live versioned workers, for ``version_text``; ``idle``: the note of a run
    whose version no live worker has, ``version_idle_note``; ``child``: what the child
    it waits for is doing, ``_show.child_waits``; ``answer``: the answer waiting for
    the approval it waits for, ``tether.ai._approvals.waiting_answer``; ``now``: the
    app's clock, for how long ago a cancel was requested, else this host's)."""
    for line in _head(info, width, parent_gone, live, child, answer,
                      time.time() if now is None else now):
        w(line + "\n")
    for line in wrap(idle, width, "") if idle is not None else ():
        w(line + "\n")
    rows = [journal_row(e) for g in info.history for e in g["journal"]]
    rows += [journal_row(e, held(e, info.status.value)) for e in info.journal]
    lay = layout(rows, width)  # one layout for every generation's table: they align
    cut_ids: dict[str, str] = {}
    for g in info.history:
        label = f"generation {g['generation']} (continued as new)  input: "
        w(f"\n{label}{cut_end(short(g['input'], 10_000), width - len(label))}\n")
        if g["journal"]:  # (the current generation's header: its rows read alike)
            w("\n")
        for line in [*(header(lay) if g["journal"] else ()),
                     *table([journal_row(e) for e in g["journal"]], lay, cut_ids)]:
            w(line + "\n")
    if info.history:
        w(f"\ngeneration {info.generation} (current)\n")
    w("\n")
    if not info.journal:  # (a header with no rows: "no operations yet" instead)
        for line in wrap(no_operations_note(info, unregistered, queue_limit), width, ""):
            w(line + "\n")
    else:
        for line in [*header(lay), *table(rows[len(rows) - len(info.journal):], lay,
                                          cut_ids)]:
            w(line + "\n")
    if cut_ids:
        w("\nchild runs (ids in full):\n")
        for child, pos in cut_ids.items():
            listed = f"{pos:>{lay.pos}}  {child}"
            # (an id longer than the line leaves it: on a line of its own, whole)
            w(f"{listed}\n" if len(listed) <= width else f"{pos:>{lay.pos}}\n{child}\n")
    _attempts(info, width, w)
    _metrics(info.metrics, width, w)
    _outcome(info, width, w)


def _head(info: RunInfo, width: int, parent_gone: bool = False,
          live: Sequence[str] = (), child: str | None = None,
          answer: Any = None, now: float = 0.0) -> list[str]:
    """The run's id (whole, on the first line), where it stands, and its payloads."""
    where = [f"workflow {_line(info.workflow)}", f"queue {_line(info.queue)}",
             f"status {info.status.value}"]
    lines = pack([f"run {_line(info.run_id)}  {where[0]}", *where[1:]], width)
    if len(lines) > 1:  # the id on a line of its own, the rest under it
        lines = [f"run {_line(info.run_id)}", ""]
        for chunk in where:
            if len(chunk) > width:  # (a name too long for its label's line: under it)
                lines += [*chunk.split(" ", 1), ""]
            elif lines[-1] and len(lines[-1]) + 2 + len(chunk) <= width:
                lines[-1] += "  " + chunk
            else:
                lines.append(chunk)
        lines = [line for line in lines if line]
        if len(lines[0]) > width:  # (longer than the line after "run": alone, whole)
            lines[:1] = ["run", _line(info.run_id)]
    ended = ("blocked" if info.status is RunStatus.BLOCKED else "finished")
    lines += pack([f"created {fmt_time(info.created_at)}",
                   f"updated {fmt_time(info.updated_at)}",
                   *([f"{ended} {fmt_time(info.finished_at)}"] if info.finished_at else [])],
                  width)
    if info.waiting_for:
        lines.append(cut_end(f"waiting for: {_line(waiting_text(info, answer))}", width))
        for label, text in asks_person(info, answer):
            lines += wrap(text, width, label)
        if child is not None:
            lines += wrap(_line(child), width, "  the child is ")
    if info.cancel_requested:
        lines += wrap(cancel_note(info, now), width, "")
    elif info.status is RunStatus.CANCELLED and info.cancel_requested_at is not None:
        lines += wrap(cancelled_note(info), width, "")
    if info.cancel_reason is not None:
        lines += wrap(_line(info.cancel_reason), width, "  reason: ")
    if info.status_info is not None:
        lines.append("live status: " + short(info.status_info, width - len("live status: ")))
    lines.append("input: " + short(info.input, width - len("input: ")))
    budget = budget_line(info)
    if budget is not None and cells(budget) <= width:
        lines.append(budget)
    elif budget is not None:  # (too long for the line: each limit's figures on its own)
        first, *others = budget.removeprefix("budget: ").split(" · ")
        lines += wrap(first, width, "budget: ")
        for figures in others:
            lines += wrap(figures, width, " " * len("budget: "))
    parent = parent_text(info, parent_gone)
    if parent is not None and info.parent_run_id is not None:
        # (its id whole, on a line of its own if need be: a person copies it)
        pid, note = _line(info.parent_run_id), parent[len(info.parent_run_id):]
        if len(f"child of run {pid}{note}") <= width:
            lines.append(f"child of run {pid}{note}")
        elif len(f"child of run {pid}") <= width:
            lines += [f"child of run {pid}", note.strip()]
        else:
            lines += ["child of run", pid, *([note.strip()] if note else [])]
    version = version_text(info, live)
    if info.version:
        lines.append(cut_end(f"version: {_line(info.version)}", width))
    elif version is not None:
        lines += wrap(version.removeprefix("version: "), width, "version: ")
    if info.forked_from:
        lines += wrap(f"{_line(info.forked_from)} {fork_cut(info)}", width,
                      "forked from run ")
    if info.erased_at:
        lines.append(f"payloads erased {fmt_time(info.erased_at)}")
    return lines


def _attempts(info: RunInfo, width: int, w: Write) -> None:
    """The attempts worth a look (as ``print_attempts``), under a heading of their own:
    each row's worker id whole, its error after it or, if there is no room, under it."""
    shown = attempts_worth_a_look(info)
    if not shown:
        return
    took_of = attempt_took(info)
    cells = [(attempt_position(info, a), _line(a["name"]), f"#{a['attempt']}", _line(a["status"]),
              took_of(a),
              _line(a["worker_id"] or "-"),
              _line(_error_text(a["error"])) if a.get("error") is not None else "")
             for a in shown]
    pos, att, status, took, worker = (max([len(head), *(len(c[i]) for c in cells)])
                                      for i, head in ((0, "POS"), (2, "TRY"), (3, "STATUS"),
                                                      (4, "DURATION"), (5, "WORKER")))
    fixed = pos + 2 + 1 + att + 1 + status + 1 + took + 2 + worker
    name = min(max([4, *(len(c[1]) for c in cells)]), max(NAME_MIN, width - fixed))
    # (a terminal too narrow for the worker ids beside the least name: each under its row)
    under = fixed - 2 - worker + name > width - 2 - worker
    w("\nattempts:\n")
    w(f"{'POS':>{pos}}  {'NAME':{name}} {'TRY':{att}} {'STATUS':{status}} "
      + (f"{'DURATION':>{took}}\n{' ' * (pos + 2)}WORKER\n" if under
         else f"{'DURATION':>{took}}  WORKER\n"))
    for p, n, tried, s, t, wid, err in cells:
        line = (f"{p:>{pos}}  {cut_middle(n, name):{name}} {tried:{att}} {s:{status}} "
                f"{t:>{took}}" + (f"\n{' ' * (pos + 2)}{wid}" if under else f"  {wid}"))
        if err and width - len(line) - 2 >= OUTCOME_MIN:
            w(f"{line}  {cut_end(err, width - len(line) - 2)}\n")
            continue
        w(line.rstrip() + "\n")
        if err:
            w(" " * (pos + 2) + ARROW + cut_end(err, width - pos - 2 - len(ARROW)) + "\n")


def _metrics(metrics: dict[str, float], width: int, w: Write) -> None:
    """``print_metrics``' lines, a line too long for the terminal wrapped under its
    label."""
    from tether.cli._runs import print_metrics

    lines: list[str] = []
    print_metrics(metrics, lines.append)
    for chunk in lines:
        for line in chunk.splitlines():
            if len(line) <= width or not line.startswith("  "):
                w(line + "\n")
                continue
            label, _, text = line.partition(":")
            # (under the values' column while it leaves them half the line: ``wrap``
            # indented them by a third of a narrow terminal, out of line)
            for part in hang(f"{label}: ".ljust(20), text.strip(), width):
                w(part + "\n")


def _outcome(info: RunInfo, width: int, w: Write) -> None:
    """The result, or the error, wrapped to the width (what ``--wide`` cuts at 200
    characters is cut as much; an error, as there, not)."""
    if info.status is RunStatus.COMPLETED:
        w("\n")
        for line in wrap(short(info.result, 200), width, "result: "):
            w(line + "\n")
        return
    if not info.error:
        return
    w("\n")
    for line in wrap(_line(_error_text(info.error)), width, f"{info.status.value}: ",
                     max_lines=12):
        w(line + "\n")
    origin = error_origin(info.error) if info.status in ORIGIN_SHOWN else None
    if origin:
        for line in wrap(_line(origin), width, "  at "):
            w(line + "\n")
    if info.status is RunStatus.BLOCKED:
        for line in wrap(OPERATOR_NOTE, width, ""):
            w(line + "\n")
        w(resume_command(info.run_id) + "\n")
