"""Server-Sent Events kept in the store: a client that drops mid-answer and reconnects
with Last-Event-ID to another ``tether serve`` process gets every event exactly once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import forked
from tests.web.helpers import ROOT, WEBAPP, env, parse_sse, serving, start_worker
from tether.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORDS = [f"w{i}" for i in range(40)]


def start_llm(tmp: Path, steps: list[dict[str, object]]) -> tuple[subprocess.Popen[str], str]:
    script = tmp / "script.json"
    script.write_text(json.dumps(steps))
    proc = forked.Popen([sys.executable, "-m", "tether.testing.llm_server", "--script",
                             str(script)], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_reconnect_to_another_serve_process_gets_every_event_once(pg_url: str,
                                                                  tmp_path: Path) -> None:
    llm, base_url = start_llm(tmp_path, [{"text": " ".join(WORDS), "chunk_delay": 0.04}])
    worker = None
    try:
        # the worker starts while the two servers do; it claims the run once posted
        worker = start_worker(pg_url, tmp_path, extra_env={"TETHER_TEST_LLM_URL": base_url})
        with serving(pg_url, tmp_path, app=WEBAPP) as a, \
                serving(pg_url, tmp_path, app=WEBAPP) as b:
            r = httpx.post(a.url + "/api/v1/runs", json={
                "workflow": "stream_answer", "input": ["say the words"], "run_id": "sse-1"})
            assert r.status_code == 201, r.text
            first = []
            with httpx.stream("GET", a.url + "/api/v1/runs/sse-1/events", timeout=30) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                for ev in parse_sse(resp.iter_lines()):
                    first.append(ev)
                    if sum(e.event == "chunk" for e in first) >= 6:
                        break  # drop the connection in the middle of the answer
            assert first[-1].id is not None
            second = []
            with httpx.stream("GET", b.url + "/api/v1/runs/sse-1/events", timeout=30,
                              headers={"Last-Event-ID": first[-1].id}) as resp:
                for ev in parse_sse(resp.iter_lines()):
                    second.append(ev)
                    if ev.event == "end":
                        break
            done = httpx.get(b.url + "/api/v1/runs/sse-1").json()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        llm.terminate()
        llm.wait(10)
        if llm.stdout is not None:
            llm.stdout.close()

    assert done["status"] == "completed"
    assert second[-1].event == "end" and second[-1].id is None
    got = [e for e in first + second if e.id is not None]
    ids = [e.id for e in got]
    assert len(ids) == len(set(ids)), "an event came twice"
    chunks = [e.data["text"] for e in got if e.event == "chunk"
              and isinstance(e.data, dict) and e.data.get("type") == "llm.chunk"]
    assert "".join(chunks).split() == WORDS == done["result"].split()
    assert any(e.event == "chunk" for e in second), "the reconnect was not mid-answer"

    async def stored() -> list[str]:
        store = open_store(pg_url)
        await store.open()
        try:
            return [e.event_id for e in await store.run_events_read(run_id="sse-1", after=None,
                                                                   limit=10_000)]
        finally:
            await store.close()

    assert ids == asyncio.run(stored()), "events missing or out of store order"
    statuses = [e.data["status"] for e in got if e.event == "status"
                and isinstance(e.data, dict)]
    assert statuses[-1] == "completed"


def test_a_transaction_open_elsewhere_on_the_server_holds_back_no_event(
        pg_url: str, tmp_path: Path) -> None:
    """A session idle in a transaction (with a transaction id) in another database of
    the same server: a run's stream still sends its events, then its end. (Before
    migration 0013 the stream of a run that had ended sent its end after a few polls
    without a single event.)"""
    import psycopg

    from tests.conftest import PG_ADMIN_URL
    from tests.store.conftest import T0, entry, start_and_claim

    async def run() -> None:
        store = open_store(pg_url)
        await store.open()
        try:
            lease = (await start_and_claim(store, "r1")).lease
            for pos in range(3):
                await store.journal_append(lease=lease, entry=entry(pos))
            await store.run_finish(lease=lease, status="completed", result="1", error=None,
                                   now=T0 + 1)
        finally:
            await store.close()

    with psycopg.connect(PG_ADMIN_URL) as elsewhere:
        elsewhere.execute("SELECT pg_current_xact_id()")  # open, with an xid, idle
        asyncio.run(run())
        with serving(pg_url, tmp_path) as served:
            got = []
            with httpx.stream("GET", served.url + "/api/v1/runs/r1/events",
                              timeout=30) as resp:
                for ev in parse_sse(resp.iter_lines()):
                    got.append(ev)
                    if ev.event == "end":
                        break
        elsewhere.rollback()
    assert [e.event for e in got] == ["status", "op", "op", "op", "status", "end"]
    assert got[-2].data == {"status": "completed", "waiting_for": None}


def test_a_stream_opened_with_a_token_since_removed_ends(tmp_path: Path) -> None:
    """A token removed from the token file stops working for the requests that come,
    and now for the event stream opened with it before, which went on sending the run's
    events (a model's streamed answer included) for as long as its connection stayed
    open. A real ``tether serve``: the run ends (cancelled) after the token is gone, and
    the stream says nothing of it."""
    import threading

    from tests.web.helpers import ADMIN, READ

    db = f"sqlite:///{tmp_path}/t.db"
    with serving(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n") as served:
        token_file = next(tmp_path.glob("tokens-*.txt"))
        admin = {"Authorization": f"Bearer {ADMIN}"}
        read = {"Authorization": f"Bearer {READ}"}
        r = httpx.post(f"{served.url}/api/v1/runs", headers=admin, timeout=30,
                       json={"workflow": "greet", "input": ["x"], "run_id": "s1"})
        assert r.status_code == 201, r.text
        lines: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{served.url}/api/v1/runs/s1/events", headers=read,
                              timeout=httpx.Timeout(60, read=90)) as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    lines.append(line)
                    opened.set()

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        assert opened.wait(30)
        token_file.write_text(f"admin:{ADMIN}\n")  # READ removed
        for _ in range(600):
            if httpx.get(f"{served.url}/api/v1/runs/s1", headers=read,
                         timeout=30).status_code == 401:
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError("the removed token still works")
        r = httpx.post(f"{served.url}/api/v1/runs/s1/cancel", headers=admin, timeout=30)
        assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
        reader.join(60)
        assert not reader.is_alive(), lines
    events = list(parse_sse(iter(lines)))
    assert all(e.event != "end" for e in events), events
    assert all(not (isinstance(e.data, dict) and e.data.get("status") == "cancelled")
               for e in events), events
    assert "event stream ended: the token it was opened with no longer counts" in \
        served.log.read_text()
