"""Server-Sent Events of one run, read from the store (``run_events_read``).

The events live in the store (migration 0004), so their ids are the store's: a client
that reconnects with ``Last-Event-ID`` to any ``serve`` process on the same store
resumes right after the last event it got, and gets each event once. This process
keeps nothing but the cursor of each open stream.

Event types (the SSE ``event:`` field; ``data:`` is JSON):

- ``op``: a journal entry finished, failed, or failed an attempt and will retry:
  ``{"position", "kind", "name", "status", "attempts"}``.
- ``status``: the run's status changed: ``{"status", "waiting_for"}``.
- ``live``: the run's live status changed: ``{"status_info": ...}`` (the value now).
- ``cancel``: a cancel was requested of the run and its status stays (a waiting,
  sleeping, queued or running run; one the cancel ends gets a ``status`` event):
  ``{"cancel_requested_at"}``. A repeat sends none.
- ``chunk``: a streamed LLM chunk: ``{"type": "llm.chunk", "text", "position",
  "attempt"}`` (or another event an LLM stream published).
- ``end``: the run has ended and every event was sent; it has no id, and the stream
  closes after it.

New events wake a stream at once when they come with a live notification (LLM chunks);
otherwise streams poll the store every ``POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from tether import App
from tether._clock import wait_event
from tether._codec import SLOT_STATUS
from tether._show import opened_event, unreadable_payload
from tether._types import ENDED_VALUES
from tether.errors import StoreUnavailable
from tether.store._port import RunEvent

log = logging.getLogger("tether.serve")

POLL = 0.25
KEEPALIVE = 15.0
#: Polls without news after a run ended before a stream that never saw its end closes.
END_POLLS = 8


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    text = json.dumps(data, default=str, ensure_ascii=False)
    lines.extend(f"data: {part}" for part in text.split("\n"))
    return "\n".join(lines) + "\n\n"


#: How many of a run's newest events ``last_event_id`` reads first.
WINDOW = 500


async def last_event_id(app: App, run_id: str, *, window: int | None = None) -> str | None:
    """Where a page that shows the run as it is now should start following it: after
    the run's newest event, or, while an LLM answer is streaming, just before that
    answer's first chunk (the page does not draw partial answers, the stream does).

    That is what ``_resume_point`` finds reading every event of the run; this reads its
    newest ``window`` (``WINDOW``) events (``run_events_latest``) and, when they have no chunk, the
    run's newest chunk, and reads every event only when an answer that may still be
    streaming began before them (or, from its newest chunk on, when that chunk is older
    than them)."""
    store = app.store
    window = WINDOW if window is None else window
    events = await store.run_events_latest(run_id=run_id, limit=window + 1)
    if len(events) <= window:  # every event of the run
        return await _resume_point(app, run_id, events)
    newest = events[-1].event_id
    seen_ops: set[object] = set()  # positions of the ops after the newest chunk
    for k in range(len(events) - 1, -1, -1):
        kind, position = await _kind_position(app, run_id, events[k])
        if kind == "op":
            seen_ops.add(position)
        elif kind == "chunk":
            break
    else:  # no chunk among them: the run's newest chunk is older, if it has one
        chunks = await store.run_events_latest(run_id=run_id, limit=1, kind="chunk")
        if not chunks:
            return newest
        _, position = await _kind_position(app, run_id, chunks[0])
        if position is None or position in seen_ops:
            return newest
        # Did that call's op come after its chunk? (It comes right after, if it came.)
        after = chunks[0].event_id
        while batch := await store.run_events_read(run_id=run_id, after=after, limit=1000):
            for ev in batch:
                if await _kind_position(app, run_id, ev) == ("op", position):
                    return newest
            after = batch[-1].event_id
        return await _resume_point(app, run_id, None)  # still streaming: from its start
    # events[k] is the run's newest chunk.
    if position is None or position in seen_ops:
        return newest  # no answer is streaming (or it has finished)
    first = k  # the first chunk of the answer streaming now
    for j in range(k - 1, -1, -1):
        kind, other = await _kind_position(app, run_id, events[j])
        if kind == "chunk" and other == position:
            first = j
        elif kind == "chunk" or (kind == "op" and other == position):
            return events[first - 1].event_id  # (first > j >= 0)
    return await _resume_point(app, run_id, None)  # it may have begun before them


async def _resume_point(app: App, run_id: str, events: list[RunEvent] | None) -> str | None:
    """``last_event_id`` of every event of the run, given (``events``) or read here."""
    last: str | None = None
    resume: str | None = None
    streaming: object = None  # the position of the answer streaming now, if any
    while True:
        if events is None:
            batch = await app.store.run_events_read(run_id=run_id, after=last, limit=1000)
        else:
            batch, events = events, []
        if not batch:
            return resume if streaming is not None else last
        for ev in batch:
            kind, position = await _kind_position(app, run_id, ev)
            if kind == "chunk" and position != streaming:
                streaming, resume = position, last
            elif kind == "op" and position == streaming:
                streaming = resume = None  # that call has finished
            last = ev.event_id


async def _kind_position(app: App, run_id: str, ev: RunEvent) -> tuple[str, object]:
    """The event's kind, and for a chunk or an op, the journal position it is of."""
    if ev.kind not in ("chunk", "op"):
        return ev.kind, None
    data = await _data(app, run_id, ev.kind, ev.data)
    return ev.kind, data.get("position") if isinstance(data, dict) else None


async def stream(app: App, run_id: str, after: str | None,
                 closing: asyncio.Event | None = None,
                 allowed: Callable[[], bool] | None = None) -> AsyncIterator[str]:
    """The run's events after ``after``, then new ones as they come, until it ends, or
    until ``closing`` is set (the server is shutting down: the client reconnects, from
    the last event it saw, to whichever process answers then), or until ``allowed``
    says no more (the token the stream was opened with was removed: its reconnection
    gets the 401)."""
    store = app.store
    wake = asyncio.Event()

    async def listen() -> None:
        with contextlib.suppress(Exception):
            async for _ in store.run_events(run_id):
                wake.set()

    async def close() -> None:
        assert closing is not None
        await closing.wait()
        wake.set()

    listener = asyncio.create_task(listen(), name=f"tether-sse-{run_id}")
    closer = None if closing is None else asyncio.create_task(close())
    try:
        yield "retry: 1000\n\n"
        async with contextlib.aclosing(_frames(app, run_id, after, wake,
                                               closing, allowed)) as frames:
            async for text in frames:
                yield text
    except StoreUnavailable as exc:
        # The answer has begun, so no 503 now: end the stream. The browser comes back
        # from the last event it saw (and gets the 503 while the store is down).
        log.warning("run %s: event stream ended: %s", run_id, exc)
    finally:
        for task in (listener, closer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def _frames(app: App, run_id: str, after: str | None, wake: asyncio.Event,
                  closing: asyncio.Event | None = None,
                  allowed: Callable[[], bool] | None = None) -> AsyncGenerator[str, None]:
    """The frames of ``stream``: the events after ``after``, then, woken by ``wake`` or
    every ``POLL`` seconds, the new ones, until the run has ended or ``closing`` is set
    (then it ends with no ``end`` frame: the run has not ended), or ``allowed`` answers
    False (likewise: the token was removed)."""
    store = app.store
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    saw_end = False
    idle_polls = 0
    def revoked() -> bool:
        # A token removed from the token file stops working for the requests that come,
        # and for a stream opened with it before: until 2026-12-08 that stream went on
        # sending the run's events (a model's streamed answer included) for as long as
        # its connection stayed open. (Asked before each frame: cheap, ``Tokens``
        # looks at its file at most once a second.)
        if allowed is None or allowed():
            return False
        log.info("run %s: event stream ended: the token it was opened with no longer "
                 "counts", run_id)
        return True

    while True:
        if revoked():
            return
        batch = await store.run_events_read(run_id=run_id, after=after, limit=500)
        for ev in batch:
            data = await _data(app, run_id, ev.kind, ev.data)
            if revoked():
                return
            yield frame(ev.kind, data, ev.event_id)
            after = ev.event_id
            if ev.kind == "status" and isinstance(data, dict):
                saw_end = data.get("status") in ENDED_VALUES
        if batch:
            quiet_since = loop.time()
            continue
        run = await store.run_get(run_id)
        if run is None or run.status in ENDED_VALUES:
            # The status event that ends a run is its last one. The run is read after
            # its events, so it may show the end that committed between the two reads:
            # read the events again for it, a bounded time if this stream had sent it
            # before a reconnect.
            idle_polls += 1
            if saw_end or idle_polls > END_POLLS:
                yield frame("end", {"status": run.status if run else None})
                return
        if loop.time() - quiet_since > KEEPALIVE:
            quiet_since = loop.time()
            yield ": keepalive\n\n"
        if closing is not None and closing.is_set():
            return
        wake.clear()
        await wait_event(wake, POLL)
        if closing is not None and closing.is_set():
            return


async def _data(app: App, run_id: str, kind: str, data: str | None) -> Any:
    if kind == "live":
        run = await app.store.run_get(run_id)
        info = None
        if run is not None and run.status_info is not None:
            try:
                info = app.codec.for_run(run_id).decode(run.status_info, None, SLOT_STATUS)
            except Exception as exc:  # (a key this server lacks: a marker, no ciphertext)
                info = unreadable_payload(run.status_info, exc)
        return {"status_info": info}
    if data is None:
        return None
    try:
        doc = json.loads(opened_event(app.codec.for_run(run_id), data))
    except ValueError:
        return data
    if kind == "status" and isinstance(doc, dict) and doc.get("status") != "waiting" \
            and doc.get("waiting_for") is not None:
        # What a waiting run waits for, null in any other status, as a run's document
        # and the runs list say it (tether.store._sql): the row keeps its last wait's
        # when a signal wakes the run, and the event of its claim said
        # {"status": "running", "waiting_for": "signal go"} until 2026-12-06.
        doc["waiting_for"] = None
    return doc


_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(app: App, run_id: str, after: str | None, *,
                 head: bool = False, closing: asyncio.Event | None = None,
                 allowed: Callable[[], bool] | None = None) -> Response:
    """The run's event stream; for a ``HEAD`` request its headers alone (a stream
    started for one would never end while the run goes on, and a client's next request
    on that connection would wait behind it). ``closing``, ``allowed``: see ``stream``."""
    if head:
        return Response(media_type="text/event-stream", headers=_HEADERS)
    return StreamingResponse(stream(app, run_id, after, closing, allowed),
                             media_type="text/event-stream", headers=_HEADERS)
