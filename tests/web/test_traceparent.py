"""A ``traceparent`` header on ``POST /api/v1/runs`` makes the run's spans children of
the caller's trace (in-memory exporter, a real worker in process)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether.otel
from tests.web.test_api import Api, _api, error_of, wait_status
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

    # Its own trace, rooted by the start span of the process that started it (this one).
    (own,) = [s for s in _spans(exporter, "bad-header") if s.name == "run steps"]
    (start,) = [s for s in _spans(exporter, "bad-header") if s.name == "start steps"]
    assert start.parent is None
    assert own.parent is not None and own.parent.span_id == start.get_span_context().span_id
    assert format(own.get_span_context().trace_id, "032x") != TRACE
    assert not [s for s in _spans(exporter, traced) if s.name == "start steps"]


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


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


async def test_signal_and_approval_with_traceparent_link_the_next_execution(
        api: Api, exporter: InMemorySpanExporter) -> None:
    """A signal or an approval posted with a traceparent links the execution that
    continues the run to the caller's span; the run stays in its own trace, and a later
    execution is not linked again."""
    signal_trace, signal_span = "1" * 32, "2" * 16
    approval_trace, approval_span = "3" * 32, "4" * 16
    async with api.app.worker(queues=["default"]):
        assert (await api.http.post("/api/v1/runs", json={
            "workflow": "wait_go", "run_id": "w"})).status_code == 201
        assert (await api.http.post("/api/v1/runs", json={
            "workflow": "purchase", "input": ["report"], "run_id": "p"})).status_code == 201
        await wait_status(api, "w", "waiting")
        await wait_status(api, "p", "waiting")
        r = await api.http.post("/api/v1/runs/w/signals/go", json={"data": 1}, headers={
            "traceparent": f"00-{signal_trace}-{signal_span}-01"})
        assert r.status_code == 202, r.text
        r = await api.http.post("/api/v1/runs/p/approval", json={"approved": True}, headers={
            "traceparent": f"00-{approval_trace}-{approval_span}-01"})
        assert r.status_code == 200, r.text
        await wait_status(api, "w", "completed")
        await wait_status(api, "p", "completed")

    for run_id, trace_id, span_id in (("w", signal_trace, signal_span),
                                      ("p", approval_trace, approval_span)):
        runs = sorted((s for s in _spans(exporter, run_id) if s.name.startswith("run ")),
                      key=lambda s: s.start_time or 0)
        assert len(runs) == 2, [s.name for s in runs]
        first, second = runs
        assert not first.links
        assert [(_hex(lk.context.trace_id, 32), _hex(lk.context.span_id, 16))
                for lk in second.links] == [(trace_id, span_id)]
        assert second.get_span_context().trace_id == first.get_span_context().trace_id
        stored = await api.app.store.kv_get(key=f"otel.trace:{run_id}")
        assert stored is not None and "links" not in json.loads(stored[0])


async def test_signal_with_traceparent_to_an_ended_run_changes_nothing(api: Api) -> None:
    """The signal is refused (409) and no link is recorded."""
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a"],
                                                  "run_id": "g"})
        await wait_status(api, "g", "completed")
    before = await api.app.store.kv_get(key="otel.trace:g")
    header = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    r = await api.http.post("/api/v1/runs/g/signals/go", json={}, headers=header)
    assert r.status_code == 409 and error_of(r) == "conflict"
    r = await api.http.post("/api/v1/runs/g/approval", json={"approved": True}, headers=header)
    assert r.status_code == 409 and error_of(r) == "no_pending_approval"
    r = await api.http.post("/api/v1/runs/nope/approval", json={"approved": True},
                            headers=header)
    assert r.status_code == 404
    assert await api.app.store.kv_get(key="otel.trace:g") == before
    assert await api.app.store.kv_get(key="otel.trace:nope") is None


async def test_a_refused_approval_or_a_repeated_signal_with_traceparent_links_nothing(
        api: Api) -> None:
    """An approval refused for its ``approval_id`` (409: the run waits for another
    one), and a signal under an idempotency key the run has had (202 ``created``
    false: nothing stored), linked the run's next execution to a caller whose request
    did nothing, until 2026-12-06: the link was written before the answer was known.
    A refused request changes nothing in the store; neither of these does now."""
    async with api.app.worker(queues=["default"]):
        for body in ({"workflow": "wait_go", "run_id": "w"},
                     {"workflow": "purchase", "input": ["report"], "run_id": "p"}):
            assert (await api.http.post("/api/v1/runs", json=body)).status_code == 201
        await wait_status(api, "w", "waiting")
        await wait_status(api, "p", "waiting")
    header = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    before = {run_id: await api.app.store.kv_get(key=f"otel.trace:{run_id}")
              for run_id in ("w", "p")}
    r = await api.http.post("/api/v1/runs/p/approval", headers=header,
                            json={"approved": True, "approval_id": "2"})
    assert r.status_code == 409 and error_of(r) == "no_pending_approval", r.text
    r = await api.http.post("/api/v1/runs/w/signals/go", json={"idempotency_key": "k"})
    assert r.status_code == 202 and r.json()["created"], r.text
    after_first = await api.app.store.kv_get(key="otel.trace:w")
    r = await api.http.post("/api/v1/runs/w/signals/go", headers=header,
                            json={"idempotency_key": "k"})
    assert r.status_code == 202 and not r.json()["created"], r.text
    assert await api.app.store.kv_get(key="otel.trace:p") == before["p"]
    assert await api.app.store.kv_get(key="otel.trace:w") == after_first == before["w"]
    # The approval it waits for, with the header: linked, as before.
    r = await api.http.post("/api/v1/runs/p/approval", headers=header,
                            json={"approved": True, "approval_id": "1"})
    assert r.status_code == 200, r.text
    stored = await api.app.store.kv_get(key="otel.trace:p")
    assert stored is not None and len(json.loads(stored[0])["links"]) == 1
