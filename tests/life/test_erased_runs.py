"""A run whose payloads were erased does not run again: retry, resume and fork of it
would feed the erasure marker (``{"erased": true}``) to its code as its input, its
steps' results and its signals, and the steps after would act on it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy


async def test_an_erased_run_is_not_retried_or_forked(store_url: str) -> None:
    app = App(store_url)
    sent: list[object] = []
    broken = {"send": True}

    @app.step
    async def fetch_secret() -> str:
        return "ssn-123-45-6789"

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def send(value: str) -> str:
        sent.append(value)
        if broken["send"]:
            raise RuntimeError("smtp down")
        return f"sent {value}"

    @app.workflow
    async def pipeline() -> str:
        return await send(await fetch_secret())

    async with app, app.worker():
        h = await app.start(pipeline, run_id="p-1")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        await app.store.run_erase(run_id="p-1", now=app.clock.now())
        broken["send"] = False
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.retry("p-1")
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.fork("p-1", at=1, new_run_id="p-1-fork")
        with pytest.raises(tether.RunNotFound):
            await app.get_run("p-1-fork")
        info = await app.get_run("p-1")
    assert info.status is tether.RunStatus.FAILED
    assert sent == ["ssn-123-45-6789"]  # the marker was never sent anywhere


async def test_an_erased_blocked_run_is_not_resumed(store_url: str) -> None:
    app = App(store_url)
    moved = {"on": False}

    @app.step
    async def a() -> int:
        return 1

    @app.step
    async def b() -> int:
        return 2

    @app.workflow
    async def flow() -> int:
        x = await (b() if moved["on"] else a())
        await tether.wait_for_signal("go")
        return x

    async with app, app.worker():
        await app.start(flow, run_id="f-1")
        await wait_for(lambda: status_is(app, "f-1", "waiting"), what="f-1 waiting")
        moved["on"] = True  # a deploy that changed the code under the run
        await app.signal("f-1", "go", "secret")
        await wait_for(lambda: status_is(app, "f-1", "blocked"), what="f-1 blocked")
        await app.store.run_erase(run_id="f-1", now=app.clock.now())
        moved["on"] = False  # fixed
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.resume("f-1")
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.retry("f-1")
        info = await app.get_run("f-1")
    assert info.status is tether.RunStatus.BLOCKED


async def test_erase_removes_the_streamed_text_from_the_event_log(store_url: str) -> None:
    """A streamed LLM call's chunks are kept in the run's event log (for ``tether
    serve``'s resumable streams): text of the conversation. Erase used to leave them
    there, readable through the API's event stream; it deletes them now, and keeps the
    timeline's events (operations and statuses)."""
    from tether import ext

    app = App(store_url)

    @app.step
    async def answer() -> str:
        run = ext.current_run()
        assert run is not None
        for part in ("the patient's ", "ssn is 123-45-6789"):
            await run.publish({"type": "llm.chunk", "text": part})
        return "done"

    @app.workflow
    async def chat() -> str:
        return await answer()

    async with app, app.worker():
        assert await (await app.start(chat, run_id="c-1")).result(timeout=20) == "done"
        before = await app.store.run_events_read(run_id="c-1", after=None)
        assert any(e.kind == "status" and "completed" in (e.data or "") for e in before)
        assert any("123-45-6789" in (e.data or "") for e in before)
        report = await app.store.run_erase(run_id="c-1", now=app.clock.now())
        after = await app.store.run_events_read(run_id="c-1", after=None)
    assert not any("123-45-6789" in (e.data or "") for e in after)
    assert [e.kind for e in after] == [e.kind for e in before if e.kind != "chunk"]
    assert report.payloads >= 1 + 2  # the run's own, and the two chunks


async def test_erase_leaves_no_copy_of_the_text_in_the_sqlite_file(tmp_path: Path) -> None:
    """Erase overwrote the values but SQLite kept the old bytes in the freed space of
    its pages (``strings tether.db`` showed them after the erase); it zeroes them now
    (``secure_delete`` for the erase's statements): once the file is checkpointed
    (here, at close) no copy of the text is left in it."""
    path = tmp_path / "erase.db"
    app = App(f"sqlite:///{path}")

    @app.step
    async def shout(text: str) -> str:
        return text.upper() * 20

    @app.workflow
    async def note(text: str) -> str:
        return await shout(text)

    async with app, app.worker():
        for i in range(3):
            handle = await app.start(note, f"secret-text-{i}-", run_id=f"n-{i}")
            await handle.result(timeout=20)
        for i in range(3):
            await app.store.run_erase(run_id=f"n-{i}", now=app.clock.now())
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"secret-text" not in data and b"SECRET-TEXT" not in data


@pytest.mark.parametrize("hook", ["none", "aes-gcm"])
async def test_the_result_of_an_erased_run_says_it_was_erased(store_url: str,
                                                              hook: str) -> None:
    """``RunHandle.result()`` of an erased run raises ``RunFailed`` with status
    ``erased`` (what a parent awaiting an erased child meets), not the marker as if the
    workflow had returned it, nor, under ``AesGcm``, a ``PayloadNotEncryptedError`` that
    blames a process without the key for the marker."""
    from tether.encryption import AesGcm

    app = App(store_url, payload_hook=AesGcm({"k1": b"1" * 32}) if hook != "none" else None)

    @app.workflow
    async def total(x: int) -> int:
        return x + 1

    async with app, app.worker():
        handle = await app.start(total, 1, run_id="t-1")
        assert await handle.result(timeout=20) == 2
        await app.store.run_erase(run_id="t-1", now=app.clock.now())
        with pytest.raises(tether.RunFailed, match="erased") as caught:
            await app.handle("t-1").result(timeout=20)
        info = await app.get_run("t-1")
    assert caught.value.status == "erased"
    assert caught.value.error is not None
    assert caught.value.error["type"] == "tether.errors.RunErased"
    assert info.status is tether.RunStatus.COMPLETED and info.erased_at is not None


async def test_show_of_an_erased_failed_run_prints_the_marker_not_an_empty_error(
        store_url: str) -> None:
    """``tether show`` of a failed run after ``tether erase``, through a pipe and on a
    terminal: its error, its step's and its attempt's are the marker
    ``{"erased": true}``, as its input and results are. Each printed "Error: " before,
    as if the run had failed with an error without a type or message."""
    from tests.cli.test_fit import on_terminal
    from tests.life.test_cli_lifecycle import cli

    app = App(store_url)

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def send() -> str:
        raise RuntimeError("smtp down for ssn-123-45-6789")

    @app.workflow
    async def pipeline() -> str:
        return await send()

    async with app, app.worker():
        with pytest.raises(tether.RunFailed):
            await (await app.start(pipeline, run_id="e-1")).result(timeout=20)
        await app.store.run_erase(run_id="e-1", now=app.clock.now())
    piped = cli("show", "e-1", db=store_url)
    assert piped.returncode == 0, piped.stderr
    fitted = on_terminal("show", "e-1", db=store_url, columns=120)
    for out in (piped.stdout, fitted):
        assert "Error: " not in out and "ssn-123" not in out, out
        assert 'failed: {"erased": true}' in out, out
        step = next(ln for ln in out.splitlines() if " send " in ln and "#1" not in ln)
        attempt = next(ln for ln in out.splitlines() if "#1" in ln)
        assert step.rstrip().endswith('{"erased": true}'), out
        assert attempt.rstrip().endswith('{"erased": true}'), out
