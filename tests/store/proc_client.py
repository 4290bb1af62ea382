"""A store client run as its own process by ``test_processes.py``.

    python -m tests.store.proc_client rate URL KEY LIMIT PERIOD TRIES
        take 1 from the bucket KEY up to TRIES times (wall clock); print how many were
        granted.
    python -m tests.store.proc_client publish URL RUN_ID READY_FILE COUNT
        publish "probe" events for RUN_ID until READY_FILE exists (the subscriber got
        one), then COUNT numbered events and a large one, in order.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from tether.store import open_store


async def rate(url: str, key: str, limit: float, period: float, tries: int) -> None:
    store = open_store(url)
    await store.open()
    granted = 0
    try:
        for _ in range(tries):
            wait = await store.rate_acquire(key=key, limit=limit, period=period, amount=1,
                                            now=time.time())
            granted += wait == 0.0
    finally:
        await store.close()
    print(granted)


def event(i: int) -> str:
    return f"event {i}"


BIG = "ü" * 9000 + "end"  # 18,003 UTF-8 bytes


async def publish(url: str, run_id: str, ready: str, count: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if time.monotonic() > deadline:
                raise SystemExit("the subscriber never became ready")
            await store.run_publish(run_id=run_id, data="probe")
            await asyncio.sleep(0.05)
        for i in range(count):
            await store.run_publish(run_id=run_id, data=event(i))
        await store.run_publish(run_id=run_id, data=BIG)
    finally:
        await store.close()


def main() -> None:
    mode, url, *rest = sys.argv[1:]
    if mode == "rate":
        asyncio.run(rate(url, rest[0], float(rest[1]), float(rest[2]), int(rest[3])))
    elif mode == "publish":
        asyncio.run(publish(url, rest[0], rest[1], int(rest[2])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
