"""Found by the connection-resetting proxy: a claim whose transaction committed but
whose reply was lost left the run owned by a live worker that did not execute it, and
that worker's heartbeat renewed the run's lease for as long as it had other work. The
worker now hands such runs back at its next heartbeat."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.engine.helpers import status_is, wait_for
from tether import App, StoreUnavailable


async def test_a_claim_whose_reply_was_lost_is_handed_back(store_url: str) -> None:
    app = App(store_url)
    release_long = asyncio.Event()

    @app.step
    async def hold() -> str:
        await release_long.wait()
        return "long done"

    @app.workflow(name="long")
    async def long() -> str:
        return await hold()

    @app.workflow(name="quick")
    async def quick() -> str:
        return "quick done"

    store: Any = app.store
    original = store.run_claim
    lose_next_reply = False

    async def claim(**kwargs: Any) -> Any:
        nonlocal lose_next_reply
        claimed = await original(**kwargs)
        if lose_next_reply and claimed:
            lose_next_reply = False
            raise StoreUnavailable("connection lost after COMMIT (simulated)")
        return claimed

    store.run_claim = claim
    try:
        async with app.worker(lease_seconds=1.0, poll_interval=0.05):
            await app.start("long", run_id="long")
            await wait_for(lambda: status_is(app, "long", "running"), timeout=10)
            lose_next_reply = True
            handle = await app.start("quick", run_id="quick")
            # Without the hand-back the heartbeat for "long" would keep renewing
            # "quick"'s lease: it would only run after "long" ends.
            assert await handle.result(timeout=30) == "quick done"
            assert await status_is(app, "long", "running")
            release_long.set()
            assert await app.handle("long").result(timeout=30) == "long done"
    finally:
        await app.close()
