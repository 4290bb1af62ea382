"""Retention of content-addressed message texts (tether.ai's conversations): a text is
deleted with the last run that references it, never under a run that still does."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.life.test_continue_and_retention import check_integrity
from tether import App
from tether.ai import LLM, user_message
from tether.ai._messages import address, load_conversation
from tether.testing.llm_server import Reply, ScriptedLLMServer

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 20}


def build(url: str, server: ScriptedLLMServer) -> tuple[App, LLM]:
    app = App(url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)

    @app.workflow
    async def ask(question: str) -> str:
        reply = await llm.chat([SYSTEM, user_message(question)])
        return reply.text or ""

    return app, llm


def keys_of(question: str) -> set[str]:
    return set(address([SYSTEM, user_message(question)]).blobs)


async def stored(app: App, keys: set[str]) -> set[str]:
    return set(await app.store.blob_get(keys=sorted(keys)))


async def finished_before(app: App) -> float:
    return app.clock.now() + 1


async def test_a_shared_text_lives_as_long_as_a_run_references_it(store_url: str) -> None:
    """Two runs share the system prompt's texts: purging one keeps them (the other
    still reads its whole conversation), purging both removes every text of both."""
    async with ScriptedLLMServer([Reply("a"), Reply("b"), Reply("c")]) as server:
        app, llm = build(store_url, server)
        async with app, app.worker():
            for rid, q in (("one", "first question"), ("two", "second question")):
                assert await (await app.start("ask", q, run_id=rid)).result(timeout=30)
            # A fork of "one" references what "one" did (its copied journal does).
            fork = await app.fork("one", at=1, new_run_id="one-fork")
            await fork.result(timeout=30)
        await llm.aclose()
        one, two = keys_of("first question"), keys_of("second question")
        shared = one & two
        assert len(shared) == 2 and len(one | two) == 6  # system message + its node
        async with App(store_url) as admin:
            assert await stored(admin, one | two) == one | two
            report = await admin.store.run_purge(finished_before=await finished_before(admin),
                                                 statuses=["completed"], limit=1)
            assert report.run_ids == ["one"] and report.blobs == 0  # the fork has them
            report = await admin.store.run_purge(finished_before=await finished_before(admin),
                                                 statuses=["completed"], limit=1)
            assert report.run_ids == ["two"]
            assert report.blobs == 2  # its question and its node; the system's stay
            assert await stored(admin, one | two) == one
            head = address([SYSTEM, user_message("first question")]).head
            assert await load_conversation(admin.store, head) == [
                SYSTEM, user_message("first question")]
            report = await admin.store.run_purge(finished_before=await finished_before(admin),
                                                 statuses=["completed"])
            assert report.run_ids == ["one-fork"] and report.blobs == 4
            assert report.as_dict()["blobs"] == 4
            assert await stored(admin, one | two) == set()
        await check_integrity(store_url, runs=0)


async def test_erase_deletes_the_texts_only_that_run_referenced(store_url: str) -> None:
    async with ScriptedLLMServer([Reply("a"), Reply("b")]) as server:
        app, llm = build(store_url, server)
        async with app, app.worker():
            for rid, q in (("one", "my secret"), ("two", "other")):
                await (await app.start("ask", q, run_id=rid)).result(timeout=30)
            report = await app.store.run_erase(run_id="one", now=app.clock.now())
            assert report.blobs == 2
            mine, theirs = keys_of("my secret"), keys_of("other")
            assert await stored(app, mine | theirs) == theirs
            await app.get_run("one")  # still shows
        await llm.aclose()


async def test_a_reference_stored_while_purging_is_never_left_dangling(
        store_url: str) -> None:
    """A run storing a text that the last other referrer's purge is deleting at that
    very moment: whichever commits first, the text is there afterwards."""
    app = App(store_url)

    @app.workflow
    async def noop() -> int:
        return 1

    async with app, app.worker():
        for i in range(12):
            rid = f"old-{i}"
            await (await app.start(noop, run_id=rid)).result(timeout=30)
            text = f"text {i} " + uuid.uuid4().hex
            blobs = {f"k-{i}": text}
            await app.store.blob_put(blobs=blobs, run_id=rid)
            results: list[Any] = await asyncio.gather(
                app.store.run_purge(finished_before=app.clock.now() + 1,
                                    statuses=["completed"]),
                app.store.blob_put(blobs=blobs, run_id=f"live-{i}"))
            assert results[0].run_ids == [rid]
            assert await app.store.blob_get(keys=[f"k-{i}"]) == blobs
        # The live runs' references keep the texts through later purges too.
        await app.store.run_purge(finished_before=app.clock.now() + 1,
                                  statuses=["completed"])
        assert len(await app.store.blob_get(keys=[f"k-{i}" for i in range(12)])) == 12


async def test_encrypted_texts_are_deleted_with_their_last_run(store_url: str) -> None:
    """Under AesGcm the texts are stored under keyed digests, encrypted: purge and erase
    still delete each with the last run that references it (the references name the
    keys as stored), and keep the shared ones while a run needs them."""
    from tether._codec import Codec
    from tether.encryption import AesGcm

    hook = AesGcm({"k1": bytes(range(32))})
    codec = Codec(hook=hook)

    def sealed_keys(question: str) -> set[str]:
        return {codec.blob_keys(d)[0] for d in keys_of(question)}

    async with ScriptedLLMServer([Reply("a"), Reply("b"), Reply("c")]) as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)
        app = App(store_url, payload_hook=hook)

        @app.workflow
        async def ask(question: str) -> str:
            return (await llm.chat([SYSTEM, user_message(question)])).text or ""

        async with app, app.worker():
            for rid, q in (("one", "first question"), ("two", "second question"),
                           ("three", "third question")):
                assert await (await app.start("ask", q, run_id=rid)).result(timeout=30)
        await llm.aclose()
        one, two, three = (sealed_keys(q) for q in ("first question", "second question",
                                                    "third question"))
        async with App(store_url) as admin:
            assert await stored(admin, one | two | three) == one | two | three
            assert await stored(admin, keys_of("first question")) == set()  # (not plain)
            report = await admin.store.run_purge(finished_before=await finished_before(admin),
                                                 statuses=["completed"], limit=1)
            assert report.run_ids == ["one"] and report.blobs == 2  # the system's stay
            assert await stored(admin, one | two | three) == two | three
            report = await admin.store.run_erase(run_id="two", now=admin.clock.now())
            assert report.blobs == 2
            assert await stored(admin, one | two | three) == three
        async with App(store_url, payload_hook=hook) as reader:
            texts = await reader.codec.open_blobs(reader.store.blob_get,
                                                  sorted(keys_of("third question")))
            assert set(texts) == keys_of("third question")
