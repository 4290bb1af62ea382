"""The app that ``tether worker tests.ai.cut_worker_app:app`` serves in the crash test of
paid failed LLM attempts (``tests/ai/test_paid_cuts_crash.py``): a workflow whose
streamed Anthropic call is cut and retried, then a second call under the same budget.

Environment (read at import): ``AGENT_LLM_URL``, the scripted server's Anthropic base URL.

The retry interval (1.8 s, no backoff) is shorter than ``tether worker``'s sticky wait
(2 s): the worker keeps the run between attempts, so a worker killed then dies holding
it (a crash, not a release).
"""

from __future__ import annotations

import os

import tether
from tether import App
from tether.ai import LLM, Budget, set_budget, user_message

app = App()

#: Seconds between two attempts of the call (below the worker's 2 s sticky wait).
RETRY_INTERVAL = 1.8

llm = LLM("anthropic:claude-sonnet-4-5",
          base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9"), api_key="test",
          breaker=None,
          retry=tether.RetryPolicy(initial_interval=RETRY_INTERVAL, backoff=1.0,
                                   max_attempts=None))


@app.workflow
async def paid_cuts(limit: int) -> str:
    """A streamed call (its first attempts are cut), then a call its budget may refuse."""
    set_budget(Budget(tokens=limit, on_exceed="fail"))
    first = await llm.stream([user_message("First.")])
    await llm.chat([user_message("Second.")])
    return first.text or ""
