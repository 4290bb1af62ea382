"""``GET /metrics``: the store's numbers in the Prometheus text format (0.0.4).

Read from the store, so every ``serve`` process reports the same cluster-wide figures.
The figures that scan the whole store (runs by status, the step histogram, the LLM
totals: ``Store.store_stats``, seconds on tens of millions of steps) are computed in the
background (``MetricsCache``) and a scrape answers at once with the latest of them and
the queue and worker gauges read then (``store_live_stats``). The serve processes of a
store share their latest figures through the store (``SHARED_KEY``), so that scrapes
answered by any of them (``uvicorn --workers``, processes behind one address) never see
a counter go down.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tether._show import STATUSES
from tether._types import ENDED_VALUES
from tether.store._port import (
    REQUEST_TIMEOUT,
    RUN_BUCKETS,
    STEP_BUCKETS,
    LiveStats,
    StoreStats,
)

log = logging.getLogger("tether.serve")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds at least between two computations of the figures that scan the store, unless
#: ``create_app(metrics_interval=...)`` (``tether serve --metrics-interval``).
DEFAULT_METRICS_INTERVAL = 15.0
#: A computation is followed by at least this many times its own duration before the
#: next: the store spends at most about a tenth of its time on it.
COST_FACTOR = 10.0
#: The store's shared key-value row (``kv_get``/``kv_cas``) that holds the latest figures
#: computed by any serve process of the store, their counters the highest any has served.
SHARED_KEY = "tether.serve.metrics"
#: How many times a computation tries to merge its figures into ``SHARED_KEY`` when
#: other processes write it meanwhile.
_PUBLISH_TRIES = 5
#: ``tether_workflow_runs`` has series for the workflows with the most runs, this many
#: at most; the runs of the others are summed under ``workflow="other"``. So have
#: ``tether_workflow_runs_ended_total`` and ``tether_workflow_run_duration_seconds``,
#: for the workflows with the most ended runs.
WORKFLOW_SERIES = 100
#: ``tether_step_name_duration_seconds`` has series for the step names with the most
#: finished steps, this many at most; the steps of the others are summed under
#: ``step="other"``.
STEP_NAME_SERIES = 50
#: The label value of what the series above leave out.
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Figures:
    """One computation of ``store_stats``: its result, the app clock's time it began
    (the figures' age counts from there) and how many seconds it took."""

    stats: StoreStats
    at: float
    took: float


def encode(figures: Figures) -> str:
    """``figures`` as the text of the ``SHARED_KEY`` row (the queue and worker gauges,
    read at each scrape, are left out)."""
    stats = figures.stats
    return json.dumps({
        "at": figures.at, "took": figures.took, "runs_by_status": stats.runs_by_status,
        "step_count": stats.step_count, "step_seconds": stats.step_seconds,
        "step_buckets": list(stats.step_buckets), "llm": stats.llm,
        "runs_by_workflow": [[w, st, n] for (w, st), n in stats.runs_by_workflow.items()],
        "step_names": {k: list(v) for k, v in stats.step_names.items()},
        "run_ends": [[w, st, n] for (w, st), n in stats.run_ends.items()],
        "run_durations": {k: list(v) for k, v in stats.run_durations.items()},
    }, separators=(",", ":"))


def decode(text: str) -> Figures | None:
    """The figures of a ``SHARED_KEY`` row; None for a row this version cannot read (a
    later one's, with other buckets). A row of an earlier version, without the figures
    per workflow, per step name or of ended runs, has none of them."""
    try:
        doc: Any = json.loads(text)
        buckets = tuple(int(n) for n in doc["step_buckets"])
        names = {str(k): tuple(float(n) for n in v)
                 for k, v in doc.get("step_names", {}).items()}
        durations = {str(k): tuple(float(n) for n in v)
                     for k, v in doc.get("run_durations", {}).items()}
        if len(buckets) != len(STEP_BUCKETS) or any(
                len(v) != len(STEP_BUCKETS) + 2 for v in names.values()) or any(
                len(v) != len(RUN_BUCKETS) + 2 for v in durations.values()):
            return None
        stats = StoreStats(
            runs_by_status={str(k): int(v) for k, v in doc["runs_by_status"].items()},
            queues={}, step_count=int(doc["step_count"]),
            step_seconds=float(doc["step_seconds"]), step_buckets=buckets,
            llm={str(k): float(v) for k, v in doc["llm"].items()}, workers=0,
            runs_by_workflow={(str(w), str(st)): int(n)
                              for w, st, n in doc.get("runs_by_workflow", [])},
            step_names=names,
            run_ends={(str(w), str(st)): int(n) for w, st, n in doc.get("run_ends", [])},
            run_durations=durations)
        at, took = float(doc["at"]), float(doc["took"])
    except (ValueError, TypeError, KeyError, AttributeError):  # (and a bad unpacking)
        return None
    if not (math.isfinite(at) and math.isfinite(took)):
        return None
    return Figures(stats, at, took)


def merged(mine: Figures | None, theirs: Figures | None) -> Figures | None:
    """The figures to serve of two computations (this process's and the store's shared
    ones): the gauges (runs by status) and the age of the newer, and each counter (the
    step histogram, the LLM totals) at the higher of the two. Each counter only grows in
    the store, so the higher is the later value; computations of two processes that
    overlapped may have read their snapshots in the other order than they began, and a
    counter must not go down for that either."""
    if mine is None or theirs is None:
        return mine or theirs
    newer, older = (mine, theirs) if mine.at >= theirs.at else (theirs, mine)
    new, old = newer.stats, older.stats
    stats = replace(
        new, step_count=max(new.step_count, old.step_count),
        step_seconds=max(new.step_seconds, old.step_seconds),
        step_buckets=tuple(max(a, b) for a, b in zip(new.step_buckets, old.step_buckets,
                                                     strict=True)),
        llm={k: max(new.llm.get(k, 0.0), old.llm.get(k, 0.0))
             for k in (*new.llm, *(k for k in old.llm if k not in new.llm))},
        step_names={k: _higher(new.step_names.get(k), old.step_names.get(k))
                    for k in (*new.step_names,
                              *(k for k in old.step_names if k not in new.step_names))},
        run_ends={k: max(new.run_ends.get(k, 0), old.run_ends.get(k, 0))
                  for k in (*new.run_ends,
                            *(k for k in old.run_ends if k not in new.run_ends))},
        run_durations={k: _higher(new.run_durations.get(k), old.run_durations.get(k))
                       for k in (*new.run_durations, *(
                           k for k in old.run_durations if k not in new.run_durations))})
    return Figures(stats, newer.at, newer.took)


def _higher(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> tuple[float, ...]:
    """Each of a step name's counters at the higher of two computations'."""
    if a is None or b is None:
        out = a or b
        assert out is not None
        return out
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


async def shared(store: Any) -> Figures | None:
    """The figures the serve processes of ``store`` share (``SHARED_KEY``), if any."""
    row = await store.kv_get(key=SHARED_KEY)
    return None if row is None else decode(row[0])


async def publish(store: Any, figures: Figures) -> Figures:
    """Merge ``figures`` into the shared row (compare-and-set, tried again when another
    process wrote it meanwhile); returns what the row holds then, which is what this
    process serves from now on. Raises the store's error, or ``StoreError`` when the
    row kept changing under it."""
    from tether.errors import StoreError

    for _ in range(_PUBLISH_TRIES):
        row = await store.kv_get(key=SHARED_KEY)
        theirs = None if row is None else decode(row[0])
        out = merged(figures, theirs)
        assert out is not None
        if row is not None and theirs is not None and out == theirs:
            return out  # (nothing newer or higher to write)
        if await store.kv_cas(key=SHARED_KEY, value=encode(out),
                              version=None if row is None else row[1], now=figures.at):
            return out
    raise StoreError(f"the shared figures ({SHARED_KEY}) changed {_PUBLISH_TRIES} times "
                     "while this process wrote its own")


class MetricsCache:
    """The latest ``store_stats``, refreshed in the background and shared with the other
    serve processes of the store.

    A scrape (``kick``) starts a computation when none runs and the last one, by this
    process or another (``note``), ended at least ``max(interval, COST_FACTOR x its
    duration)`` seconds ago; nothing is computed while nobody scrapes. A computation
    runs outside the request that started it: under the store's own deadline
    (``query_timeout``), not the request's, and a client that goes away does not cancel
    it. One at a time, each a later snapshot of the store. Its figures are merged into
    the store's shared row (``publish``) before this process serves them, and each
    scrape serves them merged with that row as it reads it then (``merged``): the
    counters never go down from one scrape to the next, whichever process answers
    each. One that fails, or whose figures cannot be shared, leaves the last figures in
    place (and waits as long before the next)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.latest: Figures | None = None
        self.task: asyncio.Task[None] | None = None
        self.next_at = 0.0  # (time.monotonic())

    def note(self, theirs: Figures | None, now: float) -> None:
        """Another process's figures (the shared row, read at ``now`` by the app's
        clock) put this process's next computation off until they are due again."""
        if theirs is None or (self.latest is not None and self.latest.at >= theirs.at):
            return
        due = theirs.at + max(self.interval, COST_FACTOR * theirs.took) - now
        self.next_at = max(self.next_at, time.monotonic() + due)

    def kick(self, app: object) -> asyncio.Task[None] | None:
        """Start a computation if one is due; the running one, if any."""
        if (self.task is None or self.task.done()) and time.monotonic() >= self.next_at:
            # A fresh context: none of the request's (its REQUEST_TIMEOUT, FAIL_FAST).
            self.task = asyncio.get_running_loop().create_task(
                self._compute(app), context=contextvars.Context())
        return None if self.task is None or self.task.done() else self.task

    async def _compute(self, app: object) -> None:
        store, clock = app.store, app.clock  # type: ignore[attr-defined]
        begun = time.monotonic()
        at = clock.now()
        try:
            stats = await store.store_stats(now=at)
            figures = Figures(stats, at, time.monotonic() - begun)
            self.latest = merged(self.latest, await publish(store, figures))
        except Exception as exc:  # (kept: the last figures, and the next try's delay)
            log.warning("/metrics: computing the store's figures failed: %s", exc)
        finally:
            took = time.monotonic() - begun
            self.next_at = time.monotonic() + max(self.interval, COST_FACTOR * took)

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _kept(totals: dict[str, float], limit: int) -> set[str]:
    """The ``limit`` names of the highest totals (of equal ones, the first by name)."""
    return set(sorted(totals, key=lambda k: (-totals[k], k))[:limit])


def _by_workflow(counts: dict[tuple[str, str], int], known: Iterable[str]
                 ) -> tuple[set[str], dict[str, dict[str, int]]]:
    """``counts`` (by workflow and status) for the ``WORKFLOW_SERIES`` workflows with the
    most (the ``known`` ones with none too), the rest summed as ``OTHER``; and the
    workflows kept."""
    totals: dict[str, float] = dict.fromkeys(known, 0)
    for (workflow, _), n in counts.items():
        totals[workflow] = totals.get(workflow, 0) + n
    kept = _kept(totals, WORKFLOW_SERIES)
    out: dict[str, dict[str, int]] = {w: {} for w in kept}
    for (workflow, status), n in counts.items():
        by_status = out.setdefault(workflow if workflow in kept else OTHER, {})
        by_status[status] = by_status.get(status, 0) + n
    return kept, out


def _workflow_runs(stats: StoreStats, known: Iterable[str]) -> dict[str, dict[str, int]]:
    """Runs by workflow (``WORKFLOW_SERIES`` of them, the rest as ``OTHER``; the
    ``known`` ones with none too) and status."""
    return _by_workflow(stats.runs_by_workflow, known)[1]


def _run_ends(stats: StoreStats, known: Iterable[str]
              ) -> tuple[dict[str, dict[str, int]], dict[str, tuple[float, ...]]]:
    """Ended runs by workflow and status, and the histogram of their durations by
    workflow: the ``WORKFLOW_SERIES`` workflows with the most ended runs (the ``known``
    ones with none too), the rest summed as ``OTHER``."""
    kept, ends = _by_workflow(stats.run_ends, known)
    zero = (0.0,) * (len(RUN_BUCKETS) + 2)
    durations: dict[str, tuple[float, ...]] = dict.fromkeys(ends, zero)
    for workflow, values in stats.run_durations.items():
        key = workflow if workflow in kept else OTHER
        durations[key] = tuple(x + y for x, y in zip(durations.get(key, zero), values,
                                                     strict=True))
    return ends, durations


def _step_names(stats: StoreStats) -> dict[str, tuple[float, ...]]:
    """The step histogram's figures per step name (``STEP_NAME_SERIES`` of them, the
    rest summed as ``OTHER``)."""
    kept = _kept({k: v[0] for k, v in stats.step_names.items()}, STEP_NAME_SERIES)
    out: dict[str, tuple[float, ...]] = {}
    for name, values in stats.step_names.items():
        key = name if name in kept else OTHER
        had = out.get(key)
        out[key] = values if had is None else tuple(
            x + y for x, y in zip(had, values, strict=True))
    return out


def render(figures: Figures | None, live: LiveStats, now: float,
           workflows: Iterable[str] = ()) -> str:
    """The exposition: ``figures`` (None: not computed yet, whose families are left
    out, with a comment saying so) and the ``live`` gauges, at ``now``; the registered
    ``workflows`` have ``tether_workflow_runs`` and ``tether_workflow_runs_ended_total``
    series, 0 while they have no runs (an alert on one reads 0, not "no data")."""
    workflows = tuple(workflows)  # (read for two families)
    out: list[str] = []

    def metric(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    metric("tether_queue_depth", "gauge", "Runs queued for a worker, per queue.")
    for queue, (depth, _) in sorted(live.queues.items()):
        out.append(f'tether_queue_depth{{queue="{_label(queue)}"}} {depth}')
    metric("tether_queue_oldest_age_seconds", "gauge",
           "Seconds the queued run waiting longest has been claimable, per queue.")
    for queue, (_, oldest) in sorted(live.queues.items()):
        out.append(f'tether_queue_oldest_age_seconds{{queue="{_label(queue)}"}} '
                   f"{max(now - oldest, 0.0):.3f}")
    metric("tether_workers", "gauge", "Workers that heartbeated in the last minute.")
    out.append(f"tether_workers {live.workers}")
    if figures is None:
        # (A comment line: Prometheus ignores it. Absent series are a gap, not a reset.)
        out.append("# tether_runs, tether_workflow_runs, tether_workflow_runs_ended_total, "
                   "tether_workflow_run_duration_seconds, tether_step_duration_seconds, "
                   "tether_step_name_duration_seconds and tether_llm_* are left out: their "
                   "first computation has not finished yet")
        return "\n".join(out) + "\n"
    stats = figures.stats
    metric("tether_metrics_age_seconds", "gauge",
           "Seconds since the computation of tether_runs, the step histogram and the "
           "LLM totals began (they are refreshed in the background).")
    out.append(f"tether_metrics_age_seconds {max(now - figures.at, 0.0):.3f}")
    metric("tether_metrics_computation_seconds", "gauge",
           "Seconds the last computation of those figures took.")
    out.append(f"tether_metrics_computation_seconds {figures.took:.3f}")
    metric("tether_runs", "gauge", "Runs in the store by status.")
    for status in STATUSES:
        out.append(f'tether_runs{{status="{status}"}} {stats.runs_by_status.get(status, 0)}')
    metric("tether_step_duration_seconds", "histogram",
           "Seconds from the first attempt of each finished step to its outcome.")
    for bound, count in zip(STEP_BUCKETS, stats.step_buckets, strict=True):
        out.append(f'tether_step_duration_seconds_bucket{{le="{bound:g}"}} {count}')
    out.append(f'tether_step_duration_seconds_bucket{{le="+Inf"}} {stats.step_count}')
    out.append(f"tether_step_duration_seconds_sum {stats.step_seconds:.6f}")
    out.append(f"tether_step_duration_seconds_count {stats.step_count}")
    metric("tether_workflow_runs", "gauge",
           f"Runs in the store by workflow and status (the {WORKFLOW_SERIES} workflows with "
           f'the most runs; the others under workflow="{OTHER}").')
    # (Figures computed by an earlier version, shared through the store, have no runs
    # per workflow: its series are left out, a gap, rather than read 0.)
    earlier = not stats.runs_by_workflow and any(stats.runs_by_status.values())
    for workflow, by_status in sorted(
            {} if earlier else _workflow_runs(stats, workflows).items()):
        for status in STATUSES:
            out.append(f'tether_workflow_runs{{workflow="{_label(workflow)}",'
                       f'status="{status}"}} {by_status.get(status, 0)}')
    _render_run_ends(out, stats, workflows)
    metric("tether_step_name_duration_seconds", "histogram",
           "Seconds from the first attempt of each finished step to its outcome, per step "
           f"name (the {STEP_NAME_SERIES} names with the most steps; the others under "
           f'step="{OTHER}").')
    for name, values in sorted(_step_names(stats).items()):
        step = f'step="{_label(name)}"'
        for bound, in_bucket in zip(STEP_BUCKETS, values[2:], strict=True):
            out.append(f'tether_step_name_duration_seconds_bucket{{{step},le="{bound:g}"}} '
                       f"{_num(in_bucket)}")
        out.append(f'tether_step_name_duration_seconds_bucket{{{step},le="+Inf"}} '
                   f"{_num(values[0])}")
        out.append(f"tether_step_name_duration_seconds_sum{{{step}}} {values[1]:.6f}")
        out.append(f"tether_step_name_duration_seconds_count{{{step}}} {_num(values[0])}")
    llm = stats.llm
    metric("tether_llm_calls_total", "counter", "LLM calls a provider answered (an "
           "attempt refused with an error, a 429 or a 5xx, is not one).")
    out.append(f"tether_llm_calls_total {_num(llm['llm.calls'])}")
    metric("tether_llm_tokens_total", "counter",
           "LLM tokens paid (spent) and not paid again thanks to replay (saved).")
    for kind in ("input", "output"):
        out.append(f'tether_llm_tokens_total{{type="{kind}",outcome="spent"}} '
                   f"{_num(llm[f'tokens.{kind}'])}")
        out.append(f'tether_llm_tokens_total{{type="{kind}",outcome="saved"}} '
                   f"{_num(llm[f'saved.tokens.{kind}'])}")
    metric("tether_llm_cost_usd_total", "counter", "LLM cost in US dollars, spent and saved.")
    out.append(f'tether_llm_cost_usd_total{{outcome="spent"}} {llm["cost.usd"]:.6f}')
    out.append(f'tether_llm_cost_usd_total{{outcome="saved"}} {llm["saved.cost.usd"]:.6f}')
    return "\n".join(out) + "\n"


def _render_run_ends(out: list[str], stats: StoreStats, workflows: Iterable[str]) -> None:
    """``tether_workflow_runs_ended_total`` and ``tether_workflow_run_duration_seconds``
    into ``out``; their series left out (a gap) for figures computed by an earlier
    version, which counts no ended runs, rather than read 0."""
    earlier = not stats.run_ends and any(stats.runs_by_status.get(s, 0) for s in ENDED_VALUES)
    ends, durations = ({}, {}) if earlier else _run_ends(stats, workflows)
    out.append("# HELP tether_workflow_runs_ended_total Runs that ended (completed, failed, "
               f"cancelled), by workflow and status (the {WORKFLOW_SERIES} workflows with "
               f'the most ended runs; the others under workflow="{OTHER}"); purged and '
               "retried runs still count.")
    out.append("# TYPE tether_workflow_runs_ended_total counter")
    for workflow, by_status in sorted(ends.items()):
        for status in ENDED_VALUES:
            out.append(f'tether_workflow_runs_ended_total{{workflow="{_label(workflow)}",'
                       f'status="{status}"}} {by_status.get(status, 0)}')
    out.append("# HELP tether_workflow_run_duration_seconds Seconds from the creation of "
               "each ended run to its end, by workflow (as tether_workflow_runs_ended_total).")
    out.append("# TYPE tether_workflow_run_duration_seconds histogram")
    for workflow, values in sorted(durations.items()):
        wf = f'workflow="{_label(workflow)}"'
        for bound, in_bucket in zip(RUN_BUCKETS, values[2:], strict=True):
            out.append(f'tether_workflow_run_duration_seconds_bucket{{{wf},le="{bound:g}"}} '
                       f"{_num(in_bucket)}")
        out.append(f'tether_workflow_run_duration_seconds_bucket{{{wf},le="+Inf"}} '
                   f"{_num(values[0])}")
        out.append(f"tether_workflow_run_duration_seconds_sum{{{wf}}} {values[1]:.6f}")
        out.append(f"tether_workflow_run_duration_seconds_count{{{wf}}} {_num(values[0])}")


def render_connections(open_: int, limit: int, refused: int) -> str:
    """This serve process's own figures (not the store's: each process has its own),
    when it bounds its connections (``tether serve --max-connections``)."""
    return (
        "# HELP tether_serve_connections HTTP connections open to this serve process.\n"
        "# TYPE tether_serve_connections gauge\n"
        f"tether_serve_connections {open_}\n"
        "# HELP tether_serve_connections_max Connections this serve process serves at "
        "once (--max-connections).\n"
        "# TYPE tether_serve_connections_max gauge\n"
        f"tether_serve_connections_max {limit}\n"
        "# HELP tether_serve_connections_refused_total Connections this serve process "
        "answered 503 too_many_connections since it started.\n"
        "# TYPE tether_serve_connections_refused_total counter\n"
        f"tether_serve_connections_refused_total {refused}\n")


def _serve_figures(request: Request) -> str:
    limit = request.app.state.connections
    if limit is None:
        return ""
    return render_connections(limit.open, limit.limit, limit.refused)


async def with_known_queues(store: object, live: LiveStats, now: float,
                            workflows: dict[str, str]) -> LiveStats:
    """``live`` with a depth of 0 (and an age of 0) for each queue the store knows of
    (``tether queues``: the workflows registry, ``workflows``, and the queue limits)
    that has no queued run: an idle queue's series read 0, not "no data" (a gauge left
    out of a scrape is stale for Prometheus: ``sum(tether_queue_depth)`` and dashboards
    went blank whenever every queue was empty, and an alert on a queue's depth could
    not tell 0 from a server that stopped reporting it)."""
    limits = await store.queue_limits()  # type: ignore[attr-defined]
    known = set(workflows.values()) | set(limits)
    if known <= set(live.queues):
        return live
    queues = {q: (0, now) for q in known}
    queues.update(live.queues)
    return LiveStats(queues, live.workers)


async def metrics(request: Request) -> Response:
    app = request.app.state.tether
    cache: MetricsCache = request.app.state.metrics
    if cache.interval == 0:  # (every figure computed in the request, as before)
        begun = time.monotonic()
        now = app.clock.now()
        stats = await app.store.store_stats(now=now)
        figures = await publish(app.store, Figures(stats, now, time.monotonic() - begun))
        workflows = await app.store.workflow_list()
        live = await with_known_queues(app.store, LiveStats(stats.queues, stats.workers),
                                       now, workflows)
        return Response(render(figures, live, now, workflows) + _serve_figures(request),
                        media_type=CONTENT_TYPE)
    # The live gauges first: a store known to be down answers 503 at once (FAIL_FAST),
    # and no computation is started against it.
    now = app.clock.now()
    live = await app.store.store_live_stats(now=now)
    workflows = await app.store.workflow_list()
    live = await with_known_queues(app.store, live, now, workflows)
    # The figures another process computed (uvicorn --workers, processes behind one
    # address): served merged with this one's, so that a counter another process served
    # is never followed by a lower one from this process; and this one computes none
    # until they are due.
    theirs = await shared(app.store)
    cache.note(theirs, now)
    task = cache.kick(app)
    if cache.latest is None and theirs is None and task is not None:
        # The first scrape of the store waits for the first computation, within the
        # request's deadline; past it, it answers without those figures (not 503).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT.get()):
                await asyncio.shield(task)
    return Response(render(merged(cache.latest, theirs), live, now, workflows)
                    + _serve_figures(request), media_type=CONTENT_TYPE)
