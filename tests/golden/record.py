"""Record the golden histories: run each representative workflow in a ``TestEnv`` (a
scripted LLM server answers the model) and write ``tether export``'s JSON of every run
to ``tests/golden/<name>.json``.

    python -m tests.golden.record     (from the repository root; review the diff)
    python -m tests.golden.record agent_interrupted   (write only the named files)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tether.testing import Reply, ScriptedLLMServer, TestEnv, export_history

HERE = Path(__file__).parent
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


async def record(only: list[str] | None = None) -> list[str]:
    server = ScriptedLLMServer([
        Reply("A long summary of the text.", input_tokens=20, output_tokens=8),
        Reply("Short.", input_tokens=12, output_tokens=2),
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"},
                           "id": "call_1"}], input_tokens=30, output_tokens=9),
        Reply("It is sunny in Paris.", input_tokens=40, output_tokens=7),
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}, "id": "call_2"},
                          {"name": "long_lookup", "arguments": {"topic": "durable execution"},
                           "id": "call_3"}], input_tokens=50, output_tokens=12),
        Reply("Oslo is sunny; I stopped the lookup.", input_tokens=70, output_tokens=9),
        # budget_guard: 400 tokens a call; the guarded call waits, then its fourth.
        *(Reply(f"Answer {i}.", input_tokens=390, output_tokens=10) for i in range(5)),
        # budget_gathered: its outline spends 60 of 100 tokens; the third part's prompt
        # does not fit what is left, the first two do (the code that recorded it sent
        # them together); the third goes after a raise.
        Reply("Intro, body, end.", input_tokens=40, output_tokens=20),
        Reply("Part one.", input_tokens=20, output_tokens=5),
        Reply("Part two.", input_tokens=20, output_tokens=5),
        Reply("Part three.", input_tokens=60, output_tokens=5),
        # budget_waiting: its outline spends the whole budget: all three parts wait; it
        # gets one raise.
        Reply("Intro, body, end.", input_tokens=40, output_tokens=60),
        Reply("Part one.", input_tokens=20, output_tokens=5),
    ])
    await server.start()
    os.environ["TETHER_GOLDEN_LLM_URL"] = server.base_url
    from tests.golden import workflows as w

    written = []
    try:
        async with TestEnv(w.app, start_time=START, llm=server) as env:
            app = env.app
            runs: dict[str, Any] = {}
            order = w.Order("book", 2)
            runs["checkout"] = await app.start(w.checkout, order, run_id="golden-checkout")
            await env.result(runs["checkout"])
            children = [r for r in await app.list_runs() if r.parent_run_id == "golden-checkout"]
            runs["checkout_ship"] = app.handle(children[0].run_id)
            runs["approval_waiting"] = await app.start(w.approval, "budget",
                                                       run_id="golden-approval-waiting")
            await env.settle()
            runs["approval_done"] = await app.start(w.approval, "hiring",
                                                    run_id="golden-approval-done")
            await app.signal("golden-approval-done", "decision", {"ok": True})
            await env.result(runs["approval_done"])
            runs["report_failed"] = await app.start(w.report, run_id="golden-report-failed")
            await env.settle()
            runs["long_wait_cancelled"] = await app.start(w.long_wait,
                                                          run_id="golden-long-wait")
            await env.settle()
            await app.cancel("golden-long-wait")
            await env.settle()
            runs["summarize"] = await app.start(w.summarize, "Durable execution.",
                                                run_id="golden-summarize")
            await env.result(runs["summarize"])
            runs["assistant"] = await app.start("assistant", "Weather in Paris?",
                                                run_id="golden-assistant")
            await env.result(runs["assistant"])
            runs["agent_interrupted"] = await app.start(
                "researcher", "Weather in Oslo, and read up on durable execution.",
                run_id="golden-agent-interrupted")
            while not w.LOOKUPS:  # the turn's long tool call runs: cut it
                await asyncio.sleep(0.01)
            await app.signal("golden-agent-interrupted", "interrupt", "skip the lookup")
            await env.result(runs["agent_interrupted"])
            runs["budget_guard"] = await app.start(w.budget_guard, "tides",
                                                   run_id="golden-budget-guard")
            for tokens in (1000, 20_000):  # the guard's raise, then the run's
                await env.settle()
                await app.signal("golden-budget-guard", "budget", {"tokens": tokens})
            await env.result(runs["budget_guard"])
            runs["budget_gathered"] = await _budget_run(env, w, "golden-budget-gathered")
            runs["budget_waiting"] = await _budget_run(env, w, "golden-budget-waiting")
            for name, handle in runs.items():
                if only and name not in only:
                    continue
                history = _without_tracebacks(await export_history(app, handle.run_id))
                path = HERE / f"{name}.json"
                path.write_text(json.dumps(history, indent=2, ensure_ascii=False) + "\n")
                written.append(f"{path.name}: {history['status']}, "
                               f"{len(history['journal'])} journal entries")
    finally:
        await server.stop()
    return written


async def _budget_run(env: TestEnv, w: Any, run_id: str) -> Any:
    """Run ``budget_gathered`` to where its refused calls wait, then raise its budget
    once."""
    handle = await env.app.start(w.budget_gathered, "tides", run_id=run_id)
    await env.settle()
    await env.app.signal(run_id, "budget", {"tokens": 1000})
    await env.settle()
    return handle


def _without_tracebacks(value: Any) -> Any:
    """Tracebacks name this checkout's paths: left out of the committed files."""
    if isinstance(value, dict):
        return {k: _without_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


def main() -> int:
    for line in asyncio.run(record(sys.argv[1:] or None)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
