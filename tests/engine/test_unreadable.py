"""A worker that cannot decrypt a run backs off from it alone: the run stays claimable by
the other workers, which take it at once (tests/life/test_wrong_key.py runs the same
with worker processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine.helpers import wait_for
from tether import App, RunStatus
from tether.encryption import AesGcm
from tether.worker import _worker

RIGHT, WRONG = b"1" * 32, b"2" * 32


def keyed(store_url: str, key: bytes, ran: list[str]) -> App:
    app = App(store_url, payload_hook=AesGcm({"k1": key}))

    @app.step
    async def greet(name: str) -> str:
        return f"hello {name}"

    @app.workflow(name="enc")
    async def enc(name: str) -> str:
        ran.append(name)
        return await greet(name)

    return app


@pytest.fixture
async def apps(store_url: str) -> AsyncIterator[tuple[App, App, list[str], list[str]]]:
    """An app with key k1 and one with other material under k1, on one store; and what
    each one's workflow code saw."""
    right_ran: list[str] = []
    wrong_ran: list[str] = []
    right, wrong = keyed(store_url, RIGHT, right_ran), keyed(store_url, WRONG, wrong_ran)
    async with right, wrong:
        yield right, wrong, right_ran, wrong_ran


async def test_the_worker_with_the_key_takes_a_run_during_the_others_back_off(
        apps: tuple[App, App, list[str], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrong worker meets the run once and leaves it alone for its back-off (an hour
    here); the right worker, started after, completes the run meanwhile. Before, the
    hand-back delayed the run itself by that back-off, for every worker."""
    right, wrong, right_ran, wrong_ran = apps
    monkeypatch.setattr(_worker, "UNREADABLE_BACKOFF", 3600.0)
    monkeypatch.setattr(_worker, "UNREADABLE_BACKOFF_MAX", 3600.0)
    handle = await right.start("enc", "ada", run_id="enc-1")

    async def handed_back() -> bool:
        run = await right.store.run_get("enc-1")
        assert run is not None
        return run.status == RunStatus.WAITING.value

    async with wrong.worker(poll_interval=0.05) as bad:
        await wait_for(handed_back, timeout=30, what="the wrong worker handed the run back")
        run = await right.store.run_get("enc-1")
        assert run is not None and run.waiting_for is not None
        assert "key id 'k1'" in run.waiting_for
        async with right.worker(poll_interval=0.05):
            assert await handle.result(timeout=60) == "hello ada"
        met, until = bad._unreadable_runs["enc-1"]
        assert met == 1 and until > wrong.clock.now()  # its back-off is still running
        assert bad._exclusions(wrong.clock.now()) == ["enc-1"]
    assert wrong_ran == [] and right_ran == ["ada"]  # the code never saw the input
    assert (await right.get_run("enc-1")).status == RunStatus.COMPLETED


async def test_a_lone_wrong_worker_meets_the_run_again_after_its_back_off(
        apps: tuple[App, App, list[str], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a worker that has the key, the wrong one claims the run again once its
    own back-off is over (the back-off doubling), and never fails it."""
    right, wrong, _, wrong_ran = apps
    monkeypatch.setattr(_worker, "UNREADABLE_BACKOFF", 0.05)
    await right.start("enc", "ada", run_id="enc-1")
    async with wrong.worker(poll_interval=0.05) as bad:
        await wait_for(lambda: bad._unreadable_runs.get("enc-1", (0, 0.0))[0] >= 3,
                       timeout=60, what="the wrong worker met the run three times")
    run = await right.store.run_get("enc-1")
    # Handed back for a key (waiting), or, when the worker stopped with a claim of it in
    # flight, handed back by the worker's unregistration (queued): never failed, never
    # left running under a worker that is gone.
    assert run is not None and run.status in (RunStatus.WAITING.value,
                                              RunStatus.QUEUED.value), (
        run, bad._unreadable_runs)
    assert run.owner is None
    assert wrong_ran == []


async def test_a_signal_to_an_encrypted_run_from_an_app_without_the_hook_is_refused(
        sqlite_url: str) -> None:
    """An app without a payload hook (``tether signal`` without ``--app``) signals a run
    whose payloads are encrypted: refused with a PayloadError that says how (it was
    stored in clear text, which the run's workers refuse: the run waited for ever). The
    app with the key sends it."""
    from tether import PayloadError

    keyed_app = keyed(sqlite_url, RIGHT, [])
    await keyed_app.start("enc", "ana", run_id="e")
    plain = App(sqlite_url)
    with pytest.raises(PayloadError, match=r"run 'e' keeps its payloads encrypted \(encrypted "
                       r"with key id 'k1'\).*tether signal --app MODULE:APP"):
        await plain.signal("e", "go", {"pw": "secret"})
    assert await keyed_app.signal("e", "go", {"pw": "secret"}) is True
    await plain.close()
    await keyed_app.close()


async def test_redaction_replaces_keys_too_and_drops_no_value(
        sqlite_url: str, tmp_path: Path) -> None:
    """An API key or an e-mail address used as an object's key (a signal's payload, a
    run's input) was stored as it was: ``Redact`` kept keys. Now a key is redacted as a
    value is, nothing of the canary is left in the store's files, and two keys redacted
    alike keep both their values."""
    from tether import wait_for_signal
    from tether.encryption import Redact

    app = App(sqlite_url, payload_hook=Redact([r"sk-canary-\w+", r"[\w.]+@example\.com"]))
    seen: list[object] = []

    @app.workflow
    async def keyed(users: dict[str, object]) -> object:
        seen.append(users)
        return await wait_for_signal("go")

    async with app.worker():
        handle = await app.start(keyed, {"ada@example.com": 1, "bob@example.com": 2, "n": 3},
                                 run_id="k")
        await app.signal("k", "go", {"sk-canary-abc123": {"sk-canary-def456": "x"}})
        out = await handle.result(timeout=10)
    await app.close()
    assert seen == [{"[redacted]": 1, "[redacted] (2)": 2, "n": 3}]
    assert out == {"[redacted]": {"[redacted]": "x"}}
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for canary in (b"sk-canary", b"@example.com"):
        assert canary not in stored


async def test_redaction_keeps_the_payload_json_and_the_run_reads_it(sqlite_url: str) -> None:
    """``Redact`` patterns apply to the payload's values: one that would run past a
    string's closing quote (``sk-\\S+``) and one matching a card number stored as a
    number leave valid JSON (both made the stored text unreadable: the run failed with a
    JSONDecodeError reading its own input)."""
    from tether.encryption import Redact

    app = App(sqlite_url, payload_hook=Redact([r"sk-\S+", r"\d{16}"]))
    seen: list[object] = []

    @app.step
    async def pay(order: dict[str, object]) -> dict[str, object]:
        return {"charged": order["card"], "with": order["key"], "n": 3}

    @app.workflow
    async def checkout(order: dict[str, object]) -> dict[str, object]:
        seen.append(order)
        return await pay(order)

    async with app.worker():
        out = await (await app.start(checkout, {"key": "sk-live-abc123", "card": 4111111111111111},
                                     run_id="c")).result(timeout=10)
    # (The run reads its input as stored: redacted.)
    assert seen[0] == {"key": "[redacted]", "card": "[redacted]"}
    assert out == {"charged": "[redacted]", "with": "[redacted]", "n": 3}
    info = await app.get_run("c")
    assert info.input == [{"key": "[redacted]", "card": "[redacted]"}]
    await app.close()
