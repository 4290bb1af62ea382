"""The cursor a running run's page follows its events from (``last_event_id``): read
from the run's newest events, it is the point the whole event log gives (after the
newest event, or just before the first chunk of the LLM answer streaming now), and the
page's stream from it carries every later event once, the whole answer included."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from tests.store.conftest import T0, entry, start_and_claim
from tests.web.test_api import _api
from tether import App
from tether.serve import _events
from tether.store import Store


async def _all(store: Store, run_id: str) -> list[Any]:
    return await store.run_events_read(run_id=run_id, after=None, limit=100000)


async def _chunk(store: Store, run_id: str, position: int | None, text: str) -> None:
    data: dict[str, Any] = {"type": "llm.chunk", "text": text}
    if position is not None:
        data["position"] = position
    await store.run_publish(run_id=run_id, data=json.dumps(data))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_cursor_from_the_newest_events_is_the_one_of_every_event(
        app: App, seed: int) -> None:
    """Runs of LLM answers (some retried after a failed attempt, some longer than the
    window), steps in parallel with them, live-status changes and chunks of no call:
    after each event, for windows of 1 to 5 events, the cursor is the one computed
    over every event of the run."""
    await app._open()
    store = app.store
    rid = f"r{seed}"
    lease = (await start_and_claim(store, rid)).lease
    rng = random.Random(seed)
    answer: int | None = None  # the position of the LLM call streaming now
    next_position, mid_answer = 0, 0
    for i in range(90):
        roll = rng.random()
        if answer is not None and roll < 0.55:
            await _chunk(store, rid, answer, f"t{i}")
        elif answer is not None and roll < 0.62:
            await store.journal_append(lease=lease, entry=entry(answer))  # it finished
            answer = None
        elif answer is not None and roll < 0.66:  # an attempt failed; it streams again
            failed = entry(answer, "pending")
            failed.error = '{"type": "E", "message": "no"}'
            await store.journal_append(lease=lease, entry=failed)
        elif answer is None and roll < 0.6:
            answer, next_position = next_position, next_position + 1
            await _chunk(store, rid, answer, f"t{i}")
        elif roll < 0.8:  # a step running alongside
            await store.journal_append(lease=lease, entry=entry(next_position))
            next_position += 1
        elif roll < 0.95:
            await store.run_set_status_info(lease=lease, info=str(i), now=T0)
        else:
            await _chunk(store, rid, None, "other")
        expected = await _events._resume_point(app, rid, None)
        mid_answer += expected != (await _all(store, rid))[-1].event_id
        for window in range(1, 6):
            assert await _events.last_event_id(app, rid, window=window) == expected, (
                i, window)
    assert mid_answer > 10  # (the streaming cases were met, not only "the newest")


async def test_a_window_that_tells_reads_no_older_event(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the newest events tell where the page starts (an answer begun among them, or
    one that finished), the run's older events are not read."""
    await app._open()
    store = app.store
    lease = (await start_and_claim(store, "r")).lease
    for pos in range(30):
        await _chunk(store, "r", pos, "a")
        await store.journal_append(lease=lease, entry=entry(pos))
    every = await _all(store, "r")

    async def refuse(**kw: Any) -> Any:
        raise AssertionError("read every event")

    monkeypatch.setattr(store, "run_events_read", refuse)
    assert await _events.last_event_id(app, "r", window=5) == every[-1].event_id
    monkeypatch.undo()
    await store.journal_append(lease=lease, entry=entry(30))
    await _chunk(store, "r", 31, "b")
    await store.run_set_status_info(lease=lease, info="x", now=T0)
    await _chunk(store, "r", 31, "c")
    before = (await _all(store, "r"))[-4].event_id  # the op of position 30
    monkeypatch.setattr(store, "run_events_read", refuse)
    assert await _events.last_event_id(app, "r", window=5) == before


def _frames(text: str) -> list[tuple[str | None, str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^(id|event|data): ?(.*)$", block, re.M))
        if "event" in fields:
            out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


async def test_a_page_opened_mid_answer_longer_than_the_window_streams_it_whole(
        store_url: str) -> None:
    """A page opened while an answer longer than the window streams starts just before
    its first chunk; its stream, followed to the run's end, carries every later event
    once, in order: the whole answer, none of the answer before it."""
    async for api in _api(store_url, None):
        store = api.app.store
        lease = (await start_and_claim(store, "r")).lease
        for i in range(3):
            await _chunk(store, "r", 0, f"old{i}")
        await store.journal_append(lease=lease, entry=entry(0))
        await store.run_set_status_info(lease=lease, info="thinking", now=T0)
        for i in range(_events.WINDOW + 20):
            await _chunk(store, "r", 1, f"a{i} ")
            if i % 100 == 50:
                await store.run_set_status_info(lease=lease, info=str(i), now=T0)
        page = (await api.http.get("/runs/r")).text
        after = re.search(r'data-after="([^"]*)"', page)
        assert after is not None
        every = await _all(store, "r")
        first = next(i for i, e in enumerate(every)
                     if e.kind == "chunk" and json.loads(e.data or "")["position"] == 1)
        assert after.group(1) == every[first - 1].event_id  # the "thinking" live event
        for i in range(5):
            await _chunk(store, "r", 1, f"b{i} ")
        await store.journal_append(lease=lease, entry=entry(1))
        await store.run_finish(lease=lease, status="completed", result="1", error=None,
                               now=T0 + 1)
        r = await api.http.get("/api/v1/runs/r/events", params={"after": after.group(1)})
        frames = _frames(r.text)
        every = await _all(store, "r")
        assert [f[0] for f in frames[:-1]] == [e.event_id for e in every[first:]]
        assert frames[-1][1] == "end"
        text = "".join(d["text"] for _, kind, d in frames if kind == "chunk")
        assert text == "".join([f"a{i} " for i in range(_events.WINDOW + 20)]
                               + [f"b{i} " for i in range(5)])
