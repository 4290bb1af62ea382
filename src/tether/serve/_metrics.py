"""``GET /metrics``: the store's numbers in the Prometheus text format (0.0.4).

Read from the store, so every ``serve`` process reports the same cluster-wide figures
(scrape one of them). The figures that scan the whole store (runs by status, the step
histogram, the LLM totals: ``Store.store_stats``, seconds on tens of millions of steps)
are computed in the background (``MetricsCache``) and a scrape answers at once with the
latest of them and the queue and worker gauges read then (``store_live_stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tether._show import STATUSES
from tether.store._port import REQUEST_TIMEOUT, STEP_BUCKETS, LiveStats, StoreStats

log = logging.getLogger("tether.serve")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds at least between two computations of the figures that scan the store, unless
#: ``create_app(metrics_interval=...)`` (``tether serve --metrics-interval``).
DEFAULT_METRICS_INTERVAL = 15.0
#: A computation is followed by at least this many times its own duration before the
#: next: the store spends at most about a tenth of its time on it per serve process.
COST_FACTOR = 10.0


@dataclass(frozen=True, slots=True)
class Figures:
    """One computation of ``store_stats``: its result, the app clock's time it began
    (the figures' age counts from there) and how many seconds it took."""

    stats: StoreStats
    at: float
    took: float


class MetricsCache:
    """The latest ``store_stats`` of this serve process, refreshed in the background.

    A scrape (``kick``) starts a computation when none runs and the last one ended at
    least ``max(interval, COST_FACTOR x its duration)`` seconds ago; nothing is computed
    while nobody scrapes. A computation runs outside the request that started it: under
    the store's own deadline (``query_timeout``), not the request's, and a client that
    goes away does not cancel it. One at a time, each a later snapshot of the store: the
    counters never go down from one to the next. One that fails leaves the last figures
    in place (and waits as long before the next)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.latest: Figures | None = None
        self.task: asyncio.Task[None] | None = None
        self.next_at = 0.0  # (time.monotonic())

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
        except Exception as exc:  # (kept: the last figures, and the next try's delay)
            log.warning("/metrics: computing the store's figures failed: %s", exc)
        else:
            self.latest = Figures(stats, at, time.monotonic() - begun)
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


def render(figures: Figures | None, live: LiveStats, now: float) -> str:
    """The exposition: ``figures`` (None: not computed yet, whose families are left
    out, with a comment saying so) and the ``live`` gauges, at ``now``."""
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
        out.append("# tether_runs, tether_step_duration_seconds and tether_llm_* are left "
                   "out: their first computation has not finished yet")
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
    llm = stats.llm
    metric("tether_llm_calls_total", "counter", "LLM calls that reached a provider.")
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


async def with_known_queues(store: object, live: LiveStats, now: float) -> LiveStats:
    """``live`` with a depth of 0 (and an age of 0) for each queue the store knows of
    (``tether queues``: the workflows registry and the queue limits) that has no queued
    run: an idle queue's series read 0, not "no data" (a gauge left out of a scrape is
    stale for Prometheus: ``sum(tether_queue_depth)`` and dashboards went blank whenever
    every queue was empty, and an alert on a queue's depth could not tell 0 from a
    server that stopped reporting it)."""
    workflows = await store.workflow_list()  # type: ignore[attr-defined]
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
        figures = Figures(stats, now, time.monotonic() - begun)
        live = await with_known_queues(app.store, LiveStats(stats.queues, stats.workers),
                                       now)
        return Response(render(figures, live, now) + _serve_figures(request),
                        media_type=CONTENT_TYPE)
    # The live gauges first: a store known to be down answers 503 at once (FAIL_FAST),
    # and no computation is started against it.
    now = app.clock.now()
    live = await with_known_queues(app.store, await app.store.store_live_stats(now=now), now)
    task = cache.kick(app)
    if cache.latest is None and task is not None:
        # The first scrape after start waits for the first computation, within the
        # request's deadline; past it, it answers without those figures (not 503).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT.get()):
                await asyncio.shield(task)
    return Response(render(cache.latest, live, now) + _serve_figures(request),
                    media_type=CONTENT_TYPE)
