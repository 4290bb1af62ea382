"""Security canaries (issue 12): secrets planted in a run's input, a tool result, an
exception and a signal are searched for, byte for byte, in the store's files, the logs
and the CLI's output. Without protection they are there (the scan works); with the
opt-in AES-GCM payload hook no known plaintext is left, error messages included; the
wrong key fails closed; a redaction hook removes the API key before it is journaled."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

import tether
from tests import forked
from tether import App, PayloadError
from tether.encryption import AesGcm, PayloadContext, PayloadDecryptError, Redact

API_KEY = "sk-canary-5f3a9c1e7b2d4680"
PERSON = "Ada Canary-Lovelace, born 1815-12-10, card 4111 1111 1111 1111"
TOOL = "tool-result-canary-9e8d7c"
SECRET_ERR = "exception-canary-0b1c2d"
SIGNAL = "signal-canary-a1b2c3"
CANARIES = [API_KEY, PERSON, TOOL, SECRET_ERR, SIGNAL]
KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))


def build(url: str, hook: object = None) -> App:
    app = App(url, payload_hook=hook)  # type: ignore[arg-type]

    @app.step
    async def call_tool(prompt: str, api_key: str) -> str:
        return f"{TOOL} for {prompt[:3]}"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def leaky() -> None:
        raise RuntimeError(f"provider said no to {API_KEY}: {SECRET_ERR}")

    @app.workflow(name="agent")
    async def agent(prompt: str, api_key: str) -> dict[str, str]:
        out = await call_tool(prompt, api_key)
        approval = await tether.wait_for_signal("approve")
        try:
            await leaky()
        except Exception as exc:
            return {"tool": out, "approval": approval, "error": str(exc)}
        return {}

    @app.workflow(name="fails")
    async def fails() -> None:
        await leaky()

    return app


def found(folder: Path, text: str) -> int:
    needle = text.encode()
    return sum(p.read_bytes().count(needle) for p in folder.iterdir() if p.is_file())


async def exercise(app: App) -> None:
    async with app, app.worker(poll_interval=0.05):
        handle = await app.start("agent", PERSON, API_KEY, run_id="a1")
        await app.signal("a1", "approve", {"by": SIGNAL})
        result = await handle.result(timeout=30)
        assert result["tool"].startswith(TOOL)
        assert API_KEY in result["error"] or "[redacted]" in result["error"]  # lossy redaction
        failed = await app.start("fails", run_id="f1")
        with pytest.raises(tether.RunFailed):
            await failed.result(timeout=30)


async def test_without_protection_the_scan_finds_every_canary(tmp_path: Path) -> None:
    await exercise(build(f"sqlite:///{tmp_path}/t.db"))
    assert all(found(tmp_path, c) for c in CANARIES)


async def test_aes_gcm_leaves_no_known_plaintext_and_fails_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    caplog.set_level(logging.DEBUG)
    await exercise(build(url, AesGcm({"k1": KEY1})))
    for canary in CANARIES:
        assert found(tmp_path, canary) == 0, canary
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert API_KEY not in logged
    # The right key reads everything back.
    async with build(url, AesGcm({"k1": KEY1})) as app:
        info = await app.get_run("a1")
        assert info.input == [PERSON, API_KEY]
    # A wrong key, or no key for the payload's id, fails closed and says which id:
    # reading the result raises; inspection shows the ciphertext, never a guess.
    for wrong in (AesGcm({"k1": KEY2}), AesGcm({"k9": KEY1}), None):
        async with build(url, wrong) as app:
            info = await app.get_run("a1")
            assert str(info.input).startswith("tgcm2.k1."), info.input
            with pytest.raises(PayloadError) as caught:
                await app.handle("a1").result(timeout=1)
            if wrong is not None:
                assert isinstance(caught.value, PayloadDecryptError)
            assert "'k1'" in str(caught.value)  # (without a hook too, since 071c493)
            assert not any(c in str(caught.value) for c in CANARIES)
    # Rotation: a new active key reads the old payloads and writes new ones under k2.
    async with build(url, AesGcm({"k2": KEY2, "k1": KEY1})) as app:
        assert (await app.get_run("a1")).input == [PERSON, API_KEY]
        await app.start("agent", "new", "k", run_id="a2")
    async with build(url, AesGcm({"k2": KEY2})) as app:
        assert (await app.get_run("a2")).input == ["new", "k"]
        with pytest.raises(PayloadDecryptError, match="'k1'"):
            await app.handle("a1").result(timeout=1)
    # The CLI (which has no key) prints no canary either.
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    for args in (["runs"], ["show", "a1"], ["show", "a1", "--json"]):
        done = forked.run([sys.executable, "-m", "tether", *args, "--db", url],
                          capture_output=True, text=True, env=env, timeout=60)
        assert not any(c in done.stdout + done.stderr for c in CANARIES), args


async def test_redaction_hook_removes_the_api_key_before_it_is_journaled(
    tmp_path: Path,
) -> None:
    await exercise(build(f"sqlite:///{tmp_path}/t.db",
                         Redact([r"sk-canary-[0-9a-f]{16}"])))
    assert found(tmp_path, API_KEY) == 0
    assert found(tmp_path, "[redacted]") > 0
    assert found(tmp_path, TOOL) > 0  # only what matches is redacted


def test_bad_keys_are_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.errors import ConfigError

    with pytest.raises(ConfigError, match="16, 24 or 32"):
        AesGcm({"k1": b"short"})
    with pytest.raises(ConfigError, match="without dots"):
        AesGcm({"a.b": KEY1})
    # Arguments of another type: a bare TypeError until 2026-12-08 (an int or bytes id,
    # a key given as text, keys as a list, an unhashable active id).
    with pytest.raises(ConfigError, match="key id 1: use a short printable name"):
        AesGcm({1: KEY1})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="key id b'k1': use a short printable name"):
        AesGcm({b"k1": KEY1})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="key 'k1' is str, not bytes"):
        AesGcm({"k1": "k" * 32})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="key 'k1' is int, not bytes"):
        AesGcm({"k1": 32})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="a mapping of key id to key bytes, not list"):
        AesGcm([("k1", KEY1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"active key id \['k1'\] is not among the keys"):
        AesGcm({"k1": KEY1}, active=["k1"])  # type: ignore[arg-type]
    assert AesGcm({"k1": bytearray(KEY1)}).active == "k1"
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", "k1:not base64!")
    with pytest.raises(ConfigError, match="base64"):
        AesGcm.from_env()
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", "k2:" + __import__("base64").b64encode(KEY2)
                       .decode())
    assert AesGcm.from_env().active == "k2"
    # One id given two keys (a rotation that reused the id) was taken silently, the
    # last key winning: the runs written with the first could not be read.
    b64 = [__import__("base64").b64encode(k).decode() for k in (KEY1, KEY2)]
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", f"k1:{b64[0]},k1:{b64[1]}")
    with pytest.raises(ConfigError, match="'k1' is given twice with different keys"):
        AesGcm.from_env()
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", f"k1:{b64[0]},k1:{b64[0]}")  # the same key
    assert AesGcm.from_env().active == "k1"


STREAMED = "streamed-canary-4d2e8f"


def stored_events(url: str) -> list[str]:
    """Every live event's stored text, read from the store with a plain client."""
    if url.startswith("sqlite:///"):
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite://"), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return [d for (d,) in conn.execute("SELECT data FROM tether_run_events "
                                               "WHERE data IS NOT NULL")]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        return [d for (d,) in pg.execute("SELECT data FROM tether.run_events "
                                         "WHERE data IS NOT NULL")]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres",
                                                          marks=pytest.mark.postgres)])
async def test_a_streamed_answer_is_kept_encrypted_in_the_event_log(
    tmp_path: Path, request: pytest.FixtureRequest, store: str,
) -> None:
    """A streamed model answer is kept in the store's event log (for ``tether serve``'s
    streams to resume); with AesGcm it was kept there in clear, although the journaled
    reply it becomes is encrypted. Now it goes through the hook, and the observers
    (App.events, the SSE frames) still read it in clear with the key, a marker without."""
    from tether.ai import LLM, Agent
    from tether.serve._events import _data
    from tether.testing.llm_server import Reply, ScriptedLLMServer

    url = (f"sqlite:///{tmp_path}/t.db" if store == "sqlite"
           else request.getfixturevalue("pg_url"))
    async with ScriptedLLMServer() as server:
        server.set_script([Reply(text=f"the answer is {STREAMED} indeed")])
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)
        app = App(url, payload_hook=AesGcm({"k1": KEY1}))
        app.add_agent(Agent("streamer", model=llm))
        seen: list[str] = []

        subscribed = asyncio.Event()

        async def observe() -> None:  # the live events, as published
            async for data in app.store.run_events("s1", ready=subscribed.set):
                if not data.startswith("{"):  # encrypted: the key opens it
                    data = AesGcm({"k1": KEY1}).decode(data, PayloadContext("s1", "status"))
                seen.append(data)
                if '"llm.end"' in data:
                    return

        async with app:
            handle = await app.start("streamer", "hi", run_id="s1")
            watcher = asyncio.create_task(observe())
            await subscribed.wait()
            async with app.worker(poll_interval=0.05):
                assert await handle.result(timeout=30) == f"the answer is {STREAMED} indeed"
            await asyncio.wait_for(watcher, 30)
            stored = [e for e in await app.store.run_events_read(run_id="s1", after=None,
                                                                 limit=1000)
                      if e.kind == "chunk"]
        await llm.aclose()
    texts = stored_events(url)
    assert any(t.startswith("tgcm2.k1.") for t in texts)
    assert not any(STREAMED in t for t in texts)
    if store == "sqlite":
        assert found(tmp_path, STREAMED) == 0
    # What observers get (with the key) is the clear JSON.
    chunks = [json.loads(d) for d in seen]
    assert STREAMED in "".join(c.get("text", "") for c in chunks
                               if c.get("type") == "llm.chunk")
    # The SSE frames: with the key the chunks' text; without it a marker.
    async with App(url, payload_hook=AesGcm({"k1": KEY1})) as keyed:
        datas = [await _data(keyed, "s1", e.kind, e.data) for e in stored]
    assert STREAMED in "".join(d.get("text", "") for d in datas
                               if isinstance(d, dict) and d.get("type") == "llm.chunk")
    async with App(url) as keyless:
        datas = [await _data(keyless, "s1", e.kind, e.data) for e in stored]
    assert datas and all(d == {"unreadable_payload": True, "key_id": "k1"} for d in datas)


# -- tether.ai's message texts (the store's shared blobs) ---------------------------------

AI_INSTRUCTIONS = "instruction-canary-4d5e6f"
AI_PROMPT = "prompt-canary-7a8b9c"
AI_TOOL = "ai-tool-result-canary-1f2e3d"
AI_REPLY = "reply-canary-6c5b4a"
AI_CANARIES = [AI_INSTRUCTIONS, AI_PROMPT, AI_TOOL, AI_REPLY]


def stored_blobs(url: str) -> dict[str, str]:
    """The store's shared texts as stored (key -> text), read with a plain client."""
    import apsw

    conn = apsw.Connection(url.removeprefix("sqlite://"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return dict(conn.execute("SELECT key, value FROM tether_blobs").fetchall())
    finally:
        conn.close()


async def exercise_ai(url: str, hook: object = None) -> None:
    """An agent whose instructions, task, tool result and answer (sent back to the model
    on the next turn) each carry a canary, run through a worker against the scripted
    LLM server."""
    from tether.ai import LLM, Agent, function_tool
    from tether.testing.llm_server import Reply, ScriptedLLMServer

    @function_tool
    def lookup(q: str) -> str:
        """Look something up."""
        return f"{AI_TOOL} about {q}"

    async with ScriptedLLMServer() as server:
        server.set_script([
            Reply(text=f"Let me look. {AI_REPLY}",
                  tool_calls=[{"name": "lookup", "arguments": {"q": "x"}, "id": "c1"}]),
            Reply(text="done")])
        async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as llm:
            app = App(url, payload_hook=hook)  # type: ignore[arg-type]
            app.add_agent(Agent("helper", model=llm, instructions=f"Be terse. {AI_INSTRUCTIONS}",
                                tools=[lookup]))
            async with app, app.worker(poll_interval=0.05):
                handle = await app.start("helper", f"Look up {AI_PROMPT}", run_id="ai1")
                assert await handle.result(timeout=30) == "done"
        sent = json.dumps([r.body for r in server.requests])
    assert all(c in sent for c in AI_CANARIES)  # what the model got: every canary
    return None


async def test_ai_message_texts_are_found_without_protection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    await exercise_ai(url)
    for canary in AI_CANARIES:
        assert found(tmp_path, canary) > 0, canary  # (the scan works)
    from tether.ai._messages import digest

    assert all(digest(text) == key for key, text in stored_blobs(url).items())


async def test_ai_message_texts_are_encrypted_under_aes_gcm(tmp_path: Path) -> None:
    """With AesGcm no instruction, prompt, tool result or answer is readable in the
    store's files; each text is stored under a keyed digest (not the SHA-256 of any text:
    a guessed prompt is not confirmed), bound to it; the key reads them back (an
    export carries them in clear, and replays); without it the export refuses and the
    CLI shows no canary."""
    from tether.ai._messages import digest
    from tether.testing import HistoryError, export_history, replay

    url = f"sqlite:///{tmp_path}/t.db"
    await exercise_ai(url, AesGcm({"k1": KEY1}))
    for canary in AI_CANARIES:
        assert found(tmp_path, canary) == 0, canary
    blobs = stored_blobs(url)
    assert blobs and all(k.startswith("k1.") and t.startswith("tgcm2.k1.")
                         for k, t in blobs.items())
    # With the key: an export's texts are in clear (as its payloads), and replay.
    async with App(url, payload_hook=AesGcm({"k1": KEY1})) as app:
        exported = await export_history(app, "ai1")
        texts = json.dumps(exported["texts"])
        assert all(c in texts for c in AI_CANARIES)
        assert all(digest(text) == key for key, text in exported["texts"].items())
    from tether.ai import LLM, Agent, function_tool

    @function_tool
    def lookup(q: str) -> str:
        """Look something up."""
        return f"{AI_TOOL} about {q}"

    checker = App(url, payload_hook=AesGcm({"k1": KEY1}))
    checker.add_agent(Agent("helper", model=LLM("openai:gpt-4.1-mini",
                                                  base_url="http://127.0.0.1:9"),
                            instructions=f"Be terse. {AI_INSTRUCTIONS}", tools=[lookup]))
    async with checker:
        [result] = await replay(checker, exported, compare_args=True,
                                blob_get=checker.store.blob_get)
        assert result.compatible, result.message
    # Code whose instructions changed, checked against the encrypted store alone (the
    # export's texts left out): the change is told message by message, in clear.
    changed = App(url, payload_hook=AesGcm({"k1": KEY1}))
    changed.add_agent(Agent("helper", model=LLM("openai:gpt-4.1-mini",
                                                  base_url="http://127.0.0.1:9"),
                            instructions="Be verbose.", tools=[lookup]))
    async with changed:
        [result] = await replay(changed, {**exported, "texts": {}}, compare_args=True,
                                blob_get=changed.store.blob_get)
    assert not result.compatible
    assert AI_INSTRUCTIONS in (result.changed_args[0].prompt or ""), result.changed_args
    # Without the key: the export refuses; the CLI prints no canary.
    async with App(url, payload_hook=AesGcm({"k9": KEY2})) as keyless:
        with pytest.raises(HistoryError):
            await export_history(keyless, "ai1")
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    for args in (["show", "ai1"], ["show", "ai1", "--json"], ["export", "ai1"]):
        done = forked.run([sys.executable, "-m", "tether", *args, "--db", url],
                          capture_output=True, text=True, env=env, timeout=60)
        assert not any(c in done.stdout + done.stderr for c in AI_CANARIES), args
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert (done.returncode == 0) == (args[0] == "show"), (args, done.stderr)


async def test_redaction_applies_to_ai_message_texts(tmp_path: Path) -> None:
    """Redact's patterns redact a message's text before it is stored (the tool result
    sent back to the model): an export, which replay reads, has the redacted text."""
    from tether.testing import export_history

    url = f"sqlite:///{tmp_path}/t.db"
    hook = Redact([r"ai-tool-result-canary-[0-9a-f]{6}"])
    await exercise_ai(url, hook)
    assert found(tmp_path, AI_TOOL) == 0
    assert found(tmp_path, AI_PROMPT) > 0  # only what matches is redacted
    async with App(url, payload_hook=hook) as app:
        texts = json.dumps((await export_history(app, "ai1"))["texts"])
    assert AI_TOOL not in texts and "[redacted] about x" in texts


async def test_a_run_whose_texts_were_stored_in_clear_before_goes_on_under_aes_gcm(
        tmp_path: Path) -> None:
    """A store written before message texts went through the hook: an encrypted run's
    texts sit in clear under their SHA-256 (made so here, in the store's file, from a
    run waiting between two calls). The run goes on under AesGcm: its next call stores
    its new texts encrypted, and an export reads both kinds back in clear."""
    import apsw

    from tether._codec import Codec
    from tether.ai import LLM, user_message
    from tether.ai._messages import digest
    from tether.testing import export_history
    from tether.testing.llm_server import Reply, ScriptedLLMServer

    url = f"sqlite:///{tmp_path}/t.db"
    hook = AesGcm({"k1": KEY1})
    async with ScriptedLLMServer() as server:
        server.set_script([Reply(text="first"), Reply(text="done")])
        async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as llm:
            app = App(url, payload_hook=hook)

            @app.workflow
            async def ask() -> str:
                messages = [{"role": "system", "content": AI_INSTRUCTIONS},
                            user_message(AI_PROMPT)]
                first = await llm.chat(messages)
                await tether.wait_for_signal("go")
                messages += [first.to_message(), user_message(AI_TOOL)]
                return (await llm.chat(messages)).text or ""

            async with app:
                async with app.worker(poll_interval=0.05):
                    handle = await app.start(ask, run_id="old1")
                    while (await app.get_run("old1")).status != "waiting":
                        await asyncio.sleep(0.05)
                # As a version before wrote them: each text in clear under its SHA-256.
                codec = Codec(hook=hook)
                conn = apsw.Connection(str(tmp_path / "t.db"))
                rows = conn.execute("SELECT key, value FROM tether_blobs").fetchall()
                assert rows
                for key, value in rows:
                    text = codec._blob_decode(value, key)
                    conn.execute("DELETE FROM tether_blobs WHERE key = ?", (key,))
                    conn.execute("INSERT INTO tether_blobs VALUES (?, ?)", (digest(text), text))
                    conn.execute("UPDATE tether_blob_refs SET key = ? WHERE key = ?",
                                 (digest(text), key))
                conn.close()
                assert found(tmp_path, AI_INSTRUCTIONS) > 0
                await app.signal("old1", "go")
                async with app.worker(poll_interval=0.05):
                    assert await handle.result(timeout=30) == "done"
                exported = await export_history(app, "old1")
    texts = json.dumps(exported["texts"])
    assert AI_PROMPT in texts and AI_TOOL in texts  # (a clear one, and a new one)
    assert all(digest(text) == key for key, text in exported["texts"].items())
    stored = stored_blobs(url)
    assert any(k.startswith("k1.") for k in stored)  # the second call's new texts
    assert not any(AI_TOOL in v for v in stored.values())
