"""Workflows the fault tests run in real worker processes.

Every step that really runs appends ``<pid> <what>`` to the file named by
``TETHER_TEST_SIDE_FILE``, so a test can count executions across processes.
"""

from __future__ import annotations

import asyncio
import os
import time

import tether
from tether import App, RetryPolicy

app = App()


def side(what: str) -> None:
    path = os.environ["TETHER_TEST_SIDE_FILE"]
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {what}\n")
        f.flush()
        os.fsync(f.fileno())


@app.step
async def step(i: int, delay: float) -> int:
    await asyncio.sleep(delay)
    side(f"step {i}")
    return i * i


@app.workflow
async def six_steps(delay: float) -> list[int]:
    return [await step(i, delay) for i in range(1, 7)]


@app.step(retry=RetryPolicy(initial_interval=2.0, backoff=1.0, max_interval=2.0,
                            max_attempts=None))
async def flaky(fail_times: int) -> int:
    side(f"attempt {tether.step_attempt()}")
    if tether.step_attempt() <= fail_times:
        raise ConnectionError("provider down")
    return tether.step_attempt()


@app.workflow
async def retrying(fail_times: int) -> int:
    return await flaky(fail_times)


@app.step
async def before_wait() -> str:
    side("before")
    return "prepared"


@app.workflow
async def human_in_the_loop() -> dict[str, object]:
    prepared = await before_wait()
    approval = await tether.wait_for_signal("approve")
    side("after")
    return {"prepared": prepared, "approval": approval}


@app.workflow
async def timer(seconds: float) -> float:
    await tether.sleep(seconds)
    side("woke")
    return seconds


@app.workflow(queue="tools")
async def tool(q: str, delay: float) -> str:
    await step(1, delay)
    await step(2, delay)
    side(f"tool done {q}")
    return f"result of {q}"


@app.workflow(queue="agents")
async def agent(q: str, delay: float) -> str:
    answer = await tether.call(tool, q, delay)
    side(f"agent got {answer}")
    return answer


def _first_run(what: str) -> bool:
    """Whether no step has written ``what`` to the side file yet."""
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a+") as f:
        f.seek(0)
        return not any(line.split(" ", 1)[1].startswith(what) for line in f)


@app.step(retry=RetryPolicy(initial_interval=0.1, max_attempts=2))
async def hangs_first(fail_after: bool) -> int:
    """Hangs in its first execution (the test kills the worker there); a later one
    fails (``fail_after``) or returns its attempt number."""
    n = tether.step_attempt()
    first = _first_run(f"hangs_first {fail_after} ")
    side(f"hangs_first {fail_after} {n}")
    if first:
        await asyncio.sleep(600)
    if fail_after:
        raise ConnectionError(f"attempt {n} failed")
    return n


@app.step(retry=RetryPolicy(max_attempts=1))
async def hangs_first_once() -> int:
    """No retries: its first execution hangs (cut off by the test's kill -9)."""
    n = tether.step_attempt()
    first = _first_run("hangs_first_once ")
    side(f"hangs_first_once {n}")
    if first:
        await asyncio.sleep(600)
    return n


@app.workflow
async def cut_off(kind: str) -> int:
    if kind == "once":
        return await hangs_first_once()
    return await hangs_first(kind == "fail")


@app.step
async def ostep(x: int) -> int:
    """Branch 1's first step (x=1) ends after branch 2's second (x=20); branch 1's
    second (x=10) waits for a ``go`` file next to the side file."""
    side(f"ostep {x}")
    path = os.environ["TETHER_TEST_SIDE_FILE"]
    go = os.path.join(os.path.dirname(path), "go")
    while x == 1 and "ostep 20\n" not in open(path).read():
        await asyncio.sleep(0.02)
    while x == 10 and not os.path.exists(go):
        await asyncio.sleep(0.02)
    return x


async def _obranch(i: int) -> int:
    a = await ostep(i)
    return await ostep(a * 10)


@app.workflow
async def ordered_branches() -> list[int]:
    return list(await asyncio.gather(_obranch(1), _obranch(2)))


@app.step
async def gated(x: int) -> int:
    """Ends once a ``go`` file is next to the side file."""
    side(f"gated {x}")
    go = os.path.join(os.path.dirname(os.environ["TETHER_TEST_SIDE_FILE"]), "go")
    while not os.path.exists(go):
        await asyncio.sleep(0.02)
    return x


async def _step_then_gated(x: int) -> int:
    return await step(x, 0.0) + await gated(x)


@app.workflow
async def steps_beside_a_signal() -> list[object]:
    """A branch of two steps (the second held by the test) beside a branch that waits
    for a signal (parked while the steps run)."""
    return list(await asyncio.gather(_step_then_gated(3), tether.wait_for_signal("approve")))


@app.step
async def slow_side_effect(delay: float) -> int:
    """A side effect that takes ``delay`` seconds: ``begin`` and ``end`` in the side file."""
    side("begin")
    time.sleep(delay)  # (blocks the loop: a frozen worker's body ends before its heartbeat)
    side("end")
    return os.getpid()


@app.workflow
async def one_slow_step(delay: float) -> int:
    return await slow_side_effect(delay)
