"""Erase reaches every copy of a run's data: its children (recursively) and its forks
(with their own children and forks), on both stores. A child's input, journal and
result hold its parent's data, and a fork's journal starts with rows copied from its
source; erasing the run alone used to leave all of them readable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import apsw
import httpx
import psycopg
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tests.life.test_cli_lifecycle import cli, one_line_error
from tether import App, RetryPolicy
from tether.serve import create_app
from tether.store.postgres import PostgresStore

SECRET = "ssn-123-45-6789"


async def raw_rows(app: App, url: str) -> list[str]:
    """Every row of every table of the store, as text (what a look at the database
    itself finds, past the store's API)."""
    store = app.store
    if not isinstance(store, PostgresStore):
        # (apsw, as the store: a second SQLite library in the process would not share
        # its locks and could read an older state of the file.)
        conn = apsw.Connection(url.removeprefix("sqlite:///"),
                               flags=apsw.SQLITE_OPEN_READONLY)
        try:
            tables = [n for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return [f"{t} {r!r}" for t in tables
                    for r in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1')]
        finally:
            conn.close()

    async def dump(conn: Any) -> list[str]:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE' ORDER BY 1", (store.schema,))
        out: list[str] = []
        for (table,) in await cur.fetchall():
            cur = await conn.execute(
                f'SELECT t::text FROM "{store.schema}"."{table}" t ORDER BY 1')
            out += [f"{table} {r}" for (r,) in await cur.fetchall()]
        return out

    return list(await store._run_op(dump))


def holding(rows: list[str], text: str = SECRET) -> list[str]:
    return [r for r in rows if text in r]


@asynccontextmanager
async def http(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """``tether serve``'s API on ``app`` (loopback mode: no token)."""
    asgi = create_app(app, mcp=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as client:
        yield client


def family_app(url: str) -> App:
    app = App(url)

    @app.step
    async def fetch(who: str) -> str:
        return f"record of {who}"

    @app.step
    async def shout(text: str) -> str:
        return text.upper() + "!" + text

    @app.workflow
    async def grandchild(text: str) -> str:
        return await shout(text)

    @app.workflow
    async def child(who: str) -> str:
        record = await fetch(who)
        return await tether.call(grandchild, record, run_id=f"{tether.run_id()}-g")

    @app.workflow
    async def parent(who: str) -> str:
        record = await fetch(who)
        return await tether.call(child, record, run_id=f"{tether.run_id()}-c")

    return app


async def test_erase_reaches_the_children_and_grandchildren(store_url: str) -> None:
    """``tether erase P``: P's child and grandchild (their inputs, steps and results
    hold P's data) are erased with it, in the same transaction; the line counts them."""
    app = family_app(store_url)
    async with app, app.worker():
        assert SECRET in await (await app.start("parent", SECRET, run_id="p")).result(timeout=20)
        assert holding(await raw_rows(app, store_url))
        out = cli("erase", "p", db=store_url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("erased run p and 2 runs of its family (p-c, p-c-g): "
                                     "their inputs and outcomes, 7 journal entries, "), out
        for run_id in ("p", "p-c", "p-c-g"):
            info = await app.get_run(run_id)
            assert info.erased_at is not None and info.input == {"erased": True}, run_id
            assert info.status is tether.RunStatus.COMPLETED
        assert holding(await raw_rows(app, store_url)) == []
        again = json.loads(cli("erase", "p", "--json", db=store_url).stdout)
    assert again["runs"] == 3 and again["run_ids"] == ["p", "p-c", "p-c-g"]


async def test_a_run_erased_with_its_family_is_already_erased(store_url: str) -> None:
    """A second erase of a run erased before says so (``already_erased``) and keeps the
    erase times, whether the run was erased itself or with its parent's family; a child
    erased alone and then with its parent's family is part of a new erase, its own time
    kept. Until 2026-12-06 only a run erased alone was "already erased": the child said
    ``already_erased: false`` and every ``erased_at`` of the family moved."""
    app = family_app(store_url)
    async with app, app.worker():
        await (await app.start("parent", SECRET, run_id="p")).result(timeout=20)
        await (await app.start("parent", SECRET, run_id="q")).result(timeout=20)
        first = json.loads(cli("erase", "q-c-g", "--json", db=store_url).stdout)
        assert first["already_erased"] is False and first["run_ids"] == ["q-c-g"]
        alone = (await app.get_run("q-c-g")).erased_at
        assert alone is not None
        out = json.loads(cli("erase", "q", "--json", db=store_url).stdout)
        assert out["already_erased"] is False and out["run_ids"] == ["q", "q-c", "q-c-g"]
        assert (await app.get_run("q-c-g")).erased_at == alone

        assert json.loads(cli("erase", "p", "--json", db=store_url).stdout)[
            "already_erased"] is False
        times = {r: (await app.get_run(r)).erased_at for r in ("p", "p-c", "p-c-g")}
        for run_id in ("p-c", "p-c-g", "p", "q-c"):
            again = json.loads(cli("erase", run_id, "--json", db=store_url).stdout)
            assert again["already_erased"] is True, (run_id, again)
        line = cli("erase", "p-c", db=store_url)
        assert line.returncode == 0, line.stderr
        assert line.stdout.startswith("run p-c was already erased (at "), line.stdout
        assert {r: (await app.get_run(r)).erased_at for r in times} == times
        assert (await app.get_run("q-c-g")).erased_at == alone


def fork_app(url: str, state: dict[str, bool]) -> App:
    app = App(url)

    @app.step
    async def fetch(who: str) -> str:
        return f"record of {who}"

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def send(text: str) -> str:
        if state["broken"]:
            raise RuntimeError("smtp down")
        return f"sent {text}"

    @app.step
    async def one() -> int:
        return 1

    @app.step
    async def two() -> int:
        return 2

    @app.workflow
    async def kid(text: str) -> str:
        return await send(text)

    @app.workflow
    async def flow(who: str) -> str:
        record = await fetch(who)  # 0
        await (two() if state["moved"] else one())  # 1
        await tether.wait_for_signal("go")  # 2
        told = await tether.call(kid, record)  # 3, 4
        return await send(told)  # 5

    return app


async def test_erase_reaches_the_forks_and_their_families(store_url: str) -> None:
    """A fork's journal starts with its source's rows (the record fetched at position
    0); erasing the source erases the fork, the fork's own child, and a fork of the
    source's child, read through ``tether show --json``, the HTTP API and the rows."""
    state = {"broken": False, "moved": False}
    app = fork_app(store_url, state)
    async with app, app.worker():
        await app.start("flow", SECRET, run_id="s")
        await app.signal("s", "go", 1)
        assert SECRET in await app.handle("s").result(timeout=20)
        await app.fork("s", at=1, new_run_id="f")
        await app.signal("f", "go", 1)
        assert SECRET in await app.handle("f").result(timeout=20)
        await app.fork("s.3", at=0, new_run_id="s.3-fork")
        assert SECRET in await app.handle("s.3-fork").result(timeout=20)
        assert SECRET in cli("show", "f", "--json", db=store_url).stdout

        async with http(app) as client:
            r = await client.post("/api/v1/runs/s/erase")
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["run_id"] == "s"
            assert answer["erased"]["run_ids"] == ["f", "f.3", "s", "s.3", "s.3-fork"]
            assert answer["erased"]["runs"] == 5
            schema = (await client.get("/openapi.json")).json()["paths"][
                "/api/v1/runs/{run_id}/erase"]["post"]["responses"]["200"]["content"][
                "application/json"]["schema"]["properties"]["erased"]
            assert set(answer["erased"]) == set(schema["required"]) == set(
                schema["properties"])
            for run_id in answer["erased"]["run_ids"]:
                doc = (await client.get(f"/api/v1/runs/{run_id}")).json()
                assert doc["erased_at"] is not None and SECRET not in str(doc), run_id
        show = cli("show", "f", "--json", db=store_url)
        assert show.returncode == 0 and SECRET not in show.stdout
        assert json.loads(show.stdout)["journal"][0]["result"] == {"erased": True}
        assert holding(await raw_rows(app, store_url)) == []


async def test_an_unfinished_member_refuses_the_erase_and_changes_nothing(
        store_url: str) -> None:
    """A parent that ended while its child still waits: erasing the parent would erase
    a running run's data under it, so nothing is erased, and the store, the command
    and the API name the child. Once the child has ended, the erase goes through."""
    app = App(store_url)

    @app.workflow
    async def waiter(who: str) -> str:
        return who + str(await tether.wait_for_signal("go"))

    @app.workflow
    async def starter(who: str) -> str:
        await tether.start_child(waiter, who, run_id="w")
        return who

    async with app, app.worker():
        assert await (await app.start(starter, SECRET, run_id="st")).result(
            timeout=20) == SECRET
        await wait_for(lambda: status_is(app, "w", "waiting"), what="child waits")
        before = await raw_rows(app, store_url)
        with pytest.raises(tether.RunStateError, match=r"'w' \(waiting\)"):
            await app.store.run_erase(run_id="st", now=app.clock.now())
        one_line_error(cli("erase", "st", db=store_url), "'w' (waiting)")
        async with http(app) as client:
            r = await client.post("/api/v1/runs/st/erase")
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
        assert "'w' (waiting)" in r.json()["error"]["message"]
        assert await raw_rows(app, store_url) == before
        await app.signal("w", "go", 1)
        assert await app.handle("w").result(timeout=20) == SECRET + "1"
        report = await app.store.run_erase(run_id="st", now=app.clock.now())
        assert report.run_ids == ["st", "w"]
        assert holding(await raw_rows(app, store_url)) == []


async def test_an_erased_fork_family_is_not_retried_resumed_or_forked(
        store_url: str) -> None:
    """The members erased with their source hold the marker as their input and results:
    a failed fork is not retried, a blocked one not resumed, neither forked."""
    state = {"broken": False, "moved": False}
    app = fork_app(store_url, state)
    async with app, app.worker():
        await app.start("flow", SECRET, run_id="s")
        await app.signal("s", "go", 1)
        await app.handle("s").result(timeout=20)
        state["broken"] = True
        await app.fork("s", at=1, new_run_id="failed")
        await app.signal("failed", "go", 1)
        with pytest.raises(tether.RunFailed):
            await app.handle("failed").result(timeout=20)
        await app.fork("s", at=1, new_run_id="blocked")
        await wait_for(lambda: status_is(app, "blocked", "waiting"), what="fork waits")
        state["moved"] = True  # a deploy that changed the code under the fork
        await app.signal("blocked", "go", 1)
        await wait_for(lambda: status_is(app, "blocked", "blocked"), what="fork blocked")
        state["moved"] = state["broken"] = False  # fixed
        report = await app.store.run_erase(run_id="s", now=app.clock.now())
        assert {"failed", "blocked"} <= set(report.run_ids)
        for run_id in ("failed", "blocked"):
            with pytest.raises(tether.RunErased):
                await app.retry(run_id)
            with pytest.raises(tether.RunErased):
                await app.fork(run_id, at=1, new_run_id=f"{run_id}-again")
        with pytest.raises(tether.RunErased):
            await app.resume("blocked")
        assert (await app.get_run("failed")).status is tether.RunStatus.FAILED
        assert (await app.get_run("blocked")).status is tether.RunStatus.BLOCKED


async def test_a_child_erased_alone_fails_its_waiting_parent(store_url: str) -> None:
    """Erasing a child alone erases its own family only (not its parent, which holds the
    result it took). A parent that had not taken the result yet used to take the
    marker, ``{"erased": true}``, as the child's result, and run on with it; it gets
    ``RunFailed`` with status ``erased`` now."""
    app = App(store_url)

    @app.workflow
    async def kid(who: str) -> str:
        return f"record of {who}"

    @app.workflow
    async def parent(who: str) -> str:
        handle = await tether.start_child(kid, who, run_id="k")
        await tether.wait_for_signal("go")
        try:
            return f"took {await handle.result()!r}"
        except tether.RunFailed as exc:
            return f"child {exc.status}"

    async with app, app.worker():
        await app.start(parent, SECRET, run_id="p")
        await wait_for(lambda: status_is(app, "k", "completed"), what="child ends")
        await wait_for(lambda: status_is(app, "p", "waiting"), what="parent waits")
        report = await app.store.run_erase(run_id="k", now=app.clock.now())
        assert report.run_ids == ["k"]
        assert (await app.get_run("p")).erased_at is None
        await app.signal("p", "go", 1)
        assert await app.handle("p").result(timeout=20) == "child erased"


@pytest.mark.postgres
async def test_a_fork_committed_during_an_erase_is_found_by_it(pg_migrated_url: str) -> None:
    """PostgreSQL: a fork and an erase of its source in parallel transactions. The fork
    read its source without a lock, so an erase that looked up the family while the
    fork's transaction was open (its rows copied, not committed) missed the fork, which
    kept the copies. The fork locks its source now (``FOR SHARE``): the erase waits for
    it, finds it, and refuses while it has not ended; once it has, it is erased too.
    (The fork is held at its last statement by a lock on ``blob_refs``.)"""
    url = pg_migrated_url
    app = fork_app(url, {"broken": False, "moved": False})
    async with app:
        async with app.worker():
            await app.start("flow", SECRET, run_id="s")
            await app.signal("s", "go", 1)
            await app.handle("s").result(timeout=20)
        store = app.store
        assert isinstance(store, PostgresStore)
        raw = await psycopg.AsyncConnection.connect(url, autocommit=True)

        async def waiting(n: int) -> bool:
            cur = await raw.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")
            row = await cur.fetchone()
            return row is not None and row[0] >= n

        try:
            async with raw.transaction():
                await raw.execute(
                    f'LOCK TABLE "{store.schema}".blob_refs IN SHARE ROW EXCLUSIVE MODE')
                fork = asyncio.create_task(app.fork("s", at=1, new_run_id="f"))
                await wait_for(lambda: waiting(1), what="the fork waits")
                erase = asyncio.create_task(store.run_erase(run_id="s", now=app.clock.now()))
                await wait_for(lambda: waiting(2), what="the erase waits")
        finally:
            await raw.close()
        await fork
        with pytest.raises(tether.RunStateError, match=r"'f' \(queued\)"):
            await erase
        assert (await app.get_run("s")).erased_at is None
        async with app.worker():
            await app.cancel("f")
            await wait_for(lambda: status_is(app, "f", "cancelled"), what="fork cancelled")
        report = await store.run_erase(run_id="s", now=app.clock.now())
        assert report.run_ids == ["f", "s", "s.3"]
        assert holding(await raw_rows(app, url)) == []
