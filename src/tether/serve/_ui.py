"""The web UI: runs, a run's timeline, the approvals inbox, and login.

Server-rendered (Jinja2, autoescaped: run ids, names and payloads are shown as text,
never as HTML) with one small vendored script, ``static/app.js``, that refreshes
fragments and follows a run's Server-Sent Events. Every form posts a CSRF token that
must equal the ``tether_csrf`` cookie (SameSite=Strict), and changing anything needs
an admin principal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tether import App, RunNotFound
from tether._budgets import NO_CALL, NO_CALL_YET, kept_raise_text
from tether._clock import age, beyond_dates, utc_datetime
from tether._lifecycle import OVERDUE_AFTER, live_versions, newest_last
from tether._show import (
    HELD_NOTE,
    STATUSES,
    TIMED_OUT,
    awaited_signal_since,
    blocked_reason,
    bookkeeping,
    cancel_unheeded,
    counted,
    entry_outcome,
    held,
    pinned_to_wait,
    queued_why,
    run_document,
    search_statuses,
    unattempted,
    unreadable_payload,
    untimed,
    version_idle_note,
    version_unknown_note,
    versions_idle,
    versions_unreadable,
)
from tether._types import ENDED_VALUES, MAX_CANCEL_REASON, MAX_NAME, EntryStatus, JournalEntry
from tether.ai._budget import raise_command
from tether.ai._rows import billed, fmt_tokens, fmt_usd, llm_call
from tether.errors import Cancelled, ConfigError, PayloadError, SignalError, TetherError, shown
from tether.serve._api import (
    ApiError,
    answer,
    decode_cursor,
    encode_cursor,
    field_name,
    parse_json,
    parse_limit,
    payload_error,
    refuse_lone_surrogates,
    run_not_found,
    run_statuses,
)
from tether.serve._auth import CSRF_COOKIE, SESSION_COOKIE, csrf_ok, digest, new_csrf
from tether.serve._control import (
    SCHEDULE_ACTIONS,
    fork,
    fork_position,
    retry,
    schedule_action,
    schedules,
)
from tether.serve._events import last_event_id
from tether.serve._paths import root_of, route_path
from tether.store._lifecycle import (  # (the statuses the retry button shows for)
    RETRYABLE,
    retry_plan,
)
from tether.store._port import RunChildren

_TEMPLATES = str(resources.files("tether.serve").joinpath("templates"))
_ENV = Environment(loader=FileSystemLoader(_TEMPLATES),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   trim_blocks=True, lstrip_blocks=True)
#: What the last form did, said once on the page it leads to (a cookie: nothing in the
#: address to bookmark, share or forge from another site).
FLASH_COOKIE = "tether_flash"


# -- formatting (template filters) -------------------------------------------------------


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return beyond_dates(ts) or utc_datetime(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_utc(ts: float | None) -> str | None:
    """``ts`` as an ISO 8601 UTC time to the second ("2026-12-06T13:53:12Z"), a
    ``<time datetime>``'s value; None when no date stands for it (``beyond_dates``)."""
    if ts is None or beyond_dates(ts):
        return None
    d = utc_datetime(ts)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}Z"


def time_tag(ts: float | None) -> Markup:
    """An absolute time as the pages show it: its UTC text (``fmt_time``: true without
    a script, and to a screen reader) in a ``<time datetime>`` whose title keeps it;
    app.js redraws the text in the browser's zone, or leaves it in UTC (the header's
    switch). A time no date stands for is plain text."""
    text = fmt_time(ts)
    iso = iso_utc(ts)
    if iso is None:
        return escape(text)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, text, text)


def time_title(ts: float | None, say: str = "") -> Markup:
    """The attributes of a relative time ("41 s ago") that hold its absolute one: a
    title in UTC (``say`` before it: "since "), and ``data-at`` (ISO) from which app.js
    puts it in the browser's zone too."""
    text = say + fmt_time(ts)
    iso = iso_utc(ts)
    if iso is None:
        return Markup(' title="{}"').format(text)
    if not say:
        return Markup(' title="{}" data-at="{}"').format(text, iso)
    return Markup(' title="{}" data-at="{}" data-say="{}"').format(text, iso, say)


#: A time of day in UTC in a note ("Asked run ... to cancel at 07:12:03 UTC"), written
#: by ``_asked_at``.
_CLOCK_UTC = re.compile(r"\b([01]\d|2[0-3]):([0-5]\d):([0-5]\d) UTC\b")


#: Around an id in a form's note (``mark_id``): the first-strong isolate and its pop,
#: characters no id or name may hold (``tether._types.check_name``), so the note's
#: cookie says which words are ids without markup.
_ID_OPEN, _ID_CLOSE = "\u2068", "\u2069"
_MARKED_ID = re.compile(f"{_ID_OPEN}([^{_ID_OPEN}{_ID_CLOSE}]+){_ID_CLOSE}")


def mark_id(value: str) -> str:
    """``value`` (a run id, a schedule's name) marked as an id in a form's note: the
    page draws each of its occurrences in the note whole (``with_ids``)."""
    return f"{_ID_OPEN}{value}{_ID_CLOSE}"


def with_ids(text: str, ids: Iterable[str]) -> Markup:
    """``text`` escaped, each word that is one of ``ids`` (with the quotes, brackets
    and punctuation stuck to it: "'pf.1',") in a ``<span class="id">``, which app.css
    keeps on one line unless it is wider than its line. A line broke a run id in a
    sentence at its hyphens ("Sent signal 'go' to run signal-2026-12-07-" / "77aa."),
    read as two words, and a wrong id to copy."""
    known = sorted({i for i in ids if i and i.strip()}, key=len, reverse=True)
    if not known:
        return escape(text)
    word = re.compile(r"(?<!\S)(['\"(]?(?:" + "|".join(map(re.escape, known))
                      + r")[.,:;!?)'\"]*)(?!\S)")
    out: list[str] = []
    end = 0
    for m in word.finditer(text):
        out.append(escape(text[end:m.start()]))
        out.append(Markup('<span class="id">{}</span>').format(m.group(1)))
        end = m.end()
    out.append(escape(text[end:]))
    return Markup("").join(out)


@pass_context
def flash_times(context: Context, text: str) -> Markup:
    """A form's note with its time of day in a ``<time>``, as ``time_tag`` (app.js
    shows it in the browser's zone, as a time of day), and the ids its writer marked
    (``mark_id``) drawn whole wherever they occur in it (``with_ids``: a warning
    quotes them too). The note says the time, not the
    date: it was written by this clock a moment ago (its cookie lives 60 s), so it is of
    the page's day, or of the day before when that time is still ahead."""
    ids = _MARKED_ID.findall(text)
    text = text.replace(_ID_OPEN, "").replace(_ID_CLOSE, "")
    now = utc_datetime(context["now"])
    out: list[str] = []
    end = 0
    for m in _CLOCK_UTC.finditer(text):
        at = now.replace(hour=int(m.group(1)), minute=int(m.group(2)),
                         second=int(m.group(3)), microsecond=0)
        if at > now + dt.timedelta(minutes=5):
            at -= dt.timedelta(days=1)
        iso = iso_utc(at.timestamp())
        out.append(with_ids(text[end:m.start()], ids))
        if iso is None:
            out.append(escape(m.group(0)))
        else:
            out.append(Markup('<time datetime="{}" title="{}" data-clock>{}</time>').format(
                iso, fmt_time(at.timestamp()), m.group(0)))
        end = m.end()
    out.append(with_ids(text[end:], ids))
    return Markup("").join(out)


@pass_context
def fmt_ago(context: Context, ts: float | None) -> str:
    """How long ago ``ts`` was, by the page's ``now`` (the App's clock, see ``render``)."""
    if ts is None:
        return "-"
    return f"{age(context['now'] - ts)} ago"  # (the CLI's rule: ``age``)


@pass_context
def fmt_in(context: Context, ts: float | None) -> str:
    """How far ahead ``ts`` is by the page's ``now``: "in 5 min" (or "due" once it has
    passed)."""
    if ts is None:
        return "-"
    s = ts - context["now"]
    if s <= 0:
        return "due"
    if s < 60:
        return f"in {s:.0f} s"
    if s < 3600:
        return f"in {s / 60:.0f} min"
    if s < 172800:
        return f"in {s / 3600:.1f} h"
    return f"in {s / 86400:.0f} d"


def _timer_until(text: str | None) -> float | None:
    """When a ``waiting_for`` of a timer ("timer until ISO") wakes, else None."""
    if not text or not text.startswith("timer until "):
        return None
    try:
        return dt.datetime.fromisoformat(text[len("timer until "):]).timestamp()
    except ValueError:
        return None


def wait_text(waiting_for: str | None) -> Markup:
    """A run's ``waiting_for`` as its page's head says it: a timer's time as the page's
    other times (``time_tag``: "timer until 2026-12-06 17:36:08 UTC", in the viewer's
    zone with app.js), not as the ISO text stored; the rest as stored, the child run's
    id or the signal's name of each of its waits drawn whole (``with_ids``)."""
    until = _timer_until(waiting_for)
    if until is None:
        text = waiting_for or ""
        names = [name for kind, _, name in (part.partition(" ") for part in text.split(" or "))
                 if kind in ("child", "signal")]
        return with_ids(text, names)
    return Markup("timer until ") + time_tag(until)


def run_wait_text(run: Mapping[str, Any]) -> Markup:
    """What a run's page head says it waits for: ``wait_text``, except a wait for an
    approval (``waiting_for`` the signal that answers it, ``signal approval``) whose
    live status this server reads: ``approval of TOOL``, as ``tether runs`` and ``tether
    show`` say it; one answered already, its run awaiting a worker (``run_view``'s
    ``approval_answer``): ``approval of TOOL answered (approved), waiting for a
    worker``."""
    status = run.get("status_info")
    if run.get("waiting_for") == _APPROVAL_WAIT and isinstance(status, Mapping) \
            and status.get("state") == "awaiting_approval":
        approval = status.get("approval")
        tool = approval.get("tool") if isinstance(approval, Mapping) else None
        answer = run.get("approval_answer")  # (tether.ai._approvals.waiting_answer's)
        if answer is not None:
            return escape(answer.words(str(tool or "")))
        return escape(f"approval of {tool}" if tool else "approval")
    return wait_text(run.get("waiting_for"))


def wait_title(waiting_for: str | None) -> Markup:
    """The title attribute (and ``data-at``) of a runs table's wait: what it waits for,
    a timer's time as ``time_title`` says it."""
    until = _timer_until(waiting_for)
    if until is None:
        return Markup(' title="{}"').format(waiting_for or "")
    return time_title(until, "timer until ")


@pass_context
def fmt_waits(context: Context, waiting_for: str | None) -> str:
    """A run's ``waiting_for`` as the runs table says it: a timer by how far ahead it
    wakes ("timer, wakes in 2.7 h") rather than its ISO time, several child runs by how
    many ("3 child runs"), the rest as stored."""
    text = waiting_for or ""
    until = _timer_until(text)
    if until is not None:
        ahead = fmt_in(context, until)
        return "timer, due" if ahead == "due" else f"timer, wakes {ahead}"
    parts = text.split(" or ")
    if len(parts) > 1 and all(p.startswith("child ") for p in parts):
        # (a gather of child runs: "child a.1 or child a.3 or ...", cut to the cell's 40
        # characters, named two of fifty; the cell's title keeps them all)
        return f"{len(parts)} child runs"
    return text


def attempts_cell(e: dict[str, Any]) -> str:
    """A timeline row's Attempts cell: an en dash for an entry that ran no attempt
    (``unattempted``), as ``tether show``'s ATT says ``-``."""
    return "\u2013" if unattempted(e) else str(e["attempts"])


def duration_cell(e: dict[str, Any]) -> str:
    """A timeline row's Duration cell: an en dash for an entry that took no time of its
    own (``untimed``), as ``tether show``'s DURATION says ``-``."""
    return "\u2013" if untimed(e) else fmt_duration(e.get("duration"))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "\u2013"  # (an en dash, as an unknown start is drawn)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


#: Levels of a payload the pages indent; deeper ones are drawn on one line each.
PRETTY_DEPTH = 8


def pretty(value: Any) -> str:
    """``value`` as indented JSON (as ``json.dumps(indent=2)`` draws it) for its first
    ``PRETTY_DEPTH`` levels, each deeper array or object on one line. Indenting every
    level made a page grow with depth times lines: a 200 KB input nested 800 deep drew
    a page of 160 MB, in 4 s, at each of its refreshes."""
    if isinstance(value, str):
        return value
    return "".join(_pretty_parts(value, 0))


def _pretty_parts(value: Any, depth: int) -> Iterator[str]:
    if depth >= PRETTY_DEPTH or not isinstance(value, (dict, list)) or not value:
        yield json.dumps(value, ensure_ascii=False, default=str)
        return
    pad = "  " * (depth + 1)
    last = len(value) - 1
    if isinstance(value, dict):
        yield "{\n"
        for i, (key, item) in enumerate(value.items()):
            yield pad + json.dumps(key if isinstance(key, str) else str(key),
                                   ensure_ascii=False) + ": "
            yield from _pretty_parts(item, depth + 1)
            yield ",\n" if i < last else "\n"
        yield "  " * depth + "}"
        return
    yield "[\n"
    for i, item in enumerate(value):
        yield pad
        yield from _pretty_parts(item, depth + 1)
        yield ",\n" if i < last else "\n"
    yield "  " * depth + "]"


def short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def path_segment(value: Any) -> str:
    """``value`` as one segment of a URL path: every ``/`` (and whatever else is not
    unreserved) percent-encoded. Jinja2's ``urlencode`` keeps ``/``, and the browser
    then resolves the ``..`` segments of a run id such as ``a/../victim`` before it
    sends the request: the approve button of the run ``a/../victim`` answered
    ``victim``'s approval, and a run page's script fetched (and drew) another path's
    answer. The routes read ``%2F`` as ``/`` of the id."""
    return quote(str(value), safe="")


def short_id(value: str, width: int = 40) -> str:
    """A run id cut to ``width`` in its middle, not at its end: what tells ids apart is
    often at the end (a child's ``.N``, a schedule's ``@TICK``), and two children of a
    long-named parent cut at the end looked the same."""
    if len(value) <= width:
        return value
    tail = max(width // 3, 1)
    return value[: width - tail - 1] + "…" + value[-tail:]


def sealed(value: Any) -> bool:
    """Whether ``value`` is ``_show.unreadable_payload``'s marker: a payload this server
    cannot decrypt, which the pages show as a note, never as the marker's JSON."""
    return isinstance(value, dict) and value.get("unreadable_payload") is True


def readable(value: Any) -> bool:
    """A payload the page can show: there is one, and it is not ``sealed``."""
    return value is not None and not sealed(value)


def sealed_text(value: dict[str, Any]) -> str:
    """The note's words as plain text (a timeline's one-line error); the
    ``_payload.html`` macro says the same with the key id set apart."""
    kid = value.get("key_id")
    if isinstance(kid, str) and kid:
        return f"encrypted — key {kid} is not loaded on this server"
    return "encrypted — this server's payload hook cannot decode it"


_ENV.filters.update(time=fmt_time, when=time_tag, at=time_title, flash=flash_times,
                    ids=with_ids,
                    wait_text=wait_text, run_wait_text=run_wait_text, wait_title=wait_title,
                    ago=fmt_ago, ahead=fmt_in,
                    waits=fmt_waits, duration=fmt_duration, tokens=fmt_tokens, usd=fmt_usd,
                    pretty=pretty, short=short, id=short_id, seg=path_segment,
                    shell=shlex.quote, att=attempts_cell, took=duration_cell)
_ENV.tests.update(sealed=sealed, readable=readable)
_ENV.globals["held_note"] = HELD_NOTE  # (a blocked run's pending entry, as show says)
_ENV.globals["max_name"] = MAX_NAME  # (the forms' maxlength: the engine's limit)
_ENV.globals["max_cancel_reason"] = MAX_CANCEL_REASON
_ENV.globals["overdue_after"] = OVERDUE_AFTER  # (the schedules page: a tick this late)


#: What a run waiting for an approval waits for (``tether.ai._approvals``).
_APPROVAL_WAIT = "signal approval"


def sealed_approval(app: App, run: Any) -> dict[str, Any] | None:
    """For a run record waiting for an approval whose live status (what it asks, of
    which tool, why) this server cannot decrypt: ``_show.unreadable_payload``'s marker;
    else None. Such a run was left out of the inbox ("Nothing waits for a person") and
    its page offered a raw ``approval`` signal form."""
    if str(run.status) != "waiting" or run.waiting_for != _APPROVAL_WAIT \
            or run.status_info is None:
        return None
    try:
        app.codec.for_run(run.run_id).decode(run.status_info, None, "status")
    except Exception as exc:  # (the codec's own errors: a key it lacks, no hook)
        marker = unreadable_payload(run.status_info, exc)
        return marker if sealed(marker) else None
    return None


# -- view models ---------------------------------------------------------------------------


def _error_text(err: Any) -> str:
    if sealed(err):
        return sealed_text(err)
    if isinstance(err, dict):
        return f"{err.get('type', 'Error')}: {err.get('message', '')}"
    return "" if err is None else str(err)


def _traceback(err: Any) -> str | None:
    """The recorded traceback of an error, as the lines Python printed (shown as text,
    not as a JSON string with its line breaks escaped)."""
    if isinstance(err, dict) and isinstance(err.get("traceback"), str) and err["traceback"]:
        return str(err["traceback"]).rstrip()
    return None


def entry_view(e: dict[str, Any], now: float) -> dict[str, Any]:
    """One journal entry as the timeline draws it."""
    view = dict(e)
    kind, status = e["kind"], e["status"]
    view["error_text"] = _error_text(e.get("error"))
    view["traceback"] = _traceback(e.get("error"))
    view["billed"] = billed(e.get("error")) if readable(e.get("error")) else None
    view["llm"] = llm_call(e)
    view["bookkeeping"] = bookkeeping(e)  # (Tether's own: a dimmed, labelled row)
    waiting = status == "pending" and kind in ("sleep", "signal", "child_result")
    view["is_wait"] = waiting or kind in ("sleep", "signal", "child_result")
    error = e.get("error")
    # A step that raised ``tether.Postpone`` (or met an open circuit breaker, a rate
    # limit) said "not now": its row says postponed, not "attempt N failed".
    postponed = (status == "pending" and isinstance(error, dict)
                 and str(error.get("type", "")).endswith(".Postpone"))
    # (A signal's timeout is ``timed_out``, drawn neutral: not a failed operation.)
    view["state"] = ("waiting" if waiting else "postponed" if postponed else "retrying"
                     if status == "pending" and error is not None else entry_outcome(e))
    view["timed_out"] = view["state"] == TIMED_OUT
    if view["timed_out"] and isinstance(error, dict) and error.get("timeout") == 0:
        view["is_wait"] = False  # a check ("has one come?", timeout 0) waited no time
    view["reason"] = str(error.get("message", "")) if postponed and isinstance(
        error, dict) else None
    if status == "pending" and e.get("next_attempt_at"):
        view["until"] = e["next_attempt_at"]
    else:
        view["until"] = None
    view["duration"] = e.get("duration")
    if view["duration"] is None and status == "pending" and e.get("started_at"):
        view["running_for"] = max(now - e["started_at"], 0.0)
    else:
        view["running_for"] = None
    # The payloads this server cannot decrypt are named on one line with one note (all
    # of a run's are sealed alike, so a note apiece said the same thing three times);
    # the expandable details hold the rest.
    payloads = {"arguments": e.get("args"), "result": e.get("result"), "error": e.get("error")}
    view["sealed"] = [label for label, value in payloads.items() if sealed(value)]
    view["sealed_marker"] = next((v for v in payloads.values() if sealed(v)), None)
    view["has_details"] = any(readable(v) for v in payloads.values())
    return view


def in_flight_view(op: dict[str, Any], entry: dict[str, Any] | None,
                   now: float) -> dict[str, Any]:
    """The timeline row of an operation in flight (``_show.in_flight``): state
    ``running``, its attempt's number and start, *running for* since then. ``entry``:
    the step's pending journal entry, when an earlier attempt failed (its arguments and
    that attempt's error stay in the row, as ``previous_error``)."""
    view = entry_view(entry, now) if entry is not None else entry_view({
        "position": op["position"], "kind": op["kind"], "name": op["name"],
        "status": "pending", "attempts": op["attempt"], "started_at": op["started_at"],
        "duration": None}, now)
    view["previous_error"] = view["error_text"] if entry is not None else None
    view.update(state="running", attempts=op["attempt"], started_at=op["started_at"],
                until=None, reason=None, error_text="", traceback=None, is_wait=False,
                running_for=max(now - op["started_at"], 0.0), in_flight=True,
                worker_id=op["worker_id"])
    return view


def with_in_flight(rows: list[dict[str, Any]], ops: list[dict[str, Any]],
                   now: float) -> list[dict[str, Any]]:
    """The timeline's rows (journal entries, ``entry_view``) with the operations in
    flight: a step's pending entry (an attempt failed, the next one runs) becomes its
    running row; a step with no entry yet (its first attempt runs) gets a row of its
    own, in position order (a run's first operation included)."""
    if not ops:
        return rows
    by_position = {r["position"]: i for i, r in enumerate(rows)}
    merged = list(rows)
    for op in ops:
        i = by_position.get(op["position"])
        if i is not None:
            merged[i] = in_flight_view(op, merged[i], now)
        else:
            merged.append(in_flight_view(op, None, now))
    return sorted(merged, key=lambda r: r["position"])


def with_awaited_signal(rows: list[dict[str, Any]], doc: dict[str, Any],
                        now: float) -> list[dict[str, Any]]:
    """The timeline's rows with the signal a waiting run waits for, when nothing is
    journaled for that wait: a signal wait with no timeout writes its entry only when
    the signal arrives, so the page of a run waiting for a person's answer read "No
    operations yet." (or ended at the step before) under "waiting for signal go". The
    row has no position (the entry takes one when the signal comes); its start is the
    one its entry will show (``awaited_signal_since``: such a wait journals none)."""
    waiting_for = str(doc.get("waiting_for") or "")
    if doc.get("status") != "waiting":
        return rows
    out = list(rows)
    # (several at once, "signal go or signal stop": a row for each, not one named
    # "go or signal stop")
    for name in awaited_signals(waiting_for):
        if any(r["kind"] == "signal" and r["name"] == name and r["state"] == "waiting"
               for r in rows):
            continue  # (a wait with a timeout: its entry is journaled, pending)
        view = entry_view({"position": None, "kind": "signal", "name": name,
                           "status": "pending", "attempts": 0,
                           "started_at": awaited_signal_since(doc), "duration": None}, now)
        view["awaited"] = True
        out.append(view)
    return out


def awaited_signals(waiting_for: str | None) -> list[str]:
    """The signals a waiting run waits for, by its ``waiting_for``: one ("signal go"),
    or several at once ("signal go or signal stop": branches gathered, ``merge_waits``
    joins their waits with " or "), children among them ("signal go or child c.1")."""
    text = waiting_for or ""
    parts = text.split(" or ")
    if len(parts) > 1 and all(p.startswith(("signal ", "child ")) for p in parts):
        return [p[len("signal "):] for p in parts if p.startswith("signal ")]
    return [text[len("signal "):]] if text.startswith("signal ") and text != "signal " else []


def child_workflows(journal: list[dict[str, Any]]) -> dict[str, str]:
    """The workflow of each child run a journal started, by the child's run id: its
    ``child_start`` entry is named by the workflow, its result is the child's id (read
    from the journal: no query; a result this server cannot decrypt is left out)."""
    return {e["result"]: e["name"] for e in journal
            if e["kind"] == "child_start" and isinstance(e.get("result"), str)}


def child_outcome(e: dict[str, Any]) -> str:
    """How the child of a journaled ``child_result`` entry ended, in a word: its entry
    is ok when it completed, an error naming the child's status when it did not."""
    if e["status"] == "ok":
        return "completed"
    error = e.get("error")
    status = error.get("status") if isinstance(error, dict) else None
    return str(status) if isinstance(status, str) and status else "ended, not completed"


def with_child_waits(rows: list[dict[str, Any]], doc: dict[str, Any],
                     now: float) -> list[dict[str, Any]]:
    """The timeline's rows with a child wait drawn as other waits are: each journaled
    ``child_result`` row says the child's workflow and how it ended (``child``), and a
    run waiting for a child now gets a row for that wait, which journals nothing until
    the child ends (the page showed the ``child_start`` row, then nothing: no word of
    the wait, nor of how long it has lasted). The awaited row has no position, its start
    is the run's ``waiting_since``, and it says the child's workflow and status
    (``doc["wait"]``'s, read once for the waiting box)."""
    workflows = child_workflows(doc["journal"])
    out = []
    for row in rows:
        if row["kind"] == "child_result" and row["state"] != "waiting" \
                and not row.get("in_flight"):
            row = {**row, "child": {"workflow": workflows.get(row["name"]),
                                    "outcome": child_outcome(row)}}
        out.append(row)
    wait = doc.get("wait")
    if doc.get("status") == "waiting" and wait and wait.get("kind") == "children":
        return [*out, _fan_out_row(wait, now)]
    if doc.get("status") != "waiting" or not wait or wait.get("kind") != "child":
        return out
    child_id = wait["child"]
    if any(r["kind"] == "child_result" and r["name"] == child_id for r in out):
        return out
    view = entry_view({"position": None, "kind": "child_result", "name": child_id,
                       "status": "pending", "attempts": 0,
                       "started_at": doc.get("waiting_since"), "duration": None}, now)
    view["awaited"] = True
    view["child"] = {"workflow": workflows.get(child_id), "status": wait["child_status"],
                     "waiting_for": wait["child_waiting_for"]}
    return [*out, view]


def _fan_out_row(wait: dict[str, Any], now: float) -> dict[str, Any]:
    """The timeline's row of a wait for several child runs at once (``_children_view``):
    one row for the wait, which journals each child's result as that child ends (the
    page showed the children's starts, then nothing of the wait; the row of one child's
    wait named "fo-1.2 or child fo-1.4" as a run, "not found"). Its name counts the
    children, its details list them, ended first, each linked with its workflow and
    status; it starts when the last of them was started (``_children_view``'s
    ``since``): the run's ``waiting_since`` moves on to each result journaled since."""
    view = entry_view({"position": None, "kind": "child_result",
                       "name": counted(wait["count"], "child run"), "status": "pending",
                       "attempts": 0, "started_at": wait["since"],
                       "duration": None}, now)
    view["awaited"] = True
    view["fan_out"] = wait
    return view


#: How many child runs a run page's tree draws under each run (its newest); the
#: others are counted in one line, and their own cost and tokens in the roll-up.
TREE_SHOWN = 100


def _own(m: dict[str, float]) -> tuple[float, float]:
    """A run's own cost and tokens, from its metrics."""
    return (m.get("cost.usd", 0.0),
            m.get("tokens.input", 0.0) + m.get("tokens.output", 0.0))


#: How many levels of a run's descendants its page's tree draws (its children, theirs, ...).
TREE_DEPTH = 5


async def _tree(app: App, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The children of a run, each with its own children and its cost rolled up (the
    newest ``TREE_SHOWN``, oldest first), and what is left out: how many, by status
    (``statuses``: (status, count) pairs, the most first), and their own cost and tokens
    (``hidden``). Only the newest 100 were read at first: a parent of 150 children drew
    100 of them with no word of the others, and its cost, "rolled up", left theirs out;
    then every child was read to count the others (a parent of 10,000: 10,000 runs read
    at each redraw of the page). Now the newest ``TREE_SHOWN`` are read, and the others
    counted and summed in the store; and for all the runs drawn at a level in one query
    (``run_children_many``), ``TREE_DEPTH`` at most a redraw: the tree asked once per
    run it drew, up to 100 round trips for a parent's children's children."""
    found: dict[str, RunChildren] = {}
    level = [run_id]
    for _ in range(TREE_DEPTH):
        got = await app.store.run_children_many(parents=level, limit=TREE_SHOWN)
        found.update(got)
        level = [kid.run_id for parent in level for kid in got[parent].runs]
        if not level:
            break
    return _tree_of(found, run_id)


def _tree_of(found: dict[str, RunChildren],
             run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``_tree``'s nodes under ``run_id`` from the children read (``found``; a run not
    in it, below the levels read, has none drawn and none counted)."""
    children = found.get(run_id, RunChildren([], {}))
    nodes = []
    for kid in reversed(children.runs):
        sub, sub_hidden = _tree_of(found, kid.run_id)
        cost, tokens = _own(kid.metrics)
        nodes.append({
            "run_id": kid.run_id, "workflow": kid.workflow, "status": kid.status,
            "created_at": kid.created_at, "children": sub, "hidden": sub_hidden,
            "cost": cost + sum(n["cost"] for n in sub) + sub_hidden["cost"],
            "tokens": tokens + sum(n["tokens"] for n in sub) + sub_hidden["tokens"]})
    rest = children.rest
    return nodes, {"count": sum(f.count for f in rest.values()),
                   "cost": sum((f.cost for f in rest.values()), 0.0),
                   "tokens": sum((f.tokens for f in rest.values()), 0.0),
                   "statuses": sorted(((s, f.count) for s, f in rest.items()),
                                      key=lambda p: (-p[1], p[0]))}


def _pending_approval(doc: dict[str, Any]) -> dict[str, Any] | None:
    info = doc.get("status_info")
    if doc["status"] in ENDED_VALUES or not isinstance(info, dict):
        return None
    approval = info.get("approval")
    if info.get("state") == "awaiting_approval" and isinstance(approval, dict):
        return approval
    return None


def _schema_hint(schema: Any) -> str | None:
    """What the data of an asked-for signal looks like, from its JSON schema, as the
    data field's placeholder: ``{"usd": number >= 0, "tokens": integer >= 0}``."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None
    fields = []
    for name, spec in list(schema["properties"].items())[:6]:
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type") if isinstance(spec.get("type"), str) else "value"
        low = spec.get("minimum")
        fields.append(f"{json.dumps(name)}: {kind}"
                      + (f" >= {low}" if isinstance(low, (int, float)) else ""))
    return "{" + ", ".join(fields) + "}" if fields else None


async def _wait_view(app: App, doc: dict[str, Any]) -> dict[str, Any] | None:
    """What a waiting run waits for and how a person answers it, from its
    ``waiting_for`` (``signal NAME``, ``timer until ISO``, ``child ID``, ``retry
    STEP``, ``postponed STEP: REASON``) and, for a
    signal the workflow asked a person for, its live status's ``input`` (``message``,
    ``schema``: the budget's raise, `docs/llm.md`). None when it waits for nothing, or
    for an approval (the approval's own box answers that)."""
    if doc["status"] != "waiting" or doc.get("approval") is not None:
        return None
    if doc.get("waiting_for") == _APPROVAL_WAIT and sealed(doc.get("status_info")):
        # An approval this server cannot read, nor answer (the answer is encrypted
        # with the run's key too): where to answer it, and no form.
        return {"kind": "sealed_approval", "marker": doc["status_info"],
                "cli": f"tether approve {shlex.quote(doc['run_id'])}"}
    kind, _, what = (doc.get("waiting_for") or "").partition(" ")
    awaited = awaited_children(doc.get("waiting_for") or "", child_workflows(doc["journal"]))
    if awaited is not None and (len(awaited[0]) > 1 or awaited[1]
                                or fan_out_taken(doc["journal"], awaited[0])):
        return await _children_view(app, doc, *awaited)
    names = awaited_signals(doc.get("waiting_for"))
    children = [p for p in (doc.get("waiting_for") or "").split(" or ")
                if p.startswith("child ")] if names else []
    if len(names) > 1 or children:
        if children:  # ("signal go or child c.1": the children's view says the signals)
            return await _children_view(
                app, doc, [c[len("child "):] for c in children],
                [f"signal {name}" for name in names])
        run_id = shlex.quote(doc["run_id"])
        return {"kind": "signals", "signals": [
            {"name": name, "cli": f"tether signal {run_id} {shlex.quote(name)} --data JSON"}
            for name in names]}
    if kind == "signal" and what:
        info = doc.get("status_info")
        ask = info.get("input") if isinstance(info, dict) else None
        if not (isinstance(ask, dict) and ask.get("signal") == what):
            ask = {}
        message = ask.get("message")
        hint = info.get("hint") if isinstance(info, dict) else None
        cli = (raise_command(hint, doc["run_id"])
               or f"tether signal {shlex.quote(doc['run_id'])} {shlex.quote(what)}"
                  " --data JSON")
        return {"kind": "signal", "name": what,
                "message": message if isinstance(message, str) else None,
                "hint": _schema_hint(ask.get("schema")),
                "cli": cli}
    if kind == "timer" and what.startswith("until "):
        try:
            until = dt.datetime.fromisoformat(what[len("until "):]).timestamp()
        except ValueError:
            return None
        return {"kind": "timer", "until": until}
    postponed = kind == "postponed"
    if (kind == "retry" and what and not what.startswith("after ")) or (postponed and what):
        # (``retry after a store error: ...`` is the worker's own wait, not a step's;
        # ``postponed STEP: REASON``: a step said "not now", ``tether.Postpone``.)
        step, _, reason = what.partition(": ") if postponed else (what, "", "")
        failed = [e for e in doc.get("entries", ()) if e["state"] in ("retrying", "postponed")
                  and e["name"] == step]
        last = failed[-1] if failed else None
        return {"kind": "retry", "step": step, "postponed": postponed,
                "reason": reason or None,
                "until": last["until"] if last else None,
                "attempts": last["attempts"] if last else None,
                "error_text": last["error_text"] if last and not postponed else None}
    if kind == "retry" and what.startswith("after a store error"):
        # The worker's own wait: a store call failed under the run (a dropped
        # connection), so it handed the run back to replay it from its journal.
        _, _, error = what.partition(": ")
        return {"kind": "store", "error": error or None}
    if kind == "child" and what:
        child = await app.store.run_get(what)
        return {"kind": "child", "child": what,
                "child_status": str(child.status) if child is not None else None,
                "child_waiting_for": child.waiting_for if child is not None else None}
    return None


#: How many of the child runs a run waits for at once its page names (the wait box and
#: the timeline's row), read in one query; the others are counted.
FAN_OUT_SHOWN = 50


def awaited_children(waiting_for: str, known: Mapping[str, str]
                     ) -> tuple[list[str], list[str]] | None:
    """The child runs a run waits for, and what else it waits for meanwhile, from its
    ``waiting_for``: a run whose branches wait together (``asyncio.gather`` of child
    calls) waits for "child A or child B or signal go" (``merge_waits`` joins its
    branches' waits with " or "). None when it waits for no child. ``known``: the run's
    children by its journal (``child_workflows``), so that a child whose id holds
    " or " is read whole."""
    if not waiting_for.startswith("child "):
        return None
    if waiting_for[len("child "):] in known:
        return [waiting_for[len("child "):]], []
    parts = waiting_for.split(" or ")
    children = [p[len("child "):] for p in parts if p.startswith("child ")]
    return children, [p for p in parts if not p.startswith("child ")]


async def _children_view(app: App, doc: dict[str, Any], awaited: list[str],
                         others: list[str]) -> dict[str, Any]:
    """The wait box (and the timeline's row) of a run waiting for several child runs at
    once: each awaited child (its id, workflow and status, read in one query; the first
    ``FAN_OUT_SHOWN``), and the children of the same fan-out whose results the run has
    taken already (``fan_out_taken``), with how each ended. ``others``: what else it
    waits for at the same time ("signal go")."""
    workflows = child_workflows(doc["journal"])
    shown = awaited[:FAN_OUT_SHOWN]
    found = {r.run_id: r for r in await app.store.run_get_many(shown)}
    children = []
    for child_id in shown:
        run = found.get(child_id)
        status = str(run.status) if run is not None else None
        children.append({"id": child_id, "workflow": workflows.get(child_id),
                         "status": status, "waiting_for": run.waiting_for if run else None,
                         "ended": status in ENDED_VALUES})
    children.sort(key=lambda c: not c["ended"])  # (ended first, as the taken ones)
    taken = fan_out_taken(doc["journal"], awaited)
    ended = sum(1 for c in children if c["ended"])
    ids = {*awaited, *(e["name"] for e in taken)}
    # (when the last of them was started: the wait for them all began then; the run's
    # ``waiting_since`` moves to each result journaled since)
    started = [e.get("finished_at") or e.get("started_at") for e in doc["journal"]
               if e["kind"] == "child_start" and isinstance(e.get("result"), str)
               and e["result"] in ids]
    since = max((t for t in started if t is not None), default=None)
    run_id = shlex.quote(doc["run_id"])
    signals = [{"name": o[len("signal "):],
                "cli": f"tether signal {run_id} {shlex.quote(o[len('signal '):])} --data JSON"}
               for o in others if o.startswith("signal ") and o != "signal "]
    return {"kind": "children", "children": children, "others": others, "signals": signals,
            "since": since if since is not None else doc.get("waiting_since"),
            "taken": [{"id": e["name"], "workflow": workflows.get(e["name"]),
                       "status": child_outcome(e), "ended": True} for e in taken],
            "count": len(awaited) + len(taken), "ended": ended + len(taken),
            "hidden": len(awaited) - len(shown)}


def fan_out_taken(journal: list[dict[str, Any]], awaited: list[str]
                  ) -> list[dict[str, Any]]:
    """The journaled results (``child_result``) of the children that ran at the same
    time as ``awaited`` (the children a run still waits for at once): those taken once
    the first of them had started. A gather's children all start at once, in one turn of
    the workflow's code, and their results are journaled as each ends; a child awaited
    before them (a call in a loop) ended before they started. So the last child of a
    fan-out is still drawn as one of several. A result this server
    cannot read (an encrypted child id) is not told apart: none is counted."""
    starts = [e["started_at"] for e in journal if e["kind"] == "child_start"
              and e.get("result") in awaited and e.get("started_at") is not None]
    if not starts:
        return []
    first = min(starts)
    return sorted((e for e in journal if e["kind"] == "child_result"
                   and e["status"] != "pending" and e.get("finished_at") is not None
                   and e["finished_at"] > first and isinstance(e.get("name"), str)),
                  key=lambda e: e["position"])


#: How many of a run's newest journal entries its page draws at first; "show earlier"
#: links add as many again (or all). Drawing all 5,000 entries of a long run took 1.4 s
#: and 4 MB of HTML.
TIMELINE_SHOWN = 200
#: Earlier generations a run page draws (a run continued as new): the newest ones.
GENERATIONS_SHOWN = 5


def timeline_size(value: str | None) -> int | None:
    """The ``timeline`` query parameter of a run page: how many of the newest entries
    to draw (``None``: all, for ``all``); absent or unreadable, ``TIMELINE_SHOWN``."""
    if value == "all":
        return None
    if value and value.isascii() and value.isdigit():
        return max(1, min(int(value[:9]), 10**9))
    return TIMELINE_SHOWN


#: The share of a budget's limit spent from which the run page's Budget card is amber:
#: the next call or two may be refused.
BUDGET_NEAR = 0.8


def budget_card(budget: dict[str, Any] | None, waiting_for: str | None) -> dict[str, Any] | None:
    """The run page's Budget card of a run whose workflow entered a budget, or whose
    journal holds a call under one (``budget``: the run document's,
    ``tether._budgets.run_budget``; ``None``: no card): the share spent of its most
    spent limit (``used``, percent), what it spent of each limit as ``tether show``
    says it (``limits``: ``1,840 of 5,000 tokens``, ``$0.0008 of $0.50``), and
    ``level``: ``over`` (red) when a limit is spent or the run waits on its budget,
    ``near`` (amber) from ``BUDGET_NEAR`` of one, else ``""``; ``note`` says which in
    words (``no model call yet`` of a run that made none, ``no model call`` of one that
    ended so, with a raise sent and not
    taken yet after it: ``raise to $10.00 sent, not taken yet``). Of a run whose limits
    are not known (``limits_unknown``: its calls recorded before their limits were, or
    no call yet), ``used`` is ``None`` and ``note`` says why, ``limits`` what it spent
    (nothing before its first call)."""
    if budget is None:
        return None
    unknown = budget.get("limits_unknown")
    if unknown is not None:
        spent = [] if unknown == NO_CALL_YET else [
            f"{fmt_tokens(budget['spent_tokens'])} tokens · "
            f"{fmt_usd(budget['spent_usd'])} spent"]
        return {"used": None, "limits": spent, "level": "", "note": unknown}
    said, shares = [], []
    if budget["tokens"] is not None:
        said.append(f"{fmt_tokens(budget['spent_tokens'])} of {fmt_tokens(budget['tokens'])} "
                    f"token{'' if budget['tokens'] == 1 else 's'}")
        shares.append(budget["spent_tokens"] / budget["tokens"] if budget["tokens"] > 0
                      else math.inf)
    if budget["usd"] is not None:
        said.append(f"{fmt_usd(budget['spent_usd'])} of {fmt_usd(budget['usd'])}")
        shares.append(budget["spent_usd"] / budget["usd"] if budget["usd"] > 0 else math.inf)
    used = max(shares, default=0.0)
    waits = waiting_for == "signal budget"  # (its next call refused: a raise goes on)
    level = ("over" if used >= 1 or waits else "near" if used >= BUDGET_NEAR else "")
    note = ("waits for a raise" if waits else "limit reached" if level == "over"
            else "near its limit" if level == "near"
            else NO_CALL_YET if budget.get("no_call_yet")
            else NO_CALL if budget.get("no_call") else "")
    if budget.get("kept_raise"):  # (tether budget before it reached its budget)
        note = f"{note} · {kept_raise_text(budget['kept_raise'])}" if note else \
            kept_raise_text(budget["kept_raise"])
    return {"used": "100+" if math.isinf(used) else f"{math.floor(used * 100):,}",
            "limits": said, "level": level, "note": note}


#: The words of an error text that may be run ids (``run_ids_in``): what it quotes
#: (``run 'digest-1.0' ended failed``: ``RunFailed`` says a run's id so) and the words
#: that break at a hyphen. At most ``_ID_WORDS`` of them are looked up.
_QUOTED_WORD = re.compile(r"'([^'\n]{1,300})'|\"([^\"\n]{1,300})\"")
_HYPHENED_WORD = re.compile(r"[^\s'\"(),;:]*\w-\w[^\s'\"(),;:]*")
_ID_WORDS = 100


def _known_run_ids(doc: dict[str, Any]) -> set[str]:
    """The run ids a run page's document names: its own, its parent's, the run it was
    forked from, its children (its journal's and its tree's)."""
    known = {doc["run_id"], doc.get("parent_run_id"), doc.get("forked_from")}
    known.update(e["name"] for e in doc["journal"] if e["kind"] == "child_result")

    def tree(nodes: list[dict[str, Any]]) -> None:
        for n in nodes:
            known.add(n["run_id"])
            tree(n["children"])

    tree(doc.get("tree") or [])
    return {i for i in known if isinstance(i, str) and i}


async def run_ids_in(app: App, doc: dict[str, Any], texts: Iterable[str]) -> list[str]:
    """The run ids the error ``texts`` of run page ``doc`` may name, for ``with_ids`` to
    draw whole: those the page knows (``_known_run_ids``) and the words of the texts
    that name a run in the store (a grandchild a child's error quotes, say), each
    found in a text. A ``<pre>``
    broke any but the run's own at its hyphens: "run 'digest-2026-12-" / "07-ef56.0'
    ended failed"."""
    texts = list(texts)
    known = _known_run_ids(doc)
    words: set[str] = set()
    for text in texts:
        for m in _QUOTED_WORD.finditer(text):
            words.add(m.group(1) or m.group(2))
        words.update(w.rstrip(".!?") for w in _HYPHENED_WORD.findall(text))
    asked = sorted(words - known)[:_ID_WORDS]
    if asked:
        known.update(r.run_id for r in await app.store.run_get_many(asked))
    return sorted(i for i in known if any(i in text for text in texts))


#: A phone folds a long timeline (app.css, at 640 px wide or less): it shows the
#: newest ``FOLD_KEEP`` entries and every entry not ``ok`` (failed, waiting, running,
#: retrying, on hold, timed out), and folds each run of at least ``FOLD_LEAST`` older
#: ``ok`` ones behind a line that says how many, which unfolds them all. At about 120 px
#: an entry, a 60-step run's page was 8,800 px tall on a 390 px phone.
FOLD_KEEP = 10
FOLD_LEAST = 3


def fold_timeline(rows: list[dict[str, Any]], keep: str = "") -> int:
    """Mark the timeline ``rows`` a phone folds (``FOLD_KEEP``): ``fold`` on each,
    and ``fold_gap`` (how many are folded from it on) on the first of each run of
    folded rows. ``keep``: a position not folded (the fork point the page marks).
    Returns how many are folded."""
    quiet = [r["state"] == "ok" and not r.get("in_flight") and r["position"] is not None
             and str(r["position"]) != keep for r in rows]
    newest = len(rows) - FOLD_KEEP
    folded = 0
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and j < newest and quiet[j]:
            j += 1
        size = j - i
        for k in range(i, j):
            rows[k]["fold"] = size >= FOLD_LEAST
            rows[k]["fold_gap"] = size if k == i and size >= FOLD_LEAST else 0
        if size >= FOLD_LEAST:
            folded += size
        if j == i:
            rows[i]["fold"], rows[i]["fold_gap"] = False, 0
            j += 1
        i = j
    return folded


async def run_view(app: App, run_id: str, *,
                   timeline: int | None = TIMELINE_SHOWN) -> dict[str, Any]:
    """A run page's data; its timeline (``timeline_rows``) holds the newest
    ``timeline`` entries (``None``: all), ``timeline_hidden`` counts those left out.
    ``entries`` keeps them all (the head's counts, the waiting box's step)."""
    # (not the document's 1,000 newest children, which the page does not show: its
    # tree reads its own)
    doc = await run_document(app, run_id, children=False)
    now = app.clock.now()
    doc["entries"] = [entry_view(e, now) for e in doc["journal"]]
    for view in doc["entries"]:
        if held(view, doc["status"]):
            # (a blocked run waits for nothing: no "waiting" row, no ticking duration)
            view.update(state="on_hold", held=True, running_for=None)
    cut = 0 if timeline is None else max(0, len(doc["entries"]) - timeline)
    doc["timeline_rows"] = with_awaited_signal(
        with_in_flight(doc["entries"][cut:], doc["in_flight"], now), doc, now)
    doc["timeline_hidden"] = cut
    # The Operations card's attempts: every attempt the store holds of this generation's
    # steps (the history ``tether show`` lists, read with the run), those before a retry
    # of the run included: the journal's counts are the current entries' alone ("2
    # attempts" of a step retried three times, 10 in all). At least the journal's count:
    # an attempt is written to the history up to 50 ms after its start.
    doc["attempts_made"] = max(
        sum(1 for a in doc["attempts"] if a["generation"] == doc["generation"]),
        sum(e["attempts"] or 0 for e in doc["journal"]))
    # Only steps have attempts: a run of none (child starts and results, signals,
    # sleeps) has no attempt count on its card, which read "0 attempts" beside its 6
    # operations, as if none of them had run.
    doc["has_steps"] = doc["attempts_made"] > 0 or any(
        e["kind"] == "step" for e in doc["journal"])
    # A running run none of whose operations is known to be in flight: between two, or
    # in one its worker has not written yet (within 50 ms of its start). The page says
    # so, and looks again by itself (app.js), as no event tells of an attempt's start.
    doc["in_flight_unknown"] = doc["status"] == "running" and not any(
        e["state"] in ("running", "waiting") for e in doc["timeline_rows"])
    # (what the page asked for, kept by its live refresh: a run that grows past it)
    doc["timeline_query"] = "" if timeline == TIMELINE_SHOWN else \
        f"?timeline={'all' if timeline is None else timeline}"
    doc["timeline_more"] = (timeline or 0) + TIMELINE_SHOWN
    # A run continued as new: its earlier generations' journals (archived), newest
    # first, GENERATIONS_SHOWN of them, each its newest TIMELINE_SHOWN entries.
    history = doc.get("history") or []
    doc["generations"] = [
        {"generation": g["generation"], "input": g["input"], "size": len(g["journal"]),
         "hidden": max(0, len(g["journal"]) - TIMELINE_SHOWN),
         "rows": [entry_view(e, now) for e in g["journal"][-TIMELINE_SHOWN:]]}
        for g in reversed(history[-GENERATIONS_SHOWN:])]
    doc["generations_hidden"] = max(0, len(history) - GENERATIONS_SHOWN)
    doc["tree"], doc["tree_hidden"] = await _tree(app, run_id)
    m = doc["metrics"]
    kids_cost = sum(n["cost"] for n in doc["tree"]) + doc["tree_hidden"]["cost"]
    kids_tokens = sum(n["tokens"] for n in doc["tree"]) + doc["tree_hidden"]["tokens"]
    doc["totals"] = {
        "cost": m.get("cost.usd", 0.0) + kids_cost,
        "tokens": m.get("tokens.input", 0.0) + m.get("tokens.output", 0.0) + kids_tokens,
        "kids_cost": kids_cost, "kids_tokens": kids_tokens}
    doc["approval"] = _pending_approval(doc)
    # (an approval answered already, its run awaiting a worker, is not awaited: the head
    # says so, and the card has no buttons; one read, of a run waiting for one alone)
    doc["approval_answer"] = None
    if doc["approval"] is not None and doc["status"] == "waiting" \
            and doc.get("waiting_for") == _APPROVAL_WAIT:
        from tether.ai._approvals import waiting_answer

        doc["approval_answer"] = await waiting_answer(app, run_id,
                                                      str(doc["approval"].get("id", "")))
    doc["wait"] = await _wait_view(app, doc)
    doc["timeline_rows"] = with_child_waits(doc["timeline_rows"], doc, now)
    doc["timeline_folded"] = fold_timeline(doc["timeline_rows"])
    # A queued run's workflow no worker registered, its queue's limit (paused: 0), as
    # `tether show` says them.
    doc["unregistered"], doc["queue_limit"] = await queued_why(
        app, doc["status"], doc["workflow"], doc["queue"], doc["journal"])
    # A queued or waiting run pinned to a version no live worker has, as `tether show`
    # says it: it waits while other versions' workers serve its queue.
    doc["version_idle"] = None
    if doc.get("version") and doc["status"] in ("queued", "waiting"):
        try:
            live = await live_versions(app.store, now)
        except TetherError as exc:  # (it cannot tell: it says so, not "no live worker")
            doc["version_idle"] = version_unknown_note(doc["version"],
                                                       f"{type(exc).__name__}: {exc}")
        else:
            if doc["version"] not in live:
                doc["version_idle"] = version_idle_note(doc["version"], newest_last(live))
    doc["budget_card"] = budget_card(doc.get("budget"), doc.get("waiting_for"))
    # (a running run whose cancel is pending, held by steps that did not stop: the head
    # names them, as `tether show` does)
    doc["cancel_unheeded"] = cancel_unheeded(doc)
    end = doc["finished_at"] or now
    doc["elapsed"] = end - doc["created_at"]
    doc["error_text"] = _error_text(doc.get("error"))
    doc["traceback"] = _traceback(doc.get("error"))
    # (the run ids its error texts name, drawn whole: the run's, its rows', its waiting
    # box's step or store error, its earlier generations' rows')
    wait = doc["wait"] or {}
    doc["known_ids"] = await run_ids_in(app, doc, [doc["error_text"]] + [
        text for e in doc["timeline_rows"]
        for text in (e.get("error_text"), e.get("previous_error")) if text] + [
        text for text in (wait.get("error_text"), wait.get("error"))
        if isinstance(text, str) and text] + [
        e["error_text"] for g in doc["generations"] for e in g["rows"]
        if e.get("error_text")])
    doc["final"] = doc["status"] in ENDED_VALUES
    doc["retryable"] = doc["status"] in RETRYABLE and not doc.get("erased_at")
    doc["fork_max"] = max((e["position"] for e in doc["journal"]), default=-1) + 1
    doc["retry_keeps"] = retry_keeps(doc["status"], doc["journal"])
    doc["cancel_end"] = (await cancel_end(app, doc) if doc["status"] == "cancelled"
                         else None)
    return doc


#: The error a run ends with when it stopped on its cancel, nothing raised by its code
#: as it did (``tether.errors.Cancelled``): its traceback is the engine's, not news.
_CANCELLED_TYPE = f"{Cancelled.__module__}.{Cancelled.__qualname__}"


def _said(value: Any) -> str | None:
    """A stored text the page may show (a cancel's reason, who asked it), or None: read
    defensively, as a field a newer store may add (or give in another shape)."""
    return value.strip() if isinstance(value, str) and value.strip() else None


async def cancel_end(app: App, doc: dict[str, Any]) -> dict[str, Any]:
    """How a cancelled run's page says its end, as ``tether result`` does (when, on whose
    request): ``requested_at``, when its cancel was asked (None when the store keeps
    no time); ``parent`` and ``parent_at`` when its parent's cancel cascaded to it (the
    store's ``cancelled_with``; ``parent_at`` None when the parent keeps no time);
    ``reason`` when one was given; and ``own_error``, whether its code raised an
    error of its own as it stopped (a clean-up that failed, a replay that blocked): the
    page shows that error, its traceback behind a disclosure; a plain
    ``tether.errors.Cancelled`` is the cancel itself, not shown as an error."""
    err = doc.get("error")
    out: dict[str, Any] = {
        "requested_at": doc.get("cancel_requested_at"), "parent": None, "parent_at": None,
        "reason": _said(doc.get("cancel_reason")),
        "own_error": err is not None and not (
            isinstance(err, dict) and err.get("type") == _CANCELLED_TYPE)}
    # (whose cancel it was is the store's ``cancelled_with``, as ``tether result`` reads
    # it: a cancel by a version before migration 0023 keeps none, and reads as the
    # run's own; the page guessed it from the two requests' times)
    parent_id = doc.get("cancelled_with")
    if not isinstance(parent_id, str):
        return out
    parent = await app.store.run_get(parent_id)
    out.update(parent=parent_id, parent_at=parent.cancel_requested_at
               if parent is not None and parent.cancel_requested_at is not None else None)
    return out


def retry_keeps(status: str, journal: list[dict[str, Any]]) -> int:
    """How many recorded operations a retry of a run in ``status`` keeps, by the
    store's own rule (``retry_plan``): a cancelled run forgets its ``cancel`` entry and
    what its code did after it, a failed run its unhandled failures (a failure its code
    moved on from is kept). The page counted the journal's ``ok`` entries: "keeps the
    2 recorded operations" of a cancelled run whose retry kept 1."""
    entries = [JournalEntry(e["position"], e["kind"], e["name"], e["status"],
                            started_at=e.get("started_at"), finished_at=e.get("finished_at"),
                            next_attempt_at=e.get("next_attempt_at")) for e in journal]
    plan = retry_plan(status, entries)
    gone = {*plan.delete, *plan.reset, *plan.restore}
    return sum(1 for e in entries if e.position not in gone and e.status != EntryStatus.PENDING)


# -- responses -------------------------------------------------------------------------


def _csrf(request: Request) -> tuple[str, bool]:
    """The CSRF token of this browser, and whether it must be set as a cookie."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and 16 <= len(current) <= 64:
        return current, False
    return new_csrf(), True


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    csrf, fresh = _csrf(request)
    who = request.state.principal
    # A whole page (not a fragment a script refreshes) says what the last form did, once.
    flash = None
    if not template.startswith("_") and FLASH_COOKIE in request.cookies:
        flash = unquote(request.cookies[FLASH_COOKIE])[:500] or None
        flash = _flash_now(flash, context.get("run"))
    # Times on the page ("5 s ago", "in 3 min", a running run's age) are read off the
    # App's clock, the one the stored times were written by (on PostgreSQL synced with
    # the server's): the host's own clock may be off by any amount.
    now = request.app.state.tether.clock.now()
    # ``root``: the root path (``/tether`` behind a proxy, else ""), the start of every
    # address a page names (tests/web/test_root_path.py checks that each one has it).
    html = _ENV.get_template(template).render(
        request=request, now=now, csrf=csrf, root=root_of(request.scope),
        can_change=who.can_change, role=who.role, logged_in=bool(who.digest),
        statuses=STATUSES, flash=flash,
        # (the "Log in again" link of the banner a page shows when its session ends
        # leads back to the page)
        login_next=login_query(request.scope) if request.method == "GET" else "",
        **context)
    # (The guard adds the security headers, the Content-Security-Policy first, to
    # every answer: tether.serve._server.CSP.)
    response = HTMLResponse(html, status_code=status)
    if fresh:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path=_cookie_path(request))
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=_cookie_path(request))
    return response


def _asked_at(app: App) -> str:
    """The time of day a form asked something, by the App's clock: a run page's note
    says what was asked and when, which stays true once the run has moved on (its head,
    redrawn live, says where it is now; app.js adds it to the note)."""
    return dt.datetime.fromtimestamp(app.clock.now(), dt.UTC).strftime("%H:%M:%S UTC")


def _cancel_asked_prefix(run_id: str) -> str:
    return f"Asked run {mark_id(run_id)} to cancel at "


def _asked_to_cancel(run_id: str, at: str) -> str:
    return f"{_cancel_asked_prefix(run_id)}{at}: it stops at its next operation."


def _flash_now(flash: str | None, run: Any) -> str | None:
    """The flash as true when the page renders: a run asked to cancel may have ended
    between the form's answer and this page (a worker delivered the cancel), and the
    page then says so rather than "Asked ... to cancel" under a *cancelled* status."""
    if not isinstance(run, dict) or flash is None or not flash.startswith(
            _cancel_asked_prefix(run["run_id"])):
        return flash
    if run["status"] == "cancelled":
        return f"Run {mark_id(run['run_id'])} is cancelled."
    if run["status"] in ENDED_VALUES:
        return f"Run {mark_id(run['run_id'])} ended {run['status']} before it could cancel."
    return flash


def _cookie_path(request: Request) -> str:
    """The ``Path`` of this server's cookies: its root path (``/tether/`` behind a
    proxy), so that another tool published on the same host under another path is not
    sent them."""
    return root_of(request.scope) + "/"


def _redirect(request: Request, path: str) -> RedirectResponse:
    """A 303 to ``path`` (``/runs``...) of this server, under its root path."""
    return RedirectResponse(root_of(request.scope) + path, status_code=303)


#: An error page's title by the error's code (``ApiError.code``), when its raise gave
#: none of its own, and by its status after that: words, not a bare "409".
ERROR_TITLES_BY_CODE = {
    "no_pending_approval": "Your answer was not sent",
    "run_not_found": "No such run",
    "schedule_not_found": "No such schedule",
    "csrf": "This form was not accepted",
    "forbidden": "Not allowed",
    "bad_position": "Not a position in this run",
    "malformed_json": "Not valid JSON",
}
ERROR_TITLES = {
    400: "Bad request", 403: "Not allowed", 404: "Not found",
    409: "This cannot be done now", 413: "Too large to send",
    422: "Cannot be done as asked", 500: "Something went wrong",
    503: "The store is unavailable",
}


def error_title(status: int, code: str | None = None) -> str:
    """An error page's title in words (the status code is shown beside it, small)."""
    return (ERROR_TITLES_BY_CODE.get(code or "") or ERROR_TITLES.get(status)
            or f"Error {status}")


def error_page(request: Request, status: int, message: str, *,
               refresh: int | None = None, code: str | None = None,
               title: str | None = None) -> Response:
    """The error page; ``refresh``: seconds after which the browser loads it again. A
    refused form's page links back to the run (or the schedules) it was sent from. Its
    title: ``title``, else ``error_title(status, code)``; the status code under it."""
    # (the ids its path names, a run's or a schedule's: the message draws them whole)
    ids = [v for v in request.path_params.values() if isinstance(v, str)]
    return render(request, "error.html", status=status, status_code=status, message=message,
                  ids=ids, title=title or error_title(status, code),
                  refresh=refresh, back=_form_origin(request, status))


def _form_origin(request: Request, status: int) -> tuple[str, str] | None:
    """The page a form posted to ``request``'s path was on, and what to call it (not a
    run that does not exist: a 404's page linked back to it, its id whole)."""
    if request.method != "POST":
        return None
    path = route_path(request.scope)
    if path.startswith("/ui/schedules/"):
        return "/schedules", "Back to schedules"
    if path.startswith("/ui/runs/") and status != 404:
        run_id = request.path_params.get("run_id")
        if isinstance(run_id, str) and run_id:
            return f"/runs/{path_segment(run_id)}", "Back to the run"
    return None


async def _form(request: Request) -> dict[str, str]:
    """The posted form, after its CSRF token and the principal's role are checked."""
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(values.get("csrf"), request.cookies.get(CSRF_COOKIE)):
        raise ApiError(403, "csrf", "the form is stale or came from another site: reload the "
                                    "page and try again")
    if not request.state.principal.can_change:
        raise ApiError(403, "forbidden", "your token may read, not change")
    return values


def _back(request: Request, values: dict[str, str], default: str, done: str) -> Response:
    """Back to the page the form was on, which then says ``done``."""
    target = values.get("next") or default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = default
    response = _redirect(request, target)
    response.set_cookie(FLASH_COOKIE, quote(done[:500], safe=""), max_age=60, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        path=_cookie_path(request))
    return response


# -- pages ------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return _redirect(request, "/runs")


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    out = {}
    for key in ("status", "workflow", "queue", "q", "parent"):
        value = (q.get(key) or "").strip()
        if value:
            # (A parent's id is matched whole: a child's own children have ids longer
            # than a new name's 200 characters.) The others are held to the API's rule
            # (``field_name``): one it refuses is refused with its reason. Cutting it to
            # 200 characters drew "No runs match these filters", where the API said why.
            # (A status is one of the statuses, or a comma list of them, as the API's
            # ``status=``: ``run_statuses`` says which.)
            out[key] = value if key in ("parent", "status") else str(
                field_name(value, key, required=True))
    if "status" in out:
        # (as the list reads it: its statuses in order, each once, so that the page's
        # status menu can show it, "waiting, queued" or " failed" as the menu's own)
        out["status"] = ",".join(run_statuses(out["status"]) or ())
    return out


def page_cursor(cursor: str | None, start: str) -> tuple[float, str] | None:
    """A list page's ``cursor`` query parameter (where the list goes on from), or None;
    one this server did not give (a link cut short or edited) is a 400 page saying so,
    and where to start again (``start``: "the newest runs"). The API's own words, "cursor
    is not one this API returned", spoke of an API to a person who followed a link."""
    if not cursor:
        return None
    try:
        return decode_cursor(cursor)
    except ApiError:
        raise ApiError(400, "bad_request", "This link's cursor, where the list goes on "
                       "from, is not one this server gave: the link was cut short or "
                       f"edited. Start again from {start}.",
                       title="This link is broken") from None


async def _runs_context(request: Request) -> dict[str, Any]:
    filters = _filters(request)
    limit = parse_limit(request.query_params.get("limit"), 50)
    cursor = request.query_params.get("cursor")
    app: App = request.app.state.tether
    found = await search_statuses(
        app, run_statuses(filters.get("status")), workflow=filters.get("workflow"),
        queue=filters.get("queue"), parent=filters.get("parent"), text=filters.get("q"),
        limit=limit + 1, before=page_cursor(cursor, "the newest runs"))
    page = found[:limit]
    more = None
    sized = {"limit": str(limit)} if request.query_params.get("limit") else {}
    if len(found) > limit:
        more = "/runs?" + urlencode({**filters, **sized, "cursor": encode_cursor(
            page[-1].created_at, page[-1].run_id)})
    from tether.ai._approvals import approval_wait, pending_of, waiting_answers

    # (the runs on the page, as listed, and every approval among them that a person may
    # answer: one answered already, awaiting a worker, is none; one read of the answers
    # waiting, only when a run on the page waiting for an approval is claimable)
    answered = await waiting_answers(app, page)
    waiting = {r.run_id for r in page if r.run_id not in answered
               and (pending_of(app, r) is not None or sealed_approval(app, r) is not None)}
    # (a run waiting for an approval this server reads: its Waiting-for cell says
    # "approval of TOOL" (or that it was answered and waits for a worker), as `tether
    # runs`' does (``approval_cell``); it said the raw "signal approval")
    asked = {r.run_id: (answered[r.run_id].words(p.tool) if r.run_id in answered
                        else approval_wait(p.tool)) for r in page
             if r.status == "waiting" and (p := pending_of(app, r)) is not None}
    # (a blocked run waits for an operator: its cell says why, as `tether runs` does)
    blocked = {r.run_id: blocked_reason(app, r) for r in page if r.status == "blocked"}
    # (a queued run of a paused queue waits for the pause to be lifted, and a queued or
    # waiting run pinned to a version no live worker has for a worker of it: the cell
    # says so, as `tether runs` does, where it was empty)
    if any(r.status == "queued" for r in page):
        limits = await app.store.queue_limits()
        blocked.update({r.run_id: "queue paused" for r in page
                        if r.status == "queued" and limits.get(r.queue) == 0})
    idle: dict[str, str] = {}
    if any(pinned_to_wait(r) for r in page):
        try:
            idle = versions_idle(page, await live_versions(app.store, app.clock.now()))
        except TetherError:  # (it cannot tell, and says so, as the run page does)
            idle = versions_unreadable(page)
    return {"runs": page, "filters": filters, "more": more, "awaiting": waiting,
            "blocked": blocked, "idle": idle, "asked": asked,
            "query": urlencode({**filters, **sized}), "paged": bool(cursor),
            "unparented": urlencode({k: v for k, v in {**filters, **sized}.items()
                                     if k != "parent"})}


async def runs_page(request: Request) -> Response:
    return render(request, "runs.html", page="runs", **await _runs_context(request))


async def runs_fragment(request: Request) -> Response:
    return render(request, "_runs_table.html", **await _runs_context(request))


async def _view_or_404(request: Request) -> dict[str, Any]:
    run_id = request.path_params["run_id"]
    try:
        return await run_view(request.app.state.tether, run_id, timeline=timeline_size(
            request.query_params.get("timeline")))
    except RunNotFound:
        raise run_not_found(run_id) from None


async def run_page(request: Request) -> Response:
    view = await _view_or_404(request)
    # An ended run's page follows no events (app.js: data-final): its cursor is not
    # needed. A running run's is read from its newest events (_events.last_event_id).
    after = None if view["final"] else await last_event_id(request.app.state.tether,
                                                              view["run_id"])
    fork_at = request.query_params.get("fork_at", "")
    # (Its length first: int() refuses more than 4,300 digits with a ValueError, a 500
    # until 2026-12-06. No journal has a position of 19 digits.)
    if not (fork_at.isascii() and fork_at.isdigit()) or len(fork_at) > 18 \
            or int(fork_at) > view["fork_max"]:
        fork_at = ""
    if fork_at:  # (the fork point's row is not folded on a phone)
        view["timeline_folded"] = fold_timeline(view["timeline_rows"], keep=fork_at)
    return render(request, "run.html", page="run", run=view, after=after or "",
                  fork_at=fork_at, retryable=RETRYABLE, ended=ENDED_VALUES)


async def run_fragment(request: Request) -> Response:
    """The top (``?part=head``) or the rest (``?part=body``) of a run page."""
    part = request.query_params.get("part", "head")
    if part not in ("head", "body"):
        raise ApiError(400, "bad_request", "part must be head or body")
    return render(request, f"_run_{part}.html", run=await _view_or_404(request))


async def approvals_page(request: Request) -> Response:
    return render(request, "approvals.html", page="approvals",
                  **await _approvals_context(request))


async def approvals_fragment(request: Request) -> Response:
    return render(request, "_approvals_list.html", **await _approvals_context(request))


async def schedules_page(request: Request) -> Response:
    return render(request, "schedules.html", page="schedules",
                  schedules=await schedules(request.app.state.tether))


#: How many approvals the inbox shows at a time (the oldest runs' first).
APPROVALS_SHOWN = 50
#: How many approvals the inbox counts at most (its heading says "1,000+ waiting" past
#: it): the count reads that many entries of the index of approval waits, and a row of
#: each (its ``available_at``: answered or not), redrawn every 3 s. On PostgreSQL, 1 M
#: runs of which 6,667 wait for an approval: 3-18 ms for 1,000, 8-48 ms for all.
APPROVALS_COUNTED = 1_000


def inbox_count(total: int, before: int, shown: int, *, more: bool) -> dict[str, str]:
    """The inbox's words of how many approvals wait (``total``, as the store counted
    them, at most ``APPROVALS_COUNTED``) and, on a page of several, which of them it
    shows (``before`` it, ``shown`` on it): ``{"waiting": "62 waiting", "showing":
    "Showing 26-50 of 62"}``. The heading said "Approvals" alone, and a page of 50
    said nothing of the other 12 or the 5,000 behind it. (The count and the page are
    two reads: an answer between them may make them differ by one, so the total is
    at least what the page accounts for.)"""
    capped = total >= APPROVALS_COUNTED
    total = max(total, before + shown)
    of = f"{APPROVALS_COUNTED:,}+" if capped else f"{total:,}"
    words = {"waiting": f"{of} waiting" if total else "", "showing": ""}
    if shown and (more or before):
        if capped and before >= APPROVALS_COUNTED:
            words["showing"] = f"Showing {shown:,} past the oldest {APPROVALS_COUNTED:,}"
        else:
            span = f"{before + 1:,}" + (f"\N{EN DASH}{before + shown:,}" if shown > 1 else "")
            words["showing"] = f"Showing {span} of {of}"
    return words


async def _approvals_context(request: Request) -> dict[str, Any]:
    """The inbox's page: the oldest runs' ``APPROVALS_SHOWN`` approvals after the
    ``cursor`` query parameter, and the link to the next page (``more``). A run that
    waits for an approval this server cannot read (its live status encrypted with a key
    it lacks) is one of them (``unreadable``), said so: ``pending_approvals_page``
    skips it, and the inbox said "Nothing waits for a person right now"."""
    from tether.ai._approvals import approval_waits_page, pending_of

    cursor = request.query_params.get("cursor")
    app: App = request.app.state.tether

    def take(r: Any, answered: bool) -> tuple[Any, Any, Any] | None:
        if answered:
            # A worker takes the answer up next, and a second answer is refused. It
            # stays ``waiting``, its status naming the approval, until a worker claims
            # it: the inbox an answer led back to showed it still, with its buttons.
            # (One whose watch timed out, unanswered, is claimable too, and listed: a
            # person may answer it still.)
            return None
        pending = pending_of(app, r)
        marker = None if pending is not None else sealed_approval(app, r)
        return None if pending is None and marker is None else (pending, marker, r)

    after = page_cursor(cursor, "the oldest approvals")
    shown, nxt = await approval_waits_page(app, take, limit=APPROVALS_SHOWN, after=after)
    found = [pending for pending, _, _ in shown if pending is not None]
    unreadable = [{"run_id": r.run_id, "workflow": r.workflow, "marker": marker}
                  for _, marker, r in shown if marker is not None]
    total, before = await app.store.run_count_awaiting_approval(
        now=app.clock.now(), limit=APPROVALS_COUNTED, upto=after)
    return {"approvals": found, "unreadable": unreadable, "paged": bool(cursor),
            "count": inbox_count(total, before, len(shown), more=nxt is not None),
            "query": urlencode({"cursor": cursor}) if cursor else "",
            "more": "/approvals?" + urlencode({"cursor": encode_cursor(*nxt)}) if nxt else None}


# -- actions ----------------------------------------------------------------------------


async def approval_action(request: Request) -> Response:
    values = await _form(request)
    run_id = request.path_params["run_id"]
    decision = values.get("decision")
    app: App = request.app.state.tether
    if decision == "":
        # Enter pressed in the note: the form's first button decides nothing. The page
        # asks to choose, the note kept (with Approve first, Enter approved it).
        return await _choose(request, app, run_id, values)
    if decision not in ("approve", "reject"):
        raise ApiError(400, "bad_request", "decision must be approve or reject")
    note = (values.get("note") or "").strip()[:4000] or None
    # The approval the page showed (its id, and when it was asked: an id may come again
    # in a later generation of the run): only that one is answered. A page left open
    # while another person answered it, and the agent then asked for another, answered
    # the new one, which nobody had seen, with this page's decision.
    shown_id = values.get("approval_id") or None
    try:
        if shown_id is not None:
            await _same_approval(app, run_id, shown_id, values.get("since") or None)
        done = await answer(app, run_id, decision == "approve", note, shown_id)
    except ApiError as exc:
        if exc.status != 409:
            raise
        raise ApiError(409, exc.code, await _not_sent(
            app, run_id, decision == "approve", note, shown_id, exc.message)) from None
    tool = done["approval"].get("tool") or "the call"
    said = (f"Approved {tool} for run {mark_id(run_id)}: the run goes on."
            if decision == "approve" else f"Rejected {tool} for run {mark_id(run_id)}"
            + (": the model reads your note." if note else "."))
    return _back(request, values, f"/runs/{path_segment(run_id)}", said)


async def _choose(request: Request, app: App, run_id: str,
                  values: dict[str, str]) -> Response:
    """The page that asks to approve or reject (nothing sent), the posted note and the
    approval the form showed kept in its form."""
    from tether.ai import pending_approval

    try:
        pending = await pending_approval(app, run_id)
    except RunNotFound:
        raise run_not_found(run_id) from None
    if pending is not None and values.get("approval_id") not in (None, pending.approval_id):
        pending = None  # (another approval now: posting the form says so)
    next_ = values.get("next") or ""
    return render(request, "decide.html", page="approvals", run_id=run_id, pending=pending,
                  note=(values.get("note") or "")[:4000],
                  approval_id=values.get("approval_id", ""), since=values.get("since", ""),
                  next=next_ if next_.startswith("/") and not next_.startswith("//")
                  and "\\" not in next_ else f"/runs/{path_segment(run_id)}")


async def _same_approval(app: App, run_id: str, shown_id: str, since: str | None) -> None:
    """Refuse (409) when the approval ``run_id`` waits for is not the one a page showed
    (``shown_id``, asked at ``since``): same id, asked at another time, is another
    generation's."""
    from tether.ai import pending_approval

    try:
        pending = await pending_approval(app, run_id)
    except RunNotFound:
        raise run_not_found(run_id) from None
    try:
        asked = float(since) if since is not None else None
    except ValueError:
        asked = None
    if pending is not None and pending.approval_id == shown_id and asked is not None \
            and asked != pending.since:
        raise ApiError(409, "no_pending_approval",
                       f"the approval shown ({pending.tool}) was answered already; the run "
                       "asked again since, which this answer was not meant for")


async def _not_sent(app: App, run_id: str, approved: bool, note: str | None,
                    shown_id: str | None, why: str) -> str:
    """What the error page of a refused approval form says: that the person's decision
    (and note) was not recorded, why, and the answer that was taken, when it can be
    read (the first answer counts)."""
    from tether._codec import SLOT_SIGNAL
    from tether.ai._approvals import approval_key

    mine = "approval" if approved else "rejection"
    said = f"Not sent: your {mine}" + (f" (note: {short(note, 200)})" if note else "") + \
        f" was not recorded. {why[:1].upper()}{why[1:]}."
    if shown_id is None:
        return said
    with contextlib.suppress(Exception):  # (an answer that cannot be read is not named)
        run = await app.store.run_get(run_id)
        if run is None or run.erased_at is not None:
            return said
        sent = await app.store.signal_find(
            run_id=run_id, idempotency_key=approval_key(shown_id, run.generation))
        if sent is None or sent.payload is None:
            return said
        first = app.codec.for_run(run_id).decode(sent.payload, None, SLOT_SIGNAL)
        if isinstance(first, dict) and isinstance(first.get("approved"), bool):
            how = "approved" if first["approved"] else "rejected"
            note_ = first.get("note")
            said += (f" It was {how} first" + (f", with the note: {short(str(note_), 200)}"
                                                if note_ else "")
                     + ". The first answer counts.")
    return said


async def cancel_action(request: Request) -> Response:
    values = await _form(request)
    run_id = request.path_params["run_id"]
    app: App = request.app.state.tether
    reason = (values.get("reason") or "").strip() or None
    try:
        status = await app.cancel(run_id, reason=reason)
    except RunNotFound:
        raise run_not_found(run_id) from None
    except ConfigError as exc:  # (a reason too long, or of control characters)
        raise ApiError(400, "bad_request", str(exc)) from None
    said = (f"Run {mark_id(run_id)} is cancelled." if status == "cancelled"
            else f"Run {mark_id(run_id)} had ended already ({status})."
            if status in ENDED_VALUES else _asked_to_cancel(run_id, _asked_at(app)))
    return _back(request, values, f"/runs/{path_segment(run_id)}", said)


async def signal_action(request: Request) -> Response:
    values = await _form(request)
    run_id = request.path_params["run_id"]
    name = (values.get("name") or "").strip()
    if not name:  # (App.signal holds it to the engine's rule: InvalidName is a 400)
        raise ApiError(400, "bad_request", "the signal needs a name")
    text = (values.get("data") or "").strip()
    try:
        data = parse_json(text) if text else None
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the data is not valid JSON: {exc}") from None
    refuse_lone_surrogates(data, "data")
    app: App = request.app.state.tether
    notes = await _signal_notes(app, run_id, name, data)  # (read before the send)
    try:
        await app.signal(run_id, name, data)
    except RunNotFound:
        raise run_not_found(run_id) from None
    except SignalError as exc:  # (the run has ended)
        raise ApiError(409, "conflict", str(exc), title="This run has already ended") from None
    except PayloadError as exc:  # (as the API answers it: 413 too large, else 400)
        raise payload_error(exc) from None
    return _back(request, values, f"/runs/{path_segment(run_id)}",
                 f"Sent signal {name!r} to run {mark_id(run_id)}." + "".join(
                     f" Note: {n}." for n in notes))


async def _signal_notes(app: App, run_id: str, name: str, data: Any) -> list[str]:
    """What the signal form's note adds of a send that does not do what it seems to, as
    ``tether signal`` warns and the API's answer's ``warnings`` say: an ``approval``
    without ``"approved"`` (no answer: the run waits on), a ``budget`` signal that gives
    no limit or one that cannot let the run go on, and a signal of another name than
    the one the run waits for (kept until a wait of its name takes it: a typo?). The
    note said "Sent signal ..." alone, and the approver believed the run answered.
    Read before the send: the signal wakes the run, which then waits no more."""
    from tether.ai._approvals import no_answer_warning, unanswered_by
    from tether.ai._budget import falls_short, no_raise_warning, raises_nothing

    notes = []
    unanswered = await unanswered_by(app, run_id, name, data)
    if unanswered is not None:
        notes.append(no_answer_warning(run_id, unanswered, name,
                                       "Approve or Reject on this page"))
    if await raises_nothing(app, run_id, name, data):
        notes.append(no_raise_warning(run_id, name, 'data {"usd": X, "tokens": N} '
                                                    "(either or both)"))
    short = await falls_short(app, run_id, name, data)
    if short is not None:
        notes.append(f"run {shown(run_id)} takes these limits and waits on: {short}")
    run = await app.store.run_get(run_id)
    awaited = (run.waiting_for or "") if run is not None else ""
    if run is not None and run.status == "waiting" and awaited.startswith("signal ") \
            and awaited != f"signal {name}" and not notes:
        notes.append(f"run {shown(run_id)} waits for signal "
                     f"{shown(awaited.removeprefix('signal '))}, not {shown(name)}: this "
                     "signal is kept until a wait of its name takes it (a typo?)")
    return notes


async def retry_action(request: Request) -> Response:
    values = await _form(request)
    run_id = request.path_params["run_id"]
    app: App = request.app.state.tether
    doc = await retry(app, run_id)
    # (What was asked and when: a run retried is queued for a moment, then runs and
    # ends, and the head redrawn live says so under the note; with the answer's
    # warnings, as the API gives them: no worker has its workflow, its version dropped.)
    warnings = "".join(f" Note: {w}." for w in doc.get("warnings", []))
    return _back(request, values, f"/runs/{path_segment(run_id)}",
                 f"Asked at {_asked_at(app)} to run {mark_id(run_id)} again: it was "
                 f"queued, its recorded steps kept.{warnings}")


async def fork_action(request: Request) -> Response:
    """Fork at the posted position; on to the new run's page."""
    values = await _form(request)
    run_id = request.path_params["run_id"]
    text = (values.get("at") or "").strip()
    try:
        at = int(text)
    except ValueError:
        raise ApiError(422, "bad_position",
                       f"the position must be a whole number, not {shown(text)}") from None
    fork_position(at)
    raw = (values.get("input") or "").strip()
    args: list[Any] | None = None
    if raw:
        try:
            args = parse_json(raw)
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"the input is not valid JSON: {exc}") from None
        refuse_lone_surrogates(args, "input")
        if not isinstance(args, list):
            raise ApiError(400, "bad_request",
                           "the input must be a JSON array of positional arguments")
    new_id = (values.get("run_id") or "").strip() or None
    if new_id is not None:
        field_name(new_id, "run_id", required=True)
    doc, _ = await fork(request.app.state.tether, run_id, at, args, new_id)
    if doc.get("warnings"):
        # (the answer's warnings, as the API gives them: no worker has its workflow,
        # its source's version left behind; on to the new run's page, which says them)
        notes = "".join(f" Note: {w}." for w in doc["warnings"])
        return _back(request, {}, f"/runs/{path_segment(doc['run_id'])}",
                     f"Forked {mark_id(run_id)} at position {at} as "
                     f"{mark_id(doc['run_id'])}.{notes}")
    return _redirect(request, f"/runs/{path_segment(doc['run_id'])}")


async def schedule_ui_action(request: Request) -> Response:
    values = await _form(request)
    name = request.path_params["name"]
    action = request.path_params["action"]
    if action not in SCHEDULE_ACTIONS:
        raise ApiError(404, "not_found", f"no schedule action {shown(action)}")
    answer_, _ = await schedule_action(request.app.state.tether, name, action)
    if action == "trigger":
        # (the new run's page says where it came from: its head names no schedule)
        return _back(request, {}, f"/runs/{path_segment(answer_['run_id'])}",
                     f"Started run {mark_id(answer_['run_id'])} now, for schedule "
                     f"{mark_id(name)}; the schedule's next tick is kept.")
    return _back(request, values, "/schedules", f"Schedule {mark_id(name)} is "
                 f"{'paused' if action == 'pause' else 'active again'}.")


# -- login --------------------------------------------------------------------------------


#: The pages a login leads to when none is named: its address names none of them.
_LANDING = ("/", "/runs")


def login_query(scope: Any) -> str:
    """The query of the login form's address for a page asked for without a session:
    ``?next=`` that page (its path within the application, as sent, and its query), so
    that logging in leads back to it; none for the runs, where a login leads anyway."""
    root = root_of(scope).encode()
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    page = raw[len(root):] if root and raw.startswith(root + b"/") else raw
    query: bytes = scope.get("query_string", b"")
    if not (page + query).isascii():
        return ""
    return _login_next(page.decode() + ("?" + query.decode() if query else ""))


def login_query_back(scope: Any, referer: str) -> str:
    """``login_query`` of the page a form was posted from, or a fragment asked for, by
    its ``Referer`` (sent by the browser within this server: ``Referrer-Policy:
    same-origin``): a login from the page that says the session ended leads back to
    it, not to the runs. "" for a referer of another host or outside the root path."""
    parts = urlsplit(referer)
    host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
    root = root_of(scope)
    if not parts.path or parts.netloc != host or (root and not parts.path.startswith(root + "/")):
        return ""
    page = parts.path[len(root):] + ("?" + parts.query if parts.query else "")
    return _login_next(page)


def _login_next(page: str) -> str:
    """``?next=page`` for the login form's address, or "" for a landing page (a login
    leads there anyway) or an address a login must not lead to (``_next_page``)."""
    if page in _LANDING or _next_page(page) is None:
        return ""
    return "?" + urlencode({"next": page})


def _next_page(value: object) -> str | None:
    """``value`` if it is the address of a page of this server for a login to lead to
    (``/runs/a%2Fb?timeline=all``: a path within the application, and its query), else
    None: never another site's (``//evil.example``, ``/\\evil.example``, ``https:``),
    a text a header cannot carry, nor the login form itself."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 8000:
        return None
    if value.startswith("//") or not value.isascii() or any(
            c <= " " or c in "\\\x7f" for c in value):
        return None
    if value.split("?")[0] in ("/login", "/logout"):
        return None
    return value


async def login_page(request: Request) -> Response:
    return render(request, "login.html", page="login", failed=False,
                  next_page=_next_page(request.query_params.get("next")))


async def login(request: Request) -> Response:
    form = await request.form()
    token = form.get("token")
    sent = form.get("csrf")
    next_page = _next_page(form.get("next"))
    if not csrf_ok(sent if isinstance(sent, str) else None, request.cookies.get(CSRF_COOKIE)):
        return render(request, "login.html", status=403, page="login", failed=True,
                      reason="the form is stale: try again", next_page=next_page)
    tokens = request.app.state.tokens
    # Stripped as the token file's entries and a bearer header's token are: a token
    # pasted with the space or line end around it copied too is that token.
    token = token.strip() if isinstance(token, str) else ""
    who = tokens.by_token(token) if token else None
    if who is None:
        return render(request, "login.html", status=401, page="login", failed=True,
                      reason="unknown token", next_page=next_page)
    response = _redirect(request, next_page or "/runs")
    response.set_cookie(SESSION_COOKIE, digest(token), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=_cookie_path(request),
                        max_age=14 * 86400)
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    sent = form.get("csrf")
    if not csrf_ok(sent if isinstance(sent, str) else None, request.cookies.get(CSRF_COOKIE)):
        raise ApiError(403, "csrf", "the form is stale: reload the page and try again")
    response = _redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


# ``{run_id:path}``: run ids may contain "/"; the routes with a suffix come first.
routes = [
    Route("/", home, methods=["GET"]),
    Route("/runs", runs_page, methods=["GET"]),
    Route("/runs/{run_id:path}", run_page, methods=["GET"]),
    Route("/approvals", approvals_page, methods=["GET"]),
    Route("/schedules", schedules_page, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/ui/runs", runs_fragment, methods=["GET"]),
    Route("/ui/approvals", approvals_fragment, methods=["GET"]),
    Route("/ui/runs/{run_id:path}/approval", approval_action, methods=["POST"]),
    Route("/ui/runs/{run_id:path}/cancel", cancel_action, methods=["POST"]),
    Route("/ui/runs/{run_id:path}/signal", signal_action, methods=["POST"]),
    Route("/ui/runs/{run_id:path}/retry", retry_action, methods=["POST"]),
    Route("/ui/runs/{run_id:path}/fork", fork_action, methods=["POST"]),
    Route("/ui/schedules/{name:path}/{action}", schedule_ui_action, methods=["POST"]),
    Route("/ui/runs/{run_id:path}", run_fragment, methods=["GET"]),
]
