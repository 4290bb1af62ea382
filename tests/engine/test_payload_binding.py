"""AesGcm binds each ciphertext to its run and its slot (input, result, error, status,
signal, journal) through AES-GCM's associated data: a payload moved to another run or
another slot in the store is refused as misplaced, and the worker blocks the run once
instead of returning garbage or passing the run round. Payloads written before binding
(``tgcm1``) still decrypt; key rotation still works; hooks that take no context keep
working, and hooks that do are told each payload's run and slot."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.engine.helpers import wait_for
from tether import App, PayloadBindingError, PayloadError, RunFailed, RunStatus
from tether._codec import Codec, PayloadContext
from tether.encryption import AesGcm, PayloadDecryptError, PayloadMisplacedError, Redact

K1, K2 = b"1" * 32, b"2" * 32


def build(url: str, hook: Any) -> App:
    app = App(url, payload_hook=hook)

    @app.step
    async def double(x: int) -> int:
        return 2 * x

    @app.step
    async def flaky(state: dict[str, int]) -> str:
        state["n"] = state.get("n", 0) + 1
        if state["n"] < 2:
            raise RuntimeError("secret-ish failure")
        return "fine"

    @app.workflow
    async def child(x: int) -> int:
        return await double(x) + 1

    @app.workflow
    async def bad_child() -> None:
        raise ValueError("child failed")

    @app.workflow
    async def waits(x: int) -> int:
        first = await double(x)
        got = await tether.wait_for_signal("go")
        return first + int(got["n"])

    @app.workflow
    async def everything(x: int, again: bool = True) -> dict[str, Any]:
        tether.set_status({"phase": "start"})
        a = await double(x)
        b = await flaky({})
        await tether.sleep(0.01)
        now = tether.now()
        h = await tether.start_child(child, a)
        c = await h.result()
        try:
            await (await tether.start_child(bad_child)).result()
        except RunFailed:
            pass
        s = await tether.wait_for_signal("go")
        if again:
            tether.continue_as_new(x + 1, again=False)
        return {"a": a, "b": b, "c": c, "s": s, "now": now is not None}

    return app


def rows(db: Path) -> list[str]:
    """Every stored payload text of the file (runs, journal, signals, archives)."""
    con = sqlite3.connect(db)
    try:
        out: list[str] = []
        for table, cols in (("tether_runs", "input, result, error, status_info"),
                            ("tether_journal", "result, error, args"),
                            ("tether_signals", "payload"),
                            ("tether_journal_archive", "result, error, args, input")):
            for row in con.execute(f"SELECT {cols} FROM {table}"):
                out.extend(v for v in row if isinstance(v, str))
        return out
    finally:
        con.close()


def sql(db: Path, statement: str, *params: Any) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute(statement, params)
        con.commit()
    finally:
        con.close()


async def test_every_payload_is_bound_and_reads_back(tmp_path: Path) -> None:
    """Steps, a retried step's error, a timer, a journaled value, a child's result and a
    failed child's error, a signal, live status, continue-as-new, start_many and a fork:
    everything stored is a bound (tgcm2) payload, and all of it reads back."""
    db = tmp_path / "t.db"
    app = build(f"sqlite:///{db}", AesGcm({"k1": K1}))
    async with app, app.worker(poll_interval=0.02):
        handle = await app.start("everything", 3, run_id="e1")
        await wait_for(lambda: _waits_for_signal(app, "e1"), what="e1 waits")
        await app.signal("e1", "go", {"n": 1})
        await wait_for(lambda: _waits_for_signal(app, "e1"), what="e1 generation 2 waits")
        await app.signal("e1", "go", {"n": 2})
        assert await handle.result(timeout=30) == {"a": 8, "b": "fine", "c": 17,
                                                   "s": {"n": 2}, "now": True}
        many = await app.start_many("child", [[1], [2]], run_ids=["m1", "m2"])
        assert [await h.result(timeout=30) for h in many] == [3, 5]
        info = await app.get_run("e1")
        after_signal = 1 + max(e["position"] for e in info.journal if e["kind"] == "signal")
        fork = await app.fork("e1", at=after_signal, new_run_id="e1-fork")  # copies all
        assert (await fork.result(timeout=30))["s"] == {"n": 2}
        fork = await app.fork("e1", at=2, input={"args": [10], "kwargs": {"again": False}},
                              new_run_id="e1-fork2")
        await wait_for(lambda: _waits_for_signal(app, "e1-fork2"), what="fork 2 waits")
        await app.signal("e1-fork2", "go", {"n": 3})
        assert (await fork.result(timeout=30))["s"] == {"n": 3}
        assert info.input == [4] or info.input == {"args": [4], "kwargs": {"again": False}}
        assert info.history and info.history[0]["input"] == [3]
        assert all(not isinstance(e["result"], str) or not e["result"].startswith("tgcm")
                   for g in info.history for e in g["journal"])
        signal = [e for e in info.journal if e["kind"] == "signal"]
        assert signal[0]["result"] == {"n": 2}
    stored = [t for t in rows(db) if t.startswith("tgcm")]
    assert stored and all(t.startswith("tgcm2.k1.") for t in stored), \
        [t[:12] for t in stored if not t.startswith("tgcm2.")]


async def _waits_for_signal(app: App, run_id: str) -> bool:
    run = await app.store.run_get(run_id)
    return run is not None and run.waiting_for == "signal go" and run.status == "waiting"


async def _blocked(app: App, run_id: str) -> tether.RunInfo:
    async def blocked() -> bool:
        run = await app.store.run_get(run_id)
        return run is not None and run.status == RunStatus.BLOCKED.value
    await wait_for(blocked, what=f"{run_id} blocked")
    return await app.get_run(run_id)


async def test_an_input_moved_to_another_run_blocks_that_run_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "t.db"
    app = build(f"sqlite:///{db}", AesGcm({"k1": K1}))
    async with app:
        await app.start("child", 1, run_id="victim")
        await app.start("child", 99, run_id="source")
        sql(db, "UPDATE tether_runs SET input = (SELECT input FROM tether_runs WHERE "
                "run_id = 'source') WHERE run_id = 'victim'")
        async with app.worker(poll_interval=0.02):
            assert await app.handle("source").result(timeout=30) == 199
            info = await _blocked(app, "victim")
            await asyncio.sleep(0.3)  # not handed back and claimed again meanwhile
        assert info.error["type"] == "tether.encryption.PayloadMisplacedError"
        assert "encrypted for another run" in info.error["message"]
        assert "'victim'" in info.error["message"]
        with pytest.raises(RunFailed):
            await app.handle("victim").result(timeout=1)
    blocked = [r for r in caplog.records if "blocking it" in r.getMessage()]
    assert len(blocked) == 1, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "handing it back" in r.getMessage()]


async def test_a_step_result_moved_to_another_run_or_slot_is_refused(tmp_path: Path) -> None:
    """A journaled step result copied into another run's journal, and a run's input
    copied into its own journal, are both refused on replay, each saying what it is."""
    db = tmp_path / "t.db"
    app = build(f"sqlite:///{db}", AesGcm({"k1": K1}))
    async with app:
        async with app.worker(poll_interval=0.02):
            for rid, x in (("w1", 1), ("w2", 50), ("w3", 7)):
                await app.start("waits", x, run_id=rid)
            for rid in ("w1", "w2", "w3"):
                await wait_for(lambda rid=rid: _waits_for_signal(app, rid), what=rid)
        sql(db, "UPDATE tether_journal SET result = (SELECT result FROM tether_journal "
                "WHERE run_id = 'w2' AND position = 0) WHERE run_id = 'w1' AND position = 0")
        sql(db, "UPDATE tether_journal SET result = (SELECT input FROM tether_runs "
                "WHERE run_id = 'w3') WHERE run_id = 'w3' AND position = 0")
        async with app.worker(poll_interval=0.02):
            for rid in ("w1", "w2", "w3"):
                await app.signal(rid, "go", {"n": 1})
            assert await app.handle("w2").result(timeout=30) == 101
            moved = await _blocked(app, "w1")
            slot = await _blocked(app, "w3")
        assert "encrypted for another run" in moved.error["message"]
        assert "encrypted as its input" in slot.error["message"]


async def test_a_signal_payload_moved_to_another_run_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    app = build(f"sqlite:///{db}", AesGcm({"k1": K1}))
    async with app:
        async with app.worker(poll_interval=0.02):
            for rid in ("s1", "s2"):
                await app.start("waits", 1, run_id=rid)
                await wait_for(lambda rid=rid: _waits_for_signal(app, rid), what=rid)
        await app.signal("s2", "go", {"n": 1000})
        await app.signal("s1", "go", {"n": 1})
        sql(db, "UPDATE tether_signals SET payload = (SELECT payload FROM tether_signals "
                "WHERE run_id = 's2') WHERE run_id = 's1'")
        async with app.worker(poll_interval=0.02):
            assert await app.handle("s2").result(timeout=30) == 1002
            info = await _blocked(app, "s1")
        assert "signal payload found in run 's1' was encrypted for another run" in \
            info.error["message"]


class _OldHook:
    """A hook written before contexts existed: AesGcm used as ``encode(text)``."""

    def __init__(self, inner: AesGcm) -> None:
        self.inner = inner

    def encode(self, text: str) -> str:
        return self.inner.encode(text)

    def decode(self, text: str) -> str:
        return self.inner.decode(text)


async def test_unbound_payloads_of_before_still_decrypt(tmp_path: Path) -> None:
    """Runs written as tgcm1 (no associated data) complete under the binding AesGcm,
    also after a key rotation; ``accept_unbound=False`` refuses them (the run blocks)."""
    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    async with build(url, _OldHook(AesGcm({"k1": K1}))) as old:
        for rid in ("old1", "old2"):
            await old.start("waits", 2, run_id=rid)
        async with old.worker(poll_interval=0.02):
            for rid in ("old1", "old2"):
                await wait_for(lambda rid=rid: _waits_for_signal(old, rid), what=rid)
        await old.signal("old1", "go", {"n": 1})
    assert all(t.startswith("tgcm1.k1.") for t in rows(db) if t.startswith("tgcm"))
    rotated = build(url, AesGcm({"k2": K2, "k1": K1}))
    async with rotated, rotated.worker(poll_interval=0.02):
        assert await rotated.handle("old1").result(timeout=30) == 5
        assert (await rotated.get_run("old1")).input == [2]
    new = [t for t in rows(db) if t.startswith("tgcm2.")]
    assert new and all(t.startswith("tgcm2.k2.") for t in new)
    strict = build(url, AesGcm({"k2": K2, "k1": K1}, accept_unbound=False))
    async with strict, strict.worker(poll_interval=0.02):
        await strict.signal("old2", "go", {"n": 1})
        info = await _blocked(strict, "old2")
    assert "not bound to its run" in info.error["message"]


def test_aes_gcm_binding_and_rotation_directly() -> None:
    one, both = AesGcm({"k1": K1}), AesGcm({"k2": K2, "k1": K1})
    here = PayloadContext("r1", "result")
    text = one.encode('{"v":1}', context=here)
    assert text.startswith("tgcm2.k1.")
    assert both.decode(text, context=here) == '{"v":1}'  # rotation: k1 still read
    assert both.encode("1", context=here).startswith("tgcm2.k2.")
    with pytest.raises(PayloadMisplacedError, match="another run") as moved:
        one.decode(text, context=PayloadContext("r2", "result"))
    assert isinstance(moved.value, PayloadBindingError)
    assert isinstance(moved.value, PayloadDecryptError) and moved.value.key_id == "k1"
    with pytest.raises(PayloadMisplacedError, match="as its result"):
        one.decode(text, context=PayloadContext("r1", "input"))
    with pytest.raises(PayloadMisplacedError, match="read without one"):
        one.decode(text)
    # The clear binding forged to match: the associated data still refuses it.
    forged = one.encode('{"v":1}', context=PayloadContext("r1", "error"))
    import base64
    raw = bytearray(base64.b64decode(forged.split(".")[2]))
    raw[6] = 2  # the slot byte of "result"
    forged = "tgcm2.k1." + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(PayloadDecryptError, match="altered"):
        one.decode(forged, context=here)
    with pytest.raises(PayloadDecryptError, match="'k1'"):
        AesGcm({"k1": K2}).decode(text, context=here)  # other material: not misplaced
    legacy = one.encode("[1]")
    assert legacy.startswith("tgcm1.k1.") and one.decode(legacy, context=here) == "[1]"


def test_a_hook_that_takes_a_context_is_told_run_and_slot() -> None:
    seen: list[tuple[str, PayloadContext | None]] = []

    class Recording:
        def encode(self, text: str, context: PayloadContext | None = None) -> str:
            seen.append(("encode", context))
            return text

        def decode(self, text: str, *, context: PayloadContext | None = None) -> str:
            seen.append(("decode", context))
            return text

    codec = Codec(hook=Recording()).for_run("r9")
    assert codec.binds and not Codec(hook=_OldHook(AesGcm({"k1": K1}))).binds
    codec.decode(codec.encode({"a": 1}, "x", "input"), None, "input")
    assert seen == [("encode", PayloadContext("r9", "input")),
                    ("decode", PayloadContext("r9", "input"))]
    # Redact hands the context on to its inner hook.
    redact = Codec(hook=Redact(["secret"], inner=AesGcm({"k1": K1}))).for_run("r9")
    text = redact.encode({"a": "secret"}, "x", "signal")
    assert redact.decode(text, None, "signal") == {"a": "[redacted]"}
    with pytest.raises(PayloadMisplacedError):
        redact.for_run("r8").decode(text, None, "signal")


def test_a_schedule_input_reads_in_its_tick_runs_only() -> None:
    codec = Codec(hook=AesGcm({"k1": K1}))
    text = codec.for_run("nightly@").encode({"args": [1]}, "input", "input")
    assert codec.for_run("nightly@2025-01-01T00:00:00Z").decode(text, None, "input") == \
        {"args": [1]}
    with pytest.raises(PayloadBindingError):
        codec.for_run("other@2025-01-01T00:00:00Z").decode(text, None, "input")
    with pytest.raises(PayloadBindingError):
        codec.for_run("nightly@2025-01-01T00:00:00Z").decode(text, None, "journal")


async def test_a_fork_without_the_key_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    app = build(url, AesGcm({"k1": K1}))
    async with app:
        await app.start("child", 1, run_id="c1")
        async with App(url) as keyless:
            with pytest.raises(PayloadError, match="tether fork --app"):
                await keyless.fork("c1", at=0)


async def test_a_fork_of_an_encrypted_run_reads_its_copied_journal(store_url: str) -> None:
    """The fork's copy of the journal (a step result, a signal) is encoded again for it,
    on every store (the store inserts the entries given instead of copying its own)."""
    app = build(store_url, AesGcm({"k1": K1}))
    async with app, app.worker(poll_interval=0.02):
        await app.start("waits", 4, run_id="fk")
        await wait_for(lambda: _waits_for_signal(app, "fk"), what="fk waits")
        await app.signal("fk", "go", {"n": 1})
        assert await app.handle("fk").result(timeout=30) == 9
        fork = await app.fork("fk", at=2, new_run_id="fk-copy")
        assert await fork.result(timeout=30) == 9
        info = await app.get_run("fk-copy")
        assert [e["result"] for e in info.journal] == [8, {"n": 1}]
        assert info.forked_from == "fk" and info.input == [4]


async def test_a_run_started_without_the_hook_is_blocked_saying_how_to_start_it(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """What ``tether start`` without ``--app`` does (an App without the hook) stores the
    input in clear; the encrypted app's worker blocks the run once, with a PayloadError
    naming ``--app``, instead of handing it round for ever; a worker that allows
    plaintext completes it after ``resume``."""
    async with App(store_url) as keyless:
        await keyless.start("child", 20, run_id="clear")
    app = build(store_url, AesGcm({"k1": K1}))
    async with app, app.worker(poll_interval=0.02):
        info = await _blocked(app, "clear")
        await asyncio.sleep(0.3)
        assert (await app.store.run_get("clear")).status == RunStatus.BLOCKED.value  # type: ignore[union-attr]
    assert info.error["type"] == "tether.encryption.PayloadNotEncryptedError"
    assert "the input of run 'clear' is stored in clear text" in info.error["message"]
    assert "tether start" in info.error["message"] and "--app" in info.error["message"]
    assert len([r for r in caplog.records if "blocking it" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if "handing it back" in r.getMessage()]
    lenient = build(store_url, AesGcm({"k1": K1}, allow_plaintext=True))
    async with lenient, lenient.worker(poll_interval=0.02):
        await lenient.resume("clear")
        assert await lenient.handle("clear").result(timeout=30) == 41


# -- the store's shared texts (blobs: tether.ai's messages) ---------------------------------

def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_blob_is_stored_under_a_keyed_digest_and_bound_to_that_key(
        store_url: str) -> None:
    """With AesGcm a blob is stored under ``<key id>.<HMAC of its SHA-256>`` (not its
    SHA-256: the store's keys confirm no guessed text), encrypted and bound to that key:
    copied under another key it is refused as misplaced, not read; a run's payload put
    there is refused too. A clear blob of before is read only under its own SHA-256.
    After a rotation the old key's blobs still read, new ones go under the new key."""
    one = Codec(hook=AesGcm({"k1": K1}))
    text, other = '{"content":"hello","role":"user"}', '{"content":"bye","role":"user"}'
    d, d2 = _sha(text), _sha(other)
    async with App(store_url) as app:
        store = app.store
        sealed = dict(one.seal_blobs({d: text, d2: other}))
        key, key2 = one.blob_keys(d)[0], one.blob_keys(d2)[0]
        assert sorted(sealed) == sorted([key, key2]) and key.startswith("k1.")
        assert d not in sealed and not any(d in k for k in sealed)
        assert all(v.startswith("tgcm2.k1.") and "hello" not in v for v in sealed.values())
        await store.blob_put(blobs=sealed, run_id="r1")
        assert await one.open_blobs(store.blob_get, [d, d2, _sha("absent")]) == {
            d: text, d2: other}
        # Another AES key gives other keyed digests.
        assert AesGcm({"k1": K2}).blob_keys(d) != AesGcm({"k1": K1}).blob_keys(d)
        # Copied under another key (another text's): refused, not silently read.
        d3 = _sha("a third text")
        await store.blob_put(blobs={one.blob_keys(d3)[0]: sealed[key]})
        with pytest.raises(PayloadMisplacedError, match="another place"):
            await one.open_blobs(store.blob_get, [d3])
        # A run's payload put there: refused as well.
        d4 = _sha("a fourth text")
        run_payload = one.for_run("r1").encode("secret", "x", "result")
        await store.blob_put(blobs={one.blob_keys(d4)[0]: run_payload})
        with pytest.raises(PayloadMisplacedError):
            await one.open_blobs(store.blob_get, [d4])
        # And a blob put into a run's slot is refused there.
        with pytest.raises(PayloadMisplacedError):
            one.for_run("r1").decode(sealed[key], None, "result")
        # Clear blobs (written before blobs went through the hook): read under their
        # own SHA-256 only.
        legacy, forged = '{"content":"old","role":"user"}', '{"content":"evil","role":"user"}'
        await store.blob_put(blobs={_sha(legacy): legacy, _sha("x" * 9): forged})
        assert await one.open_blobs(store.blob_get, [_sha(legacy)]) == {_sha(legacy): legacy}
        with pytest.raises(PayloadDecryptError, match="not the SHA-256"):
            await one.open_blobs(store.blob_get, [_sha("x" * 9)])
        # Rotation: k1's blobs still read; new ones under k2.
        both = Codec(hook=AesGcm({"k2": K2, "k1": K1}))
        assert await both.open_blobs(store.blob_get, [d]) == {d: text}
        assert next(iter(both.seal_blobs({d: text}))).startswith("k2.")
        # A reader without the key cannot even find them (the keys are keyed): absent,
        # nothing returned in their place; a process without a hook neither.
        assert await Codec(hook=AesGcm({"k1": K2})).open_blobs(store.blob_get, [d]) == {}
        assert await Codec().open_blobs(store.blob_get, [d]) == {}

        # One it cannot decode raises its handler's error if it has one (a worker's).
        class HandBack(Exception):
            pass

        with pytest.raises(HandBack):
            await one.with_unreadable(lambda e: HandBack()).open_blobs(store.blob_get, [d3])


def test_a_hook_is_told_a_blob_and_its_key_and_an_old_hook_still_works() -> None:
    seen: list[PayloadContext | None] = []

    class Recording:
        def encode(self, text: str, context: PayloadContext | None = None) -> str:
            seen.append(context)
            return text[::-1]

        def decode(self, text: str, *, context: PayloadContext | None = None) -> str:
            seen.append(context)
            return text[::-1]

    text = '{"role":"user","content":"hi"}'
    codec = Codec(hook=Recording())
    sealed = dict(codec.seal_blobs({_sha(text): text}))
    assert sealed == {_sha(text): text[::-1]}  # (no keyed digest: its SHA-256)
    assert seen == [PayloadContext(None, "blob", _sha(text))]
    old = Codec(hook=_OldHook(AesGcm({"k1": K1})))
    sealed = dict(old.seal_blobs({_sha(text): text}))
    assert sealed[_sha(text)].startswith("tgcm1.k1.")  # (told no place: unbound)

    async def get(*, keys: list[str]) -> dict[str, str]:
        return {k: sealed[k] for k in keys if k in sealed}

    assert asyncio.run(old.open_blobs(get, [_sha(text)])) == {_sha(text): text}


def test_redact_leaves_a_conversation_node_alone() -> None:
    """A node names its message and the node before by digest: a pattern matching hex
    (16 digits of a card number) must not break the chain; a message is redacted."""
    hook = Redact([r"\d{16}", "[0-9a-f]{8}"])
    node = '{"msg":"' + "1234567890123456" + "a" * 48 + '","prev":null}'
    assert hook.encode(node, context=PayloadContext(None, "blob", "k")) == node
    message = '{"content":"card 4111111111111111","role":"user"}'
    assert "4111" not in hook.encode(message, context=PayloadContext(None, "blob", "k"))


async def test_a_runs_shared_blobs_go_through_the_hook(store_url: str) -> None:
    """``tether.ext.Run.shared``'s blob_put / blob_get store through the payload hook and
    read back in clear."""
    from tether import ext

    app = App(store_url, payload_hook=AesGcm({"k1": K1}))
    text = '{"role":"user","content":"shared-canary"}'

    @app.step
    async def keep() -> str:
        run = ext.current_run()
        assert run is not None
        await run.shared.blob_put(blobs={_sha(text): text})
        return (await run.shared.blob_get(keys=[_sha(text)]))[_sha(text)]

    @app.workflow
    async def wf() -> str:
        return await keep()

    async with app, app.worker(poll_interval=0.05):
        assert await (await app.start(wf, run_id="s1")).result(timeout=30) == text
        key = AesGcm({"k1": K1}).blob_keys(_sha(text))[0]
        raw = await app.store.blob_get(keys=[key, _sha(text)])
    assert list(raw) == [key]
    assert raw[key].startswith("tgcm2.k1.") and "shared-canary" not in raw[key]
