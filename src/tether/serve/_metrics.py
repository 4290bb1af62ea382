"""``GET /metrics``: the store's numbers in the Prometheus text format (0.0.4).

Read from the store at each scrape, so every ``serve`` process reports the same
cluster-wide figures (scrape one of them). Each scrape costs a few aggregate queries,
one of which scans the finished steps of the journal (the latency histogram).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tether._show import STATUSES
from tether.store._port import STEP_BUCKETS, StoreStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(stats: StoreStats, now: float) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    metric("tether_runs", "gauge", "Runs in the store by status.")
    for status in STATUSES:
        out.append(f'tether_runs{{status="{status}"}} {stats.runs_by_status.get(status, 0)}')
    metric("tether_queue_depth", "gauge", "Runs queued for a worker, per queue.")
    for queue, (depth, _) in sorted(stats.queues.items()):
        out.append(f'tether_queue_depth{{queue="{_label(queue)}"}} {depth}')
    metric("tether_queue_oldest_age_seconds", "gauge",
           "Seconds the queued run waiting longest has been claimable, per queue.")
    for queue, (_, oldest) in sorted(stats.queues.items()):
        out.append(f'tether_queue_oldest_age_seconds{{queue="{_label(queue)}"}} '
                   f"{max(now - oldest, 0.0):.3f}")
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
    metric("tether_workers", "gauge", "Workers that heartbeated in the last minute.")
    out.append(f"tether_workers {stats.workers}")
    return "\n".join(out) + "\n"


async def metrics(request: Request) -> Response:
    app = request.app.state.tether
    now = app.clock.now()
    stats = await app.store.store_stats(now=now)
    return Response(render(stats, now), media_type=CONTENT_TYPE)
