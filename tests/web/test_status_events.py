"""The ``status`` events of a run's stream (``GET /api/v1/runs/{id}/events``) say what
the run's document says of its wait: ``waiting_for`` is a waiting run's only."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.web.helpers import parse_sse, serving, start_worker


def test_a_woken_runs_status_events_say_no_wait(store_url: str, tmp_path: Path) -> None:
    """A run a signal woke: the event of the claim that runs it again said
    ``{"status": "running", "waiting_for": "signal go"}`` (the row keeps its last
    wait's), where its document and the runs list say ``null`` in any status but
    ``waiting`` (a client drawing the stream read "running, waiting for signal go").
    Real ``tether serve`` and worker processes."""
    worker = start_worker(store_url, tmp_path)
    try:
        with serving(store_url, tmp_path) as served:
            url = served.url
            r = httpx.post(url + "/api/v1/runs", json={"workflow": "wait_go",
                                                        "run_id": "woken"})
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 30
            while httpx.get(url + "/api/v1/runs/woken").json()["status"] != "waiting":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = httpx.post(url + "/api/v1/runs/woken/signals/go", json={"data": 7})
            assert r.status_code == 202, r.text
            events = []
            with httpx.stream("GET", url + "/api/v1/runs/woken/events",
                              timeout=30) as resp:
                for ev in parse_sse(resp.iter_lines()):
                    events.append(ev)
                    if ev.event == "end":
                        break
            doc = httpx.get(url + "/api/v1/runs/woken").json()
    finally:
        worker.terminate()
        worker.wait(10)
    assert doc["status"] == "completed" and doc["result"] == 7
    statuses = [ev.data for ev in events if ev.event == "status"]
    assert {"status": "waiting", "waiting_for": "signal go"} in statuses, statuses
    assert statuses[-1] == {"status": "completed", "waiting_for": None}, statuses
    for data in statuses:
        assert isinstance(data, dict)
        if data["status"] != "waiting":
            assert data["waiting_for"] is None, statuses
    # The claim after the signal: running again, waiting for nothing.
    woken = statuses.index({"status": "waiting", "waiting_for": "signal go"})
    assert {"status": "running", "waiting_for": None} in statuses[woken + 1:], statuses
