"""Runs over their whole life, engine side: continue-as-new, cron schedules and the
retention policy. (Retry and fork live on ``App``; the store side is
``tether.store._lifecycle``.)

Schedules: each tick of a schedule starts exactly one run, whose id is derived from
the schedule's name and the tick's time, so that any number of workers may try to
start it: ``run_insert`` is idempotent on the id, and the compare-and-set on the
schedule's next tick (``schedule_advance``) lets one of them move the schedule on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether import _observe
from tether._codec import SLOT_INPUT
from tether._replay import Continue, current_run, current_step
from tether._types import ENDED_VALUES, RunRecord, RunStatus, check_name
from tether.errors import ConfigError, OutsideRun
from tether.store._lifecycle import ScheduleRecord

if TYPE_CHECKING:
    from tether._app import App
    from tether.store import Store

log = logging.getLogger("tether.worker")

# -- durations and retention -------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from a number, a ``timedelta`` or text such as ``90s``, ``15m``, ``12h``,
    ``30d``, ``2w``. Raises ConfigError for anything else (or a negative value). Zero
    with a minus sign (``-0s``, ``-0``, ``-0.0``) is zero, not negative: ``0.0``."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(-?)\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
        # ('-1d' said "use a number of seconds or ..."; '-0s' is 0, as -0.0 is)
        if m is not None and m.group(1) and float(m.group(2)) != 0:
            raise ConfigError(f"{what} must not be negative, got {value!r}")
        if m is None:
            raise ConfigError(f"{what} {value!r}: use a number of seconds or 90s, 15m, "
                              "12h, 30d, 2w")
        seconds = float(m.group(2)) * _UNITS[m.group(3) or "s"]
    else:
        raise ConfigError(f"{what} must be seconds, a timedelta or text like '30d', "
                          f"not {type(value).__name__}")
    if not math.isfinite(seconds):
        # (App(retention=math.inf) made every tasks/get of an ended MCP task fail on its
        # ttlMs, an opaque internal error; NaN purged nothing, silently)
        raise ConfigError(f"{what} must be a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise ConfigError(f"{what} must not be negative, got {value!r}")
    return seconds + 0.0  # (-0.0 is 0.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Retention:
    """Finished runs of ``statuses`` older than ``older_than`` seconds are purged.

    ``older_than`` and ``every`` take what ``App(retention=)`` takes (seconds, a
    ``timedelta``, text such as ``"30d"``) and hold seconds. Given to
    ``App(retention=)`` (the app's policy) or ``@app.workflow(retention=)`` (one
    workflow's, which wins for its runs; there ``"forever"`` keeps them).

    Raises:
        ConfigError: a duration that is negative or not finite, ``every`` of 0, or a
            status that is not an ended one (``completed``, ``failed``, ``cancelled``).
    """

    older_than: float
    statuses: tuple[str, ...] = ENDED_VALUES
    #: Seconds between a worker's purges.
    every: float = 300.0

    def __post_init__(self) -> None:
        # Checked as App(retention="30d") and `tether purge` check theirs: built by hand,
        # every=0 purged in a loop without pause, a status that has not ended (blocked: a
        # run waiting for its operator) was purged, and older_than=inf broke ttlMs.
        # Durations as App(retention=) takes them ("30d" stayed text, and the worker's
        # purge failed on it), kept as seconds.
        older_than = parse_duration(self.older_than, "Retention.older_than")
        every = parse_duration(self.every, "Retention.every")
        if every <= 0:
            raise ConfigError(f"Retention.every must be more than 0 seconds, not {every!r}")
        if isinstance(self.statuses, str):
            raise ConfigError("Retention.statuses must be a tuple of statuses, not a string")
        statuses = tuple(self.statuses)
        if not statuses or any(s not in ENDED_VALUES for s in statuses):
            raise ConfigError(f"Retention.statuses {statuses!r}: retention purges ended "
                              f"runs only ({', '.join(ENDED_VALUES)})")
        object.__setattr__(self, "older_than", older_than)
        object.__setattr__(self, "every", every)
        object.__setattr__(self, "statuses", statuses)


def parse_retention(value: Any) -> Retention | None:
    """``App(retention=...)``: None, a ``Retention``, or a duration (all end states)."""
    if value is None or isinstance(value, Retention):
        return value
    return Retention(older_than=parse_duration(value, "retention"))


#: ``@app.workflow(retention=FOREVER)``: this workflow's ended runs are never purged by
#: retention, whatever the app's policy (``tether purge`` still deletes them).
FOREVER = "forever"


def parse_workflow_retention(value: Any) -> Retention | str | None:
    """``@app.workflow(retention=...)``: None (the app's policy applies), ``"forever"``
    (never purged by retention), a ``Retention``, or a duration (all end states).

    Raises:
        ConfigError: anything else: ``True`` or ``False`` (say ``"forever"``), a bad
            duration.
    """
    if value is None or isinstance(value, Retention):
        return value
    if isinstance(value, str) and value.strip() == FOREVER:
        return FOREVER
    if isinstance(value, bool):
        # (retention=False reads as "keep nothing" as well as "no retention": neither
        # is guessed; "forever" says which)
        raise ConfigError(f"workflow retention {value!r}: give a duration, a "
                          "tether.Retention, 'forever' (never purged by retention) or "
                          "None (the app's policy)")
    try:
        return Retention(older_than=parse_duration(value, "workflow retention"))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (or 'forever': never purged by retention)") from None


@dataclasses.dataclass(frozen=True, slots=True)
class PurgePlan:
    """One purge a worker's retention loop makes: ``policy`` applied to the runs of
    ``workflows`` (None: every workflow's but ``exclude``'s)."""

    policy: Retention
    workflows: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


def retention_plans(app: App) -> list[PurgePlan]:
    """What an app's workers purge: each policy of its workflows' own (workflows of one
    policy together) for their runs, and the app's policy, if any, for every other run
    of the store (the workflows with a policy of their own, ``"forever"`` included,
    excluded). Empty: no retention loop."""
    own: dict[Retention, list[str]] = {}
    kept: list[str] = []
    for name, wdef in sorted(app.workflows().items()):
        if isinstance(wdef.retention, Retention):
            own.setdefault(wdef.retention, []).append(name)
            kept.append(name)
        elif wdef.retention == FOREVER:
            kept.append(name)
    plans = [PurgePlan(policy, tuple(names)) for policy, names in own.items()]
    if app.retention is not None:
        plans.append(PurgePlan(app.retention, None, tuple(kept)))
    return plans


def workflow_retention(app: App, workflow: str) -> Retention | None:
    """The policy the runs of ``workflow`` are purged under by ``app``'s workers: its
    own (``@app.workflow(retention=)``), else the app's; None: never purged by them."""
    wdef = app.workflows().get(workflow)
    own = wdef.retention if wdef is not None else None
    if own == FOREVER:
        return None
    if isinstance(own, Retention):
        return own
    return app.retention


def parse_statuses(text: str | None) -> list[str]:
    """``completed,failed`` -> the list; only final statuses may be purged."""
    allowed = ENDED_VALUES
    if text is None:
        # (only an absent --status: `--status ""`, an empty variable in a script, named
        # no status and purged every ended run)
        return list(allowed)
    found = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in found if s not in allowed]
    if bad or not found:
        raise ConfigError(f"--status {text!r}: purge takes ended runs only "
                          f"({', '.join(allowed)})")
    return found


# -- continue as new ---------------------------------------------------------------------

def fork_past_end(run_id: str, last: int, at: int, name: str = "at") -> str:
    """The one line for a fork position past the end of run ``run_id``'s journal (whose
    last position is ``last``, -1 for none): its length and the furthest ``at``
    (``App.fork``'s ``ConfigError``, ``tether fork``'s exit 2, the API's 422)."""
    n = last + 1
    has = ("no journal entries" if n == 0 else
           f"a journal of {n} position{'s' if n != 1 else ''} (0..{last})")
    return f"run {run_id!r} has {has}; {name} {at} is past its end (at most {n})"


class RunIdTaken(ConfigError):
    """A new run's id is held by another run than the one asked for: a start's by a run
    of another workflow, a fork's by a run that is not the same fork (of the same run,
    at the same position, with the same input). ``App.start``'s and ``App.fork``'s
    ``ConfigError``, ``tether start``'s and ``tether fork``'s exit 2, the API's 409."""


def fork_id_holder(holder: RunRecord, new_id: str, run_id: str, at: int,
                   same_input: bool) -> str | None:
    """None if run ``holder`` (whose id is ``new_id``) is the fork of ``run_id`` at
    ``at`` that was asked for again, with the same input (the fork is then idempotent,
    as a start with ``--id`` is); else the one line that says which run holds the id."""
    if holder.forked_from == run_id and holder.forked_at == at:
        if same_input:
            return None
        what = (f"the fork of run {run_id!r} at position {at}, erased since"
                if holder.erased_at is not None else
                f"the fork of run {run_id!r} at position {at} with another input")
    elif holder.forked_from is not None:
        what = (f"a fork of run {holder.forked_from!r} at position {holder.forked_at} "
                f"(workflow {holder.workflow!r})")
    else:
        what = f"a run of workflow {holder.workflow!r} that is no fork"
    return f"run id {new_id!r} is already used by {what}; choose another id"


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run's journal and continue the same run (same id) with a fresh, empty
    journal, calling the workflow again with these arguments.

    A long-lived workflow (an agent session that receives messages as signals for
    months) calls it every so often with the state it needs, so that its journal and
    its replay stay short. Signals not yet taken stay pending for the next generation;
    ``tether show`` shows every generation as one history.

    Raises:
        OutsideRun: called outside a workflow, or in a step's body (where the step's
            attempt fails with it, as with every other operation of the run).
        WorkflowArgumentError: arguments the workflow's signature cannot take (a
            required one missing, an unknown keyword, one too many), as ``App.start``.
    """
    ctx = current_run.get()
    if ctx is None:
        raise OutsideRun("tether.continue_as_new()")
    if current_step.get() is not None:
        # (it passed through the step, whose outcome was never journaled, and continued
        # the run as new with the step's arguments for its workflow)
        raise OutsideRun("tether.continue_as_new()", "a workflow's own code (not in a step)")
    ctx.check_running()
    # (as App.start: the next generation's code would fail with a TypeError at once)
    ctx.workflow.check_arguments(args, kwargs)
    payload: dict[str, Any] = {"args": list(args)}
    if kwargs:
        payload["kwargs"] = kwargs
    text = ctx.codec.encode(payload, f"input of workflow {ctx.workflow.name!r}", SLOT_INPUT)
    raise ctx.halt(Continue(text))


# -- cron ----------------------------------------------------------------------------------

#: The names each field takes (as cron: month names in the month field, weekday names in
#: the weekday field, none elsewhere: ``0 9 * mon *`` is a mistake, not January).
_NAMES: dict[str, dict[str, int]] = {
    "month": {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
              "sep": 9, "oct": 10, "nov": 11, "dec": 12},
    "day-of-week": {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6},
}
#: The most days each month has (February: in a leap year).
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30,
               12: 31}
_MONTH_NAMES = {1: "January", 2: "February", 3: "March", 4: "April", 5: "May", 6: "June",
                7: "July", 8: "August", 9: "September", 10: "October", 11: "November",
                12: "December"}
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}


def _field(text: str, low: int, high: int, what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step, stepped = 1, "/" in part
        if stepped:
            part, step_text = part.split("/", 1)
            if not _digits(step_text) or int(step_text) < 1:
                raise ValueError(f"bad step {step_text!r} in the {what} field")
            step = int(step_text)
        if part == "*":
            a, b = low, high
        elif "-" in part:
            a_text, b_text = part.split("-", 1)
            a, b = _value(a_text, what), _value(b_text, what)
        else:
            a = _value(part, what)
            b = high if stepped else a  # ("5/15" is 5-59/15, and "5/1" 5-59)
        if what == "day-of-week" and b == 7:
            if (7 - a) % step == 0:
                values.add(0)  # 7 is Sunday too, when the step lands on it (not 2-7/2)
            b = 6 if a <= 6 else 7
        if not (low <= a <= high and low <= b <= high and a <= b):
            raise ValueError(f"{part!r} is outside {low}-{high} in the {what} field")
        values.update(range(a, b + 1, step))
    return frozenset(v % 7 if what == "day-of-week" else v for v in values)


def _value(text: str, what: str) -> int:
    names = _NAMES.get(what, {})
    key = text.lower()
    if key in names:
        return names[key]
    if not _digits(text):
        for field, named in _NAMES.items():
            if key in named and field != what:
                kind = "weekday" if field == "day-of-week" else field
                raise ValueError(f"{text!r} is a {kind} name, which the {what} field does "
                                 "not take (the fields: [second] minute hour day-of-month "
                                 "month day-of-week)")
        raise ValueError(f"{text!r} is not a number in the {what} field")
    return int(text)


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes other scripts' digits (``٣``, which
    ``int`` reads as 3) and superscripts (``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


@dataclasses.dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression: ``minute hour day-of-month month day-of-week``, or six
    fields with seconds first (``*/10 * * * * *`` is every ten seconds). Fields take
    ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n``, ``a-b/n`` or ``a/n``
    (``a`` to the field's end); month
    and weekday names (``jan``, ``mon``); ``@hourly``, ``@daily``, ``@weekly``,
    ``@monthly``, ``@yearly``. When both day fields are restricted, a day matching
    either runs; a day field that starts with ``*`` (``*``, ``*/2``) is unrestricted,
    and then a day runs only if it matches both (as in Vixie cron and cronie:
    ``0 0 */2 * mon`` is an odd day that is a Monday)."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: The day-of-month (``any_day``) or day-of-week field starts with ``*``: then
    #: the two day fields are ANDed, else ORed (cronie's DOM_STAR and DOW_STAR).
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        if not isinstance(text, str):
            raise ConfigError(f"a cron expression must be text, not {type(text).__name__}")
        expr = _MACROS.get(text.strip().lower(), text.strip())
        parts = expr.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ConfigError(f"cron {text!r}: expected 5 fields (minute hour day month "
                              "weekday) or 6 with seconds first")
        try:
            cron = cls(
                text=text, seconds=_field(parts[0], 0, 59, "second"),
                minutes=_field(parts[1], 0, 59, "minute"), hours=_field(parts[2], 0, 23, "hour"),
                days=_field(parts[3], 1, 31, "day-of-month"),
                months=_field(parts[4], 1, 12, "month"),
                weekdays=_field(parts[5], 0, 7, "day-of-week"),
                any_day=parts[3].startswith("*"), any_weekday=parts[5].startswith("*"),
            )
        except ValueError as exc:
            raise ConfigError(f"cron {text!r}: {exc}") from None
        if not cron.any_day and cron.any_weekday and not any(
                day <= _MONTH_DAYS[month] for month in cron.months for day in cron.days):
            # (checked here, where it is declared: found by ``next_after`` in a worker's
            # start, it stopped the worker, every other workflow's runs with it)
            months = ", ".join(_MONTH_NAMES[m] for m in sorted(cron.months))
            raise ConfigError(f"cron {text!r}: no day it names exists (day "
                              f"{', '.join(str(d) for d in sorted(cron.days))} of "
                              f"{months}): it would never tick")
        return cron

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: float, zone: dt.tzinfo) -> float:
        """The first tick strictly after ``after`` (epoch seconds), in ``zone``'s
        local time. In an hour the clocks go back over, a cron whose hour field is
        ``*`` ticks in both passes of it (every 30 minutes stays every 30 minutes), one
        at fixed hours in the first only (as Vixie cron does); a wall time the clocks
        skip ticks at the instant it maps to (an hour later). Raises ConfigError if
        there is none within five years."""
        if _steady(after, zone):
            # No change of the clocks near ``after``: the first wall time after it is the
            # tick, unless the clocks change near that one (then the search below). A
            # worker calls this once per missed tick, on its event loop: the search,
            # over three hours of wall times, took 30 ms for a cron of every second.
            start = (dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None,
                                                                     microsecond=0)
                     + dt.timedelta(seconds=1))
            for local in self._wall_times(start):
                ts = local.replace(tzinfo=zone).timestamp()
                if ts > after:
                    if _steady(ts, zone):
                        return ts
                    break
            else:
                raise ConfigError(f"cron {self.text!r} has no tick within five years")
        return self._next_around_change(after, zone)

    def _next_around_change(self, after: float, zone: dt.tzinfo) -> float:
        """``next_after`` where the clocks change near ``after`` or near its answer."""
        every_hour = len(self.hours) == 24
        # From an hour before: the second pass of a repeated hour comes later in real
        # time than wall times just after it.
        lower = (dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None, microsecond=0)
                 - dt.timedelta(hours=1))
        best: float | None = None
        best_local = lower
        for local in self._wall_times(lower):
            if best is not None and local > best_local + dt.timedelta(hours=2):
                break  # (wall times this far on are later in real time too)
            stamps = [local.replace(tzinfo=zone).timestamp()]
            if every_hour:
                second = local.replace(tzinfo=zone, fold=1).timestamp()
                if second != stamps[0] and dt.datetime.fromtimestamp(second, zone).replace(
                        tzinfo=None) == local:  # repeated, not skipped
                    stamps.append(second)
            for ts in stamps:
                if ts > after and (best is None or ts < best):
                    best, best_local = ts, local
        if best is None:
            raise ConfigError(f"cron {self.text!r} has no tick within five years")
        return best

    def _wall_times(self, lower: dt.datetime) -> Iterator[dt.datetime]:
        """The wall times the expression names, from ``lower`` on, in order, for five
        years."""
        hours, minutes, seconds = sorted(self.hours), sorted(self.minutes), sorted(self.seconds)
        day = lower.date()
        for _ in range(366 * 5):
            if self._day_matches(day):
                first = day == lower.date()
                for h in hours:
                    if first and h < lower.hour:
                        continue
                    # The wall times of ``lower``'s own hour and minute before it are
                    # skipped unbuilt: built and compared, a cron of every second cost
                    # up to 3,600 datetimes a tick (an hour's catch-up: 1.2 s of CPU on
                    # the worker's event loop; ``ticks_up_to`` of 1,000: 2 s a tick).
                    same_hour = first and h == lower.hour
                    for m in minutes:
                        if same_hour and m < lower.minute:
                            continue
                        same_minute = same_hour and m == lower.minute
                        for sec in seconds:
                            if same_minute and sec < lower.second:
                                continue
                            local = dt.datetime(day.year, day.month, day.day, h, m, sec)
                            if local >= lower:
                                yield local
            day += dt.timedelta(days=1)


def _steady(at: float, zone: dt.tzinfo) -> bool:
    """Whether ``zone``'s UTC offset is the same three hours before and after ``at``
    (no change of the clocks near it)."""
    return (dt.datetime.fromtimestamp(at - 10800.0, zone).utcoffset()
            == dt.datetime.fromtimestamp(at + 10800.0, zone).utcoffset())


#: Seconds past its next tick after which an active schedule's tick is shown as
#: overdue (``tether schedules``, the schedules page): a worker serving its workflow
#: starts a due tick within about 5 s (its schedule loop), so a tick a minute late says
#: that no such worker is running (or none reaches the store).
OVERDUE_AFTER = 60.0


def tick_overdue(paused: bool, next_tick: float | None, now: float) -> bool:
    """Whether an active schedule's next tick is past by more than ``OVERDUE_AFTER``."""
    return not paused and next_tick is not None and next_tick < now - OVERDUE_AFTER


def zone_of(name: str) -> dt.tzinfo:
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r} (use an IANA name such as "
                          "'Europe/Paris' or 'UTC')") from None


# -- schedules ---------------------------------------------------------------------------

OVERLAP = ("skip", "allow", "cancel_previous")
CATCHUP = ("latest", "skip", "all")


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule declared in code (``@app.schedule`` / ``app.schedule``)."""

    name: str
    workflow: str
    queue: str
    cron: Cron
    timezone: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: A tick (or batch of caught-up ticks) while a run from before it has not ended:
    #: skip it, allow both, or cancel the old. A batch's runs never overlap each other.
    overlap: str = "skip"
    #: Ticks missed while no worker ran: start the latest once, skip them, or start all
    #: (the last ``catchup_max``).
    catchup: str = "latest"
    catchup_max: int = 10


def make_spec(workflow: str, queue: str, cron: str, *, timezone: str = "UTC",
              name: str | None = None, args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None, overlap: str = "skip",
              catchup: str = "latest", catchup_max: int = 10) -> ScheduleSpec:
    """Validate a schedule's options (ConfigError names the bad one)."""
    parsed = Cron.parse(cron)
    zone_of(timezone)
    if overlap not in OVERLAP:
        raise ConfigError(f"overlap={overlap!r}: use one of {', '.join(OVERLAP)}")
    if catchup not in CATCHUP:
        raise ConfigError(f"catchup={catchup!r}: use one of {', '.join(CATCHUP)}")
    if isinstance(catchup_max, bool) or not isinstance(catchup_max, int) or catchup_max < 1:
        raise ConfigError(f"catchup_max must be an integer >= 1, not {catchup_max!r}")
    sname = check_name("schedule name", name or workflow)
    if "@" in sname:
        raise ConfigError(f"schedule name {sname!r}: must be non-empty, without '@'")
    return ScheduleSpec(name=sname, workflow=workflow, queue=queue, cron=parsed,
                        timezone=timezone, args=tuple(args), kwargs=dict(kwargs or {}),
                        overlap=overlap, catchup=catchup, catchup_max=catchup_max)


def tick_run_id(name: str, tick: float) -> str:
    """The run id of a schedule's tick: the same in every worker."""
    stamp = dt.datetime.fromtimestamp(tick, dt.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.microsecond:
        text += f".{stamp.microsecond:06d}"
    return f"{name}@{text}Z"


def to_record(app: App, spec: ScheduleSpec, now: float) -> ScheduleRecord:
    payload: dict[str, Any] = {"args": list(spec.args)}
    if spec.kwargs:
        payload["kwargs"] = spec.kwargs
    # Copied into each tick's run (``<name>@<time>``): bound to ``<name>@``, which the
    # codec accepts for those runs' inputs.
    text = app.codec.for_run(f"{spec.name}@").encode(
        payload, f"input of schedule {spec.name!r}", SLOT_INPUT)
    return ScheduleRecord(
        name=spec.name, workflow=spec.workflow, queue=spec.queue, cron=spec.cron.text,
        timezone=spec.timezone, input=text, overlap=spec.overlap, catchup=spec.catchup,
        catchup_max=spec.catchup_max,
        next_tick=spec.cron.next_after(now, zone_of(spec.timezone)),
        version=app.version, created_at=now, updated_at=now)


# -- the code versions of the live workers, for the schedules' ticks ----------------------

#: The store's key-value row that lists the code versions of the versioned workers
#: (``App(version=)``): ``{"versions": {VERSION: {"since": T, "workflows": [...]}},
#: "workers": {WORKER_ID: VERSION}}``. ``since`` is when a worker of the version came up
#: while none of it was listed: the newest version is the one that came up last.
VERSIONS_KEY = "tether.versions"


def _versions_doc(row: tuple[str, int] | None) -> dict[str, Any]:
    try:
        doc = json.loads(row[0]) if row is not None and row[0] else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    versions, workers = doc.get("versions"), doc.get("workers")
    return {"versions": versions if isinstance(versions, dict) else {},
            "workers": workers if isinstance(workers, dict) else {}}


async def _versions_update(store: Store, change: Callable[[dict[str, Any], set[str]], None],
                           now: float) -> None:
    """Apply ``change`` to the versions row (compare-and-set, tried again on a race),
    given the ids of the workers registered. Those are read after the row, on every
    try: read once before (as until 2026-12-08), a worker that registered and listed
    itself between that read and the row's was taken out again as "no longer
    registered", and its version counted no live worker until it restarted (of two
    versions whose workers started together, the other one was newest)."""
    for _ in range(20):
        row = await store.kv_get(key=VERSIONS_KEY)
        # (a worker in this row registered before it listed itself: it is in this list)
        registered = {w.worker_id for w in await store.worker_list()}
        doc = _versions_doc(row)
        change(doc, registered)
        # (versions no listed worker has are dropped: one that comes back is new again)
        kept = set(doc["workers"].values())
        doc["versions"] = {v: d for v, d in doc["versions"].items() if v in kept}
        if await store.kv_cas(key=VERSIONS_KEY, value=json.dumps(doc, sort_keys=True),
                              version=None if row is None else row[1], now=now):
            return
    log.warning("the code versions row (%s) kept changing under this worker: not updated",
                VERSIONS_KEY)


async def version_announce(store: Store, *, worker_id: str, version: str,
                           workflows: list[str], now: float) -> None:
    """List a starting worker of ``version`` (serving ``workflows``) in the versions
    row; a version none of whose workers was listed is new as of ``now``. Workers no
    longer registered (stopped, reaped) leave the row here."""
    def change(doc: dict[str, Any], registered: set[str]) -> None:
        doc["workers"] = {w: v for w, v in doc["workers"].items()
                          if w in registered and w != worker_id}
        listed = set(doc["workers"].values())
        old = doc["versions"].get(version)
        since = old.get("since") if isinstance(old, dict) and version in listed else None
        doc["workers"][worker_id] = version
        doc["versions"][version] = {"since": since if isinstance(since, (int, float))
                                    else now, "workflows": sorted(workflows)}

    await _versions_update(store, change, now)


async def version_retire(store: Store, *, worker_id: str, now: float) -> None:
    """Take a stopping worker out of the versions row."""
    def change(doc: dict[str, Any], registered: set[str]) -> None:
        doc["workers"].pop(worker_id, None)

    row = await store.kv_get(key=VERSIONS_KEY)
    if worker_id in _versions_doc(row)["workers"]:
        await _versions_update(store, change, now)


async def _live_doc(store: Store, now: float) -> tuple[dict[str, Any], dict[str, int]]:
    """The versions row and, by version, how many of its workers are live (heartbeat
    within ``WORKER_STALE``)."""
    from tether.store._port import WORKER_STALE

    row = await store.kv_get(key=VERSIONS_KEY)
    doc = _versions_doc(row)
    counts: dict[str, int] = {}
    if row is None:  # (no versioned worker ever started: no worker list to read)
        return doc, counts
    for w in await store.worker_list():
        version = doc["workers"].get(w.worker_id)
        if isinstance(version, str) and now - w.heartbeat_at <= WORKER_STALE:
            counts[version] = counts.get(version, 0) + 1
    return doc, counts


async def worker_versions(store: Store) -> dict[str, str]:
    """The code version each versioned worker runs (worker id -> version), from the
    versions row ``tether versions`` reads; a worker of no version is not in it."""
    row = await store.kv_get(key=VERSIONS_KEY)
    return {w: v for w, v in _versions_doc(row)["workers"].items() if isinstance(v, str)}


def _since(info: object) -> float | None:
    since = info.get("since") if isinstance(info, dict) else None
    return float(since) if isinstance(since, (int, float)) else None


async def live_versions(store: Store, now: float) -> dict[str, tuple[int, float | None]]:
    """The code versions that have live workers (heartbeat within ``WORKER_STALE``):
    for each, how many, and since when a worker of it has been up (``since`` in the
    versions row; the newest version is the one with the latest)."""
    doc, counts = await _live_doc(store, now)
    return {v: (n, _since(doc["versions"].get(v))) for v, n in counts.items()}


def newest_last(live: dict[str, tuple[int, float | None]]) -> list[str]:
    """The versions of ``live_versions``' answer, the newest (latest ``since``) last: the
    order ``tether show`` and the run page name them in."""
    return [v for v, _ in sorted(live.items(), key=lambda kv: (kv[1][1] or 0.0, kv[0]))]


async def live_unversioned_workers(store: Store, now: float) -> int:
    """How many live workers (heartbeat within ``WORKER_STALE``) run code of no version
    (an ``App`` without ``version=``): the workers of the runs of none."""
    from tether.store._port import WORKER_STALE

    row = await store.kv_get(key=VERSIONS_KEY)
    versioned = _versions_doc(row)["workers"]
    return sum(1 for w in await store.worker_list()
               if now - w.heartbeat_at <= WORKER_STALE
               and not isinstance(versioned.get(w.worker_id), str))


async def newest_live_version(store: Store, workflow: str, now: float) -> str | None:
    """The code version a new run of ``workflow`` that no app chose (a schedule's tick)
    goes to: of the versions with a live worker (heartbeat within ``WORKER_STALE``)
    that serves ``workflow``, the one that came up last; None when there is none (no
    versioned worker)."""
    doc, live = await _live_doc(store, now)
    best: tuple[float, str] | None = None
    for version in live:
        info = doc["versions"].get(version)
        since, served = _since(info), info.get("workflows") if isinstance(info, dict) else None
        if since is None or not isinstance(served, list) or workflow not in served:
            continue
        if best is None or (since, version) > best:
            best = (since, version)
    return None if best is None else best[1]


async def start_tick(app: App, store: Store, s: ScheduleRecord, run_id: str,
                     now: float, version: str | None = None) -> bool:
    """Start the run of one tick (idempotent on its id); True if this call created it.
    Its code version is ``version`` (the newest live version, ``newest_live_version``),
    else the app's, else for an app of none (``tether schedules trigger``) the
    schedule's, which the workers that run it gave it."""
    if version is None:
        version = app.version if app.version is not None else s.version
    run = RunRecord(run_id=run_id, workflow=s.workflow, queue=s.queue,
                    status=RunStatus.QUEUED, input=s.input, created_at=now,
                    updated_at=now, available_at=now, version=version)
    if _observe.observers:
        await _observe.runs_starting(store, [(run_id, s.workflow, s.queue)], now)
    _, created = await store.run_insert(run=run)
    return created


async def trigger_schedule(app: App, store: Store, s: ScheduleRecord, now: float) -> str:
    """Start a run of schedule ``s`` now, outside its ticks (``tether schedules trigger``,
    the HTTP API's trigger); its id (``NAME@manual-...``). The run becomes the
    schedule's last run, unless the schedule moved on meanwhile (a tick of a worker, a
    pause: the compare-and-set on its next tick fails, and that change stands)."""
    run_id = f"{s.name}@manual-{uuid.uuid4().hex[:12]}"
    version = None if app.version is not None else await newest_live_version(
        store, s.workflow, now)
    await start_tick(app, store, s, run_id, now, version)
    await store.schedule_advance(name=s.name, expected=s.next_tick, next_tick=s.next_tick,
                                 last_tick=None, last_run_id=run_id, now=now)
    return run_id


def tick_of_run_id(name: str, run_id: str) -> float | None:
    """The tick of a run id made by ``tick_run_id`` for schedule ``name``; None for
    another id (a manual trigger's ``NAME@manual-...``)."""
    prefix = f"{name}@"
    if not run_id.startswith(prefix) or not run_id.endswith("Z"):
        return None
    try:
        stamp = dt.datetime.fromisoformat(run_id[len(prefix):-1])
    except ValueError:
        return None
    return stamp.replace(tzinfo=dt.UTC).timestamp()


def ticks_up_to(cron: Cron, zone: dt.tzinfo, last: float, n: int) -> list[float]:
    """The ``n`` ticks of ``cron`` up to ``last`` included (fewer if the search, which
    looks back ever further, finds fewer within about 50 years), oldest first."""
    span = 60.0
    while True:
        ticks: list[float] = []
        t = last - span
        while (t := cron.next_after(t, zone)) <= last:
            ticks.append(t)
        if len(ticks) >= n or span > 50 * 366 * 86400.0:
            return ticks[-n:]
        span *= 4


async def in_flight(store: Store, s: ScheduleRecord, cron: Cron,
                    zone: dt.tzinfo) -> list[RunRecord]:
    """The runs of schedule ``s`` that overlap policies look at, those not ended: its last
    run (``last_run_id``: a tick's or a manual trigger's) and the runs of the batch of
    ticks that last started, i.e. the ``catchup_max`` ticks (with ``catchup="all"``; else
    one) up to the tick of the last tick-started run (or, after a manual trigger, up to
    ``last_tick``, the tick of the last batch that started: a skipped one leaves it).
    Ticks of that window older than the batch have a run only if it ended before the
    batch started (``skip``) or was asked to cancel (``cancel_previous``)."""
    ids: list[str] = []
    if s.last_run_id is not None:
        ids.append(s.last_run_id)
    anchor = None if s.last_run_id is None else tick_of_run_id(s.name, s.last_run_id)
    if anchor is None:
        anchor = s.last_tick
    if anchor is not None:
        n = s.catchup_max if s.catchup == "all" else 1
        try:
            ids += [tick_run_id(s.name, t) for t in ticks_up_to(cron, zone, anchor, n)]
        except ConfigError:
            pass
    if not ids:
        return []
    runs = await store.run_get_many(sorted(set(ids)))
    return sorted((r for r in runs if r.status not in ENDED_VALUES), key=lambda r: r.run_id)


async def tick_schedules(app: App, store: Store, workflows: set[str], now: float,
                         notify: Callable[[], None]) -> float | None:
    """Start the due ticks of the schedules of ``workflows``; return the next due time.

    The due ticks of one call are one batch (one tick, or with ``catchup="all"`` up to
    ``catchup_max`` missed ones). The overlap policy compares the batch with the runs
    still in flight from before it (``in_flight``), never the batch's runs with one
    another: ``allow`` starts the batch; ``skip`` starts none of it if a run is in
    flight, else all of it; ``cancel_previous`` asks each run in flight to cancel and
    starts all of it.

    Any number of workers may call this at once: each tick's run id is derived from the
    schedule and the tick, so a run is created once, and the compare-and-set on the
    next tick moves each schedule on once."""
    nxt: float | None = None
    for s in await store.schedule_list():
        if s.workflow not in workflows or s.paused or s.next_tick is None:
            continue
        if s.next_tick > now:
            nxt = s.next_tick if nxt is None else min(nxt, s.next_tick)
            continue
        try:
            cron, zone = Cron.parse(s.cron), zone_of(s.timezone)
        except ConfigError as exc:
            log.error("schedule %s: %s", s.name, exc)
            continue
        due = [s.next_tick]
        while len(due) < 10_000:
            following = cron.next_after(due[-1], zone)
            if following > now:
                break
            due.append(following)
        if len(due) >= 10_000 and cron.next_after(due[-1], zone) <= now:
            # The search stopped short of now (a minute cron after a week without
            # workers): the latest ticks, those ``catchup`` keeps, are found back from now.
            due += [t for t in ticks_up_to(cron, zone, now, s.catchup_max) if t > due[-1]]
        following = cron.next_after(max(due[-1], now), zone)
        missed = due
        if s.catchup == "skip":
            # Missed ticks are dropped; only a tick due just now (within a minute) runs.
            due = [t for t in due[-1:] if now - t < 60.0]
        elif s.catchup == "latest":
            due = due[-1:]
        else:
            due = due[-s.catchup_max:]
        dropped = [t for t in missed if t not in due]
        batch = [tick_run_id(s.name, tick) for tick in due]
        if due and s.overlap != "allow":
            # Runs of this batch a worker that died before the compare-and-set started
            # are not "previous" runs: the batch is started again (idempotently).
            running = [r for r in await in_flight(store, s, cron, zone)
                       if r.run_id not in batch]
            if running and s.overlap == "skip":
                log.info("schedule %s: tick(s) %s skipped, run %s still %s", s.name,
                         ", ".join(batch), running[0].run_id, running[0].status)
                batch = []
            elif running:
                for r in running:
                    if not r.cancel_requested:
                        # (its reason says whose cancel it was: tether show, result)
                        await store.run_cancel(
                            run_id=r.run_id, now=now,
                            reason=f"schedule {s.name!r} started its next run "
                                   "(overlap cancel_previous)")
                        log.info("schedule %s: cancelling run %s (overlap=cancel_previous)",
                                 s.name, r.run_id)
        # (a rolling deploy: whichever version's worker fires, the tick's run goes to
        # the newest live version, as the new runs of a deploy do)
        version = await newest_live_version(store, s.workflow, now) if batch else None
        for rid in batch:
            if await start_tick(app, store, s, rid, now, version):
                log.info("schedule %s: started run %s", s.name, rid)
                notify()
        # ``last_tick`` is the tick of the last batch that started: ``in_flight`` looks
        # at that batch through it once a manual trigger took ``last_run_id``, so a
        # skipped batch leaves it (moved on, it let that batch's runs out of sight).
        moved = await store.schedule_advance(
            name=s.name, expected=s.next_tick, next_tick=following,
            last_tick=due[-1] if batch else None,
            last_run_id=batch[-1] if batch else None, now=now)
        if moved:  # (said once: by the one worker whose compare-and-set moved it on)
            _log_missed(s, missed, dropped, batch, now)
        nxt = following if nxt is None else min(nxt, following)
    return nxt


def _log_missed(s: ScheduleRecord, due: list[float], dropped: list[float],
                batch: list[str], now: float) -> None:
    """After an outage (no worker of the workflow ran, or none reached the store), the
    ticks of ``due`` past by more than ``OVERDUE_AFTER`` were missed: a WARNING names
    the schedule, how many, the first and the last, and what ``catchup`` did with them
    (how many started late, how many not at all). Ticks a sub-minute cron ran behind by
    less than that and ``catchup`` dropped are said at INFO. (Said, not left to be
    guessed from the runs that are not there; "10000 or more": the search stops there.)"""
    late = [t for t in due if t < now - OVERDUE_AFTER]
    if not late and not dropped:
        return
    policy = s.catchup + (f", catchup_max={s.catchup_max}" if s.catchup == "all" else "")
    more = " or more" if len(due) >= 10_000 else ""
    if not late:
        log.info("schedule %s: %d%s missed tick%s not started (catchup=%s): %s", s.name,
                 len(dropped), more, "" if len(dropped) == 1 else "s", policy,
                 _tick_span(s.name, dropped))
        return
    started = sum(tick_run_id(s.name, t) in batch for t in late)
    log.warning("schedule %s: %d%s missed tick%s, %s (no worker of workflow %s started "
                "%s on time); catchup=%s: %d started late, %d not started", s.name,
                len(late), more, "" if len(late) == 1 else "s", _tick_span(s.name, late),
                s.workflow, "it" if len(late) == 1 else "them", policy, started,
                len(late) - started)


def _tick_span(name: str, ticks: list[float]) -> str:
    """``FIRST`` or ``FIRST to LAST``: ticks as their runs' ids have them."""
    first = tick_run_id(name, ticks[0]).partition("@")[2]
    if len(ticks) == 1:
        return first
    return f"{first} to {tick_run_id(name, ticks[-1]).partition('@')[2]}"


# -- compatibility of a run's journal with other code ------------------------------------

async def check_compatible(app: App, run_id: str, timeout: float = 30.0) -> str | None:
    """Replay ``run_id``'s journal against ``app``'s code with the testing kit's replayer
    (``tether.testing.replay``), executing nothing: None if the code asks for every
    recorded operation in order, else the replayer's one-line reason."""
    from tether.testing import check_history, export_history, load_history

    store = await app._open()
    if await store.run_get(run_id) is None:
        return "no such run"
    history = load_history(await export_history(app, run_id))
    result = await check_history(app, history, timeout=timeout)
    return None if result.compatible else result.message
