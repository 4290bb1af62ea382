"""What a call's failed attempts were paid survives a real crash between its attempts.

A streamed Anthropic call in a ``tether worker`` process is cut twice after the provider
told its input usage (1,002 tokens paid each: 1,000 told, 2 of output estimated); the
worker is killed with SIGKILL while the step waits (held, not released: the retry
interval is below the sticky wait) for its third attempt. A second worker takes the run
over, is cut once more and then answered: the call record counts the three cuts, the
run's metrics count each cut once (the new worker adds only its own), and the budget the
cuts exhausted refuses the workflow's next call. Before the cost was carried on each
failure's journaled error (``failed_attempts``), the new worker's record and budget
knew only its own cut (1,002 tokens): the next call was sent past the budget.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests import CHECKOUT_PATH
from tests.engine.helpers import wait_for
from tests.integrations.crash import Workers, pending_after_paid
from tether import App, WorkflowNotFound
from tether.ai import PriceTable, Usage
from tether.errors import RunFailed
from tether.testing.llm_server import Reply, ScriptedLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.faults]

APP = "tests.ai.cut_worker_app:app"
RUN = "cut-kill"


async def start_by_name(app: App, workflow: str, *args: Any, run_id: str) -> None:
    async def started() -> bool:
        try:
            await app.start(workflow, *args, run_id=run_id)
        except WorkflowNotFound:
            return False
        return True

    await wait_for(started, timeout=30, what="a worker registers the workflow")


async def test_cut_attempts_paid_before_a_sigkill_still_count(tmp_path: Path,
                                                              store_url: str) -> None:
    cut = Reply("one two three four", input_tokens=1000, output_tokens=50,
                reset_after_chunks=2)
    script = [cut, cut, cut, Reply("one two three four", input_tokens=1000, output_tokens=50),
              Reply("never", input_tokens=10, output_tokens=1)]
    async with ScriptedLLMServer(script=script) as server:
        env = {**os.environ, "AGENT_LLM_URL": server.anthropic_base_url,
               "PYTHONPATH": CHECKOUT_PATH}
        workers = Workers(APP, store_url, env, tmp_path)
        first = workers.start()
        try:
            async with App(store_url) as app:
                await start_by_name(app, "paid_cuts", 4_000, run_id=RUN)
                pending = await pending_after_paid(app, RUN, 2)
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                # Killed while the step waited: its third attempt was not sent.
                assert len(server.requests) == 2
                workers.start()
                with pytest.raises(RunFailed, match=r"BudgetExceeded.*4056 tokens spent"):
                    await app.handle(RUN).result(timeout=60)
                info = await app.get_run(RUN)
        finally:
            workers.stop_all()
    assert pending["error"]["attrs"]["failed_attempts"]["tokens"] == 2004
    assert len(server.requests) == 4  # the next call ("Second.") was refused
    each = PriceTable().price("claude-sonnet-4-5").cost(Usage(1000, 2))
    assert info.journal[0]["result"]["failed"] == {
        "tokens": 3006, "estimated": 3, "usd": pytest.approx(3 * each)}
    # Each cut counted once: two by the killed worker, one by the new one.
    assert info.metrics["tokens.input"] == 4000 and info.metrics["tokens.output"] == 56
    assert info.metrics["tokens.estimated"] == 3 and info.metrics["llm.calls"] == 1
    # The new worker made the third and fourth attempts. (The killed worker's rows
    # of the history may lack its last attempt, or hold it as it began: its start and
    # its end are each written up to 50 ms later, and a start whose end was not
    # written reads as ``interrupted``, its worker gone.)
    tries = [(a["attempt"], a["status"], a["worker_id"]) for a in info.attempts
             if a["position"] == 0]
    assert [(n, s) for n, s, _ in tries[-2:]] == [(3, "error"), (4, "ok")], tries
    assert tries[-2][2] == tries[-1][2]
    assert {(n, s) for n, s, w in tries if w != tries[-1][2]} <= {
        (1, "error"), (2, "error"), (2, "interrupted")}, tries
