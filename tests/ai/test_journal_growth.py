"""The journal does not grow quadratically with a conversation: a 100-turn chat with
2 KB messages stores each message once; replaying it makes no provider call."""

from __future__ import annotations

import os
from typing import Any

import apsw

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.ai import LLM, user_message
from tether.ai._messages import canonical_json
from tether.testing import Reply, ScriptedLLMServer
from tether.testing.llm_server import RecordedRequest

TURNS = 100
MESSAGE_BYTES = 2048


def filler(tag: str) -> str:
    """A distinct message of exactly MESSAGE_BYTES characters."""
    return (tag + " " + "lorem ipsum dolor sit amet " * 100)[:MESSAGE_BYTES]


def answer(req: RecordedRequest) -> Reply:
    turn = req.last_user_text().split(" ", 1)[0]
    return Reply(filler(f"answer-to-{turn}"), input_tokens=10, output_tokens=500)


def store_bytes(path: str, run_id: str) -> dict[str, int]:
    """What the run occupies: journal arguments, results and errors; blobs (key and
    text); and the database file itself after a checkpoint."""
    conn = apsw.Connection(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        journal = conn.execute(
            "SELECT coalesce(sum(length(coalesce(args, '')) + length(coalesce(result, '')) "
            "+ length(coalesce(error, ''))), 0) FROM tether_journal WHERE run_id = ?",
            (run_id,)).fetchone()[0]
        blobs = conn.execute("SELECT coalesce(sum(length(key) + length(value)), 0) "
                             "FROM tether_blobs").fetchone()[0]
    finally:
        conn.close()
    return {"journal": int(journal), "blobs": int(blobs), "file": os.path.getsize(path)}


async def test_a_hundred_turns_store_each_message_once(tmp_path: Any) -> None:
    """100 turns, a 2 KB user message and a 2 KB answer each: the journal and blobs hold
    under 2x the distinct message bytes (naive journaling, one prompt copy per call,
    would hold about 50x); after a release, replaying all 100 calls sends nothing."""
    path = str(tmp_path / "growth.db")
    app = App(f"sqlite:///{path}")
    async with ScriptedLLMServer(responder=answer) as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

        @app.workflow
        async def chat() -> int:
            messages: list[dict[str, Any]] = []
            for turn in range(TURNS):
                messages.append(user_message(filler(f"turn-{turn}")))
                reply = await llm.chat(messages)
                messages.append(reply.to_message())
            await tether.wait_for_signal("replay")
            return len(messages)

        async with app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(chat, run_id="long")
            await wait_for(lambda: status_is(app, "long", "waiting"), timeout=120)
            sent = [r for r in server.requests if r.protocol == "openai"]
            assert len(sent) == TURNS
            size = store_bytes(path, "long")
            await app.signal("long", "replay")  # released: the resume replays 100 calls
            assert await handle.result(timeout=120) == 2 * TURNS
        assert len([r for r in server.requests if r.protocol == "openai"]) == TURNS
        final = sent[-1].body["messages"]
        await llm.aclose()
    metrics = (await app.get_run("long")).metrics
    assert metrics["llm.calls"] == TURNS and metrics["saved.calls"] == TURNS
    await app.close()

    distinct = sum(len(canonical_json(m).encode()) for m in final)
    distinct += len(canonical_json({"role": "assistant", "content": filler("x")}).encode())
    naive = sum(len(canonical_json(r.body["messages"]).encode()) for r in sent)
    stored = size["journal"] + size["blobs"]
    print(f"\n{TURNS} turns x 2 messages of {MESSAGE_BYTES} B: distinct {distinct:,} B; "
          f"stored {stored:,} B (journal {size['journal']:,} + blobs {size['blobs']:,}) "
          f"= {stored / distinct:.2f}x; database file {size['file']:,} B "
          f"= {size['file'] / distinct:.2f}x; naive (a prompt copy per call) {naive:,} B "
          f"= {naive / distinct:.1f}x")
    assert stored <= 2 * distinct
    # The file is larger than its contents: a 2 KB row does not share a 4 KB SQLite
    # page with another one, so about half of each page is slack (docs/llm.md).
    assert size["file"] <= 5 * distinct
    assert naive >= 40 * distinct
