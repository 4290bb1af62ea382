"""The demo's workflow: six steps of a research chain. Each step appends a line to the
file named by ``TETHER_DEMO_LOG`` when it really runs, so the demo can count them."""

from __future__ import annotations

import asyncio
import os

import tether

app = tether.App()


def _log(line: str) -> None:
    path = os.environ.get("TETHER_DEMO_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {line}\n")


@app.step
async def plan(topic: str) -> list[str]:
    await asyncio.sleep(0.4)
    _log("plan")
    return [f"{topic}: history", f"{topic}: engines", f"{topic}: trade-offs"]


@app.step
async def research(question: str) -> str:
    await asyncio.sleep(0.4)
    _log(f"research {question}")
    return f"notes on {question!r}"


@app.step
async def summarize(notes: list[str]) -> str:
    await asyncio.sleep(0.4)
    _log("summarize")
    return " / ".join(notes)


@app.step
async def review(summary: str) -> dict[str, object]:
    await asyncio.sleep(0.4)
    _log("review")
    return {"summary": summary, "approved": True, "words": len(summary.split())}


@app.workflow
async def research_chain(topic: str) -> dict[str, object]:
    questions = await plan(topic)                       # step 1
    notes = [await research(q) for q in questions]      # steps 2, 3, 4
    summary = await summarize(notes)                    # step 5
    return await review(summary)                        # step 6
