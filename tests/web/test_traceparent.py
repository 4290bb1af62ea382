"""A ``traceparent`` header on ``POST /api/v1/runs`` makes the run's spans children of
the caller's trace (in-memory exporter, a real worker in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether.otel
from tests.web.test_api import Api, _api, error_of
from tether._observe import trace_carrier

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[Api]:
    async for a in _api(store_url, None):
        yield a


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    observer = tether.otel.instrument(provider)
    try:
        yield found
    finally:
        tether.otel.uninstrument(observer)


def _spans(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if (s.attributes or {}).get("tether.run_id") == run_id]


async def test_run_started_with_traceparent_joins_the_callers_trace(
        api: Api, exporter: InMemorySpanExporter) -> None:
    """The run's span is a child of the caller's span, its steps in the same trace, and
    a run started without the header (or with an invalid one) roots its own trace."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": [2]},
                            headers={"traceparent": f"00-{TRACE}-{SPAN}-01",
                                     "tracestate": "vendor=1"})
    assert r.status_code == 201, r.text
    traced = r.json()["run_id"]
    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": [1],
                                                  "run_id": "bad-header"},
                            headers={"traceparent": f"00-{'0' * 32}-{SPAN}-01"})
    assert r.status_code == 201, r.text
    async with api.app.worker(queues=["default"]):
        await api.app.handle(traced).result(timeout=30)
        await api.app.handle("bad-header").result(timeout=30)

    spans = _spans(exporter, traced)
    (run,) = [s for s in spans if s.name == "run steps"]
    assert format(run.get_span_context().trace_id, "032x") == TRACE
    assert run.parent is not None and format(run.parent.span_id, "016x") == SPAN
    assert run.parent.is_remote
    assert run.get_span_context().trace_state.to_header() == "vendor=1"
    steps = [s for s in spans if s.name == "step work"]
    assert len(steps) == 2
    assert {format(s.get_span_context().trace_id, "032x") for s in steps} == {TRACE}

    (own,) = [s for s in _spans(exporter, "bad-header") if s.name == "run steps"]
    assert own.parent is None
    assert format(own.get_span_context().trace_id, "032x") != TRACE


async def test_traceparent_on_a_rejected_or_existing_start_changes_nothing(
        api: Api) -> None:
    """A start refused for its input writes no trace context; an existing run id keeps
    the trace context it had."""
    header = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    before = await api.snapshot()
    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": "x",
                                                  "run_id": "t1"}, headers=header)
    assert r.status_code == 400 and error_of(r) == "bad_request"
    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": [1],
                                                  "run_id": "t\u202e1"}, headers=header)
    assert r.status_code == 400 and error_of(r) == "bad_request"
    assert await api.snapshot() == before
    assert await api.app.store.kv_get(key="otel.trace:t1") is None
    assert await api.app.store.kv_get(key="otel.trace:t\u202e1") is None

    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": [1],
                                                  "run_id": "t2"})
    assert r.status_code == 201
    r = await api.http.post("/api/v1/runs", json={"workflow": "steps", "input": [1],
                                                  "run_id": "t2"}, headers=header)
    assert r.status_code == 200
    assert await api.app.store.kv_get(key="otel.trace:t2") is None


@pytest.mark.parametrize("header", [
    "", "garbage", f"00-{TRACE}-{SPAN}", f"00-{TRACE.upper()}-{SPAN}-01",
    f"ff-{TRACE}-{SPAN}-01", f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE}-{SPAN}-01-extra",
])
def test_invalid_traceparent_is_ignored(header: str) -> None:
    assert trace_carrier(header) is None


def test_valid_traceparent_carries_tracestate() -> None:
    assert trace_carrier(f"00-{TRACE}-{SPAN}-01", "a=1") == {
        "traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=1"}
    assert trace_carrier(f"01-{TRACE}-{SPAN}-01-future") is not None
