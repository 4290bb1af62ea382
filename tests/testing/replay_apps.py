"""One workflow, ``flow``, in several versions (one App each) for the replayer's tests:
``v1`` records; the others are code changes, compatible or not."""

from __future__ import annotations

from typing import Any

import tether
from tether import App

CALLS: list[str] = []  # every step execution, in any version: the replayer runs none


def _steps(app: App) -> Any:
    @app.step
    def fetch(key: str) -> str:
        CALLS.append(f"fetch {key}")
        return key.upper()

    @app.step
    def store(value: str) -> int:
        CALLS.append(f"store {value}")
        return len(value)

    @app.step
    def audit(value: str) -> None:
        CALLS.append(f"audit {value}")

    return fetch, store, audit


v1 = App("sqlite:///replay-apps-never-opened.db")
_fetch1, _store1, _ = _steps(v1)


@v1.workflow(name="flow")
async def flow_v1(key: str) -> int:
    value = await _fetch1(key)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return await _store1(value + str(go))


#: Adds an audit step behind a patch: old runs keep the old path.
v2 = App("sqlite:///replay-apps-never-opened.db")
_fetch2, _store2, _audit2 = _steps(v2)


@v2.workflow(name="flow")
async def flow_v2(key: str) -> int:
    value = await _fetch2(key)
    if tether.patched("audit-before-sleep"):
        await _audit2(value)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return await _store2(value + str(go))


#: v2 with its patch retired: the audit step alone, after ``deprecate_patch``.
v2d = App("sqlite:///replay-apps-never-opened.db")
_fetch2d, _store2d, _audit2d = _steps(v2d)


@v2d.workflow(name="flow")
async def flow_v2d(key: str) -> int:
    value = await _fetch2d(key)
    tether.deprecate_patch("audit-before-sleep")
    await _audit2d(value)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return await _store2d(value + str(go))


#: Adds the audit step without a patch: runs past position 0 no longer replay.
v3 = App("sqlite:///replay-apps-never-opened.db")
_fetch3, _store3, _audit3 = _steps(v3)


@v3.workflow(name="flow")
async def flow_v3(key: str) -> int:
    value = await _fetch3(key)
    await _audit3(value)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return await _store3(value + str(go))


#: Drops the final step: a completed run has an entry the code no longer asks for.
v4 = App("sqlite:///replay-apps-never-opened.db")
_fetch4, _store4, _ = _steps(v4)


@v4.workflow(name="flow")
async def flow_v4(key: str) -> int:
    value = await _fetch4(key)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return len(value + str(go))


#: Appends an audit step at the end: runs in flight replay, completed ones do not.
v5 = App("sqlite:///replay-apps-never-opened.db")
_fetch5, _store5, _audit5 = _steps(v5)


@v5.workflow(name="flow")
async def flow_v5(key: str) -> int:
    value = await _fetch5(key)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    n = await _store5(value + str(go))
    await _audit5(value)
    return n


#: Waits on something that is not an operation.
hangs = App("sqlite:///replay-apps-never-opened.db")


@hangs.workflow(name="flow")
async def flow_hangs(key: str) -> int:
    import asyncio

    await asyncio.Event().wait()
    return 0


#: Says itself that a recorded result no longer fits (as an integration does).
says = App("sqlite:///replay-apps-never-opened.db")
_fetch6, _store6, _ = _steps(says)


@says.workflow(name="flow")
async def flow_says(key: str) -> int:
    from tether.errors import NonDeterminismError

    value = await _fetch6(key)
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    stored = await _store6(value + str(go))
    raise NonDeterminismError(tether.run_id(), -1, ("step", "store"), None,
                              detail=f"store's recorded {stored} no longer fits")


#: Passes other arguments to two steps the journal answers (same operations).
v6 = App("sqlite:///replay-apps-never-opened.db")
_fetch7, _store7, _ = _steps(v6)


@v6.workflow(name="flow")
async def flow_v6(key: str) -> int:
    value = await _fetch7(key.strip() + "!")
    await tether.sleep(3600)
    go = await tether.wait_for_signal("go")
    return await _store7(value + str(go + 1))


#: Changes fetch's argument, then drops the sleep: an argument change, then a mismatch.
v7 = App("sqlite:///replay-apps-never-opened.db")
_fetch8, _store8, _ = _steps(v7)


@v7.workflow(name="flow")
async def flow_v7(key: str) -> int:
    value = await _fetch8(key + "!")
    go = await tether.wait_for_signal("go")
    return await _store8(value + str(go))
