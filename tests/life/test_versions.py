"""Code versions in one process: claims by version, and the compatibility check that
migrate-runs relies on (a dry replay that executes nothing)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether._lifecycle import check_compatible


def code(url: str, version: str, second: str = "b", third: bool = False,
         ran: list[str] | None = None) -> App:
    app = App(url, version=version)
    log = ran if ran is not None else []

    @app.step(name="a")
    async def a() -> str:
        log.append(f"{version}:a")
        return "a"

    @app.step(name=second)
    async def b() -> str:
        log.append(f"{version}:{second}")
        return second

    @app.workflow
    async def flow() -> str:
        await a()
        await tether.wait_for_signal("go")
        out = await b()
        if third:
            out += await a()
        return out

    return app


async def test_workers_claim_their_own_version(store_url: str) -> None:
    ran: list[str] = []
    v1, v2 = code(store_url, "v1", ran=ran), code(store_url, "v2", ran=ran)
    plain = App(store_url)

    @plain.workflow
    async def flow() -> str:  # the same name, no version: claims only runs without one
        return "plain"

    async with v1, v2, plain:
        h1 = await v1.start("flow", run_id="one")
        h2 = await v2.start("flow", run_id="two")
        async with v2.worker(), plain.worker():
            await wait_for(lambda: status_is(v2, "two", "waiting"), what="v2 run waiting")
            await asyncio.sleep(0.3)
            assert (await v1.get_run("one")).status == tether.RunStatus.QUEUED
            await v2.signal("two", "go")
            assert await h2.result(timeout=20) == "b"
        async with plain.worker():  # runs without a version: any worker with the code
            h3 = await plain.start("flow", run_id="three")
            assert await h3.result(timeout=20) == "plain"
            assert (await v1.get_run("one")).status == tether.RunStatus.QUEUED
        async with v1.worker():
            await wait_for(lambda: status_is(v1, "one", "waiting"), what="v1 run waiting")
            await v1.signal("one", "go")
            assert await h1.result(timeout=20) == "b"
        assert (await v1.get_run("one")).version == "v1"
        assert ran == ["v2:a", "v2:b", "v1:a", "v1:b"]
        assert sorted(await v1.store.run_versions(), key=str) == sorted(
            [(None, "completed", 1), ("v1", "completed", 1), ("v2", "completed", 1)], key=str)


async def test_compatibility_check_replays_without_executing(store_url: str) -> None:
    ran: list[str] = []
    v1 = code(store_url, "v1", ran=ran)
    async with v1, v1.worker():
        await v1.start("flow", run_id="w")
        await wait_for(lambda: status_is(v1, "w", "waiting"), what="waiting")
        h = await v1.start("flow", run_id="done")
        await wait_for(lambda: status_is(v1, "done", "waiting"), what="waiting")
        await v1.signal("done", "go")
        await h.result(timeout=20)
    assert ran == ["v1:a", "v1:a", "v1:b"]
    same = code(store_url, "v2", ran=ran)
    renamed_first = App(store_url, version="v2")

    @renamed_first.step(name="z")
    async def z() -> str:
        ran.append("z")
        return "z"

    @renamed_first.workflow
    async def flow() -> str:
        await z()
        return "z"

    shorter = code(store_url, "v2", ran=ran, third=False)
    longer = code(store_url, "v2", ran=ran, third=True)
    async with same, renamed_first, shorter, longer:
        assert await check_compatible(same, "w") is None
        reason = await check_compatible(renamed_first, "w")
        assert reason is not None and "position 0" in reason
        assert await check_compatible(longer, "w") is None  # new operations come later
        assert await check_compatible(shorter, "done") is None
        removed = await check_compatible(renamed_first, "done")
        assert removed is not None
        assert await check_compatible(same, "nope") == "no such run"
    assert ran == ["v1:a", "v1:a", "v1:b"]  # nothing executed by the checks


def test_a_version_must_be_text() -> None:
    for bad in ("", "  ", 3):
        with pytest.raises(tether.ConfigError):
            App("sqlite:///x.db", version=bad)  # type: ignore[arg-type]


async def test_start_many_records_the_version(store_url: str) -> None:
    """start_many records the app's version on every run, as start does (both stores)."""
    v3 = code(store_url, "v3")
    async with v3:
        handles = await v3.start_many("flow", [[], []], run_ids=["m1", "m2"])
        single = await v3.start("flow", run_id="m3")
        for h in [*handles, single]:
            assert (await v3.get_run(h.run_id)).version == "v3"
        assert await v3.store.run_versions() == [("v3", "queued", 3)]


async def test_a_child_runs_on_its_parents_version(store_url: str) -> None:
    """A run of version v1 starts a child while a v2 worker serves the child's queue (a
    deploy in progress): the child records v1, so the v2 worker leaves it and a v1
    worker runs it with v1's code. Before, children were recorded without a version,
    which every worker may claim: the new version's code ran the old version's
    children."""
    v1, v2 = App(store_url, version="v1"), App(store_url, version="v2")

    @v1.workflow(queue="kids")
    async def kid() -> str:
        return "v1-kid"

    @v1.workflow(queue="main")
    async def parent() -> str:
        return await tether.call(kid)

    @v2.workflow(name="kid", queue="kids")
    async def kid2() -> str:
        return "v2-kid"

    async def settled() -> bool:  # recorded v1 (left queued), or claimed by v2 at once
        got = await v1.store.run_get("p.0")
        return got is not None and (got.version == "v1" or got.status != "queued")

    async with v1, v2:
        handle = await v1.start(parent, run_id="p")
        async with v2.worker(), v1.worker(queues=["main"]):
            await wait_for(settled, timeout=20, what="the child started")
            async with v1.worker(queues=["kids"]):
                assert await handle.result(timeout=20) == "v1-kid"
        child = await v1.store.run_get("p.0")
        assert child is not None and child.version == "v1"


async def test_a_retried_tree_runs_on_the_version_it_is_retried_under(store_url: str) -> None:
    """A v1 parent failed on its v1 child's failure; the fixed code is deployed as v2 and
    the operator retries the parent with ``--app`` of v2. Parent and child come back on
    v2, so v2's workers finish the tree. Before, the child kept v1 (the rule from when
    children had no version) and waited for a v1 worker that no longer ran, with its
    parent waiting for it."""
    broken = App(store_url, version="v1")

    @broken.workflow(name="kid")
    async def kid1() -> str:
        raise RuntimeError("bug in v1")

    @broken.workflow(name="boss")
    async def boss1() -> str:
        return await tether.call("kid")

    async with broken, broken.worker():
        with pytest.raises(tether.RunFailed):
            await (await broken.start(boss1, run_id="b")).result(timeout=20)
        assert (await broken.store.run_get("b.0")).version == "v1"  # type: ignore[union-attr]

    fixed = App(store_url, version="v2")

    @fixed.workflow(name="kid")
    async def kid2() -> str:
        return "fixed"

    @fixed.workflow(name="boss")
    async def boss2() -> str:
        return await tether.call("kid")

    async with fixed:
        await fixed.retry("b")
        versions = {rid: (await fixed.store.run_get(rid)).version  # type: ignore[union-attr]
                    for rid in ("b", "b.0")}
        assert versions == {"b": "v2", "b.0": "v2"}, versions
        async with fixed.worker():
            assert await fixed.handle("b").result(timeout=20) == "fixed"


def pulse_code(url: str, version: str) -> App:
    app = App(url, version=version)

    @app.schedule("* * * * * *", name="pulse")  # every second
    @app.workflow
    async def pulse() -> str:
        return version

    return app


async def ticks(app: App, since: float) -> list[tuple[float, str | None, str]]:
    """(created, version, status) of the schedule's tick runs created after ``since``."""
    runs = await app.store.run_list(limit=10_000)
    return sorted((r.created_at, r.version, r.status.value) for r in runs
                  if r.run_id.startswith("pulse@") and r.created_at > since)


async def test_a_schedules_ticks_go_to_the_newest_live_version(store_url: str) -> None:
    """In a rolling deploy the old and the new version's workers run side by side, and
    each tick's run was started by whichever worker's scheduler fired first, with that
    worker's version: ticks after the deploy ran old and new code by turns (seen:
    v1, v1, v2, v2). A tick's run now goes to the newest live
    version, as the deploy's other new runs do, whoever starts it; once the new
    version's workers are gone (stopped: a rollback), the ticks go back to the old."""
    old, new = pulse_code(store_url, "v1"), pulse_code(store_url, "v2")
    async with old, new, old.worker():
        start = time.time()
        await wait_for(lambda: _n_ended(old, start, 2), timeout=20, what="two v1 ticks")
        assert {v for _, v, _ in await ticks(old, start)} == {"v1"}
        async with new.worker():
            deployed = time.time()
            await wait_for(lambda: _n_ended(old, deployed, 4), timeout=20,
                           what="four ticks after the deploy")
            after = await ticks(old, deployed)
        assert [v for _, v, _ in after] == ["v2"] * len(after), after
        gone = time.time()
        await wait_for(lambda: _n_ended(old, gone, 2), timeout=20,
                       what="two ticks after the new version stopped")
        assert {v for _, v, _ in await ticks(old, gone)} == {"v1"}


async def _n_ended(app: App, since: float, n: int) -> bool:
    return sum(s == "completed" for _, _, s in await ticks(app, since)) >= n


async def test_a_versioned_workers_start_line_names_its_version(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # An operator rolling out v2 beside v1 reads from each worker's first line which
    # code it claims for (until 2026-12-07 the line was the same for every version).
    caplog.set_level(logging.INFO, "tether.worker")
    plain = App(store_url)

    @plain.workflow
    async def flow() -> str:
        return "plain"

    async with code(store_url, "2026-12-07") as v2, plain:
        async with v2.worker(), plain.worker():
            pass
    lines = [r.getMessage() for r in caplog.records if "serving queues" in r.getMessage()]
    assert len(lines) == 2, lines
    versioned = [line for line in lines if "version" in line]
    assert len(versioned) == 1, lines
    assert versioned[0].endswith(
        "(concurrency 50, version 2026-12-07: its runs and runs without one)"), versioned


async def test_a_fork_by_an_app_of_no_version_warns_that_it_left_the_version_behind(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A fork runs under the version of the app that forks it: none from an app of none
    (the bare ``tether fork``, ``serve`` without ``--app``), so the fork of a run pinned
    to v1 is claimed by workers of every version. That happened in silence, where a
    retry warned; the fork now warns too, and ``fork`` of the API (``warnings``) and
    the CLI (stderr) say it. A fork by an app of a version says nothing of it."""
    from tests.life.test_cli_lifecycle import cli
    from tether.serve._control import fork as api_fork

    pinned = App(store_url, version="v1")

    @pinned.workflow(name="job")
    async def job() -> str:
        return "done"

    async with pinned, pinned.worker():
        await (await pinned.start(job, run_id="f-1")).result(timeout=20)
    plain = App(store_url)
    async with plain:
        with caplog.at_level(logging.WARNING, logger="tether"):
            handle = await plain.fork("f-1", at=0, new_run_id="f-1.a")
        assert (await plain.store.run_get("f-1.a")).version is None  # type: ignore[union-attr]
        said = [r.getMessage() for r in caplog.records if "code version" in r.getMessage()]
        assert said == [
            "run 'f-1' ran under code version 'v1'; its fork 'f-1.a', made by an app of no "
            "version, has none: workers of every version may claim it (a fork from the app "
            "of a version, tether fork --app MODULE:APP or serve --app, gives it that "
            "version)"], said
        assert handle.created
        # (what POST /api/v1/runs/f-1/fork runs)
        doc, status = await api_fork(plain, "f-1", 0, None, "f-1.b")
        assert status == 201 and doc["version"] is None
        assert any("its fork 'f-1.b', made by an app of no version" in w
                   for w in doc.get("warnings", [])), doc
        out = await asyncio.to_thread(cli, "fork", "f-1", "--at", "0", "--id", "f-1.c",
                                      db=store_url)
        assert out.returncode == 0 and out.stdout == "f-1.c\n", out.stderr
        assert "its fork 'f-1.c', made by an app of no version" in out.stderr, out.stderr
    # Forked by an app of a version: it has that version, and nothing is said of it.
    again = App(store_url, version="v1")
    async with again:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tether"):
            await again.fork("f-1", at=0, new_run_id="f-1.d")
        assert not [r for r in caplog.records if "code version" in r.getMessage()]
        doc, _ = await api_fork(again, "f-1", 0, None, "f-1.e")
        assert not [w for w in doc.get("warnings", []) if "code version" in w], doc


async def test_a_retry_by_an_app_of_no_version_warns_that_the_run_lost_its_version(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A retry gives the run the version of the app that retries it: none from an app
    of none (the bare ``tether retry``, ``serve`` without ``--app``), so a run pinned to
    v1 is then claimed by workers of every version. That happened in silence; the retry
    now warns, and ``retry`` of the API (``warnings``) and the CLI (stderr) say it too.
    A retry that keeps a version, or of a run that had none, says nothing of it."""
    from tests.life.test_cli_lifecycle import cli
    from tether.serve._control import retry as api_retry

    pinned = App(store_url, version="v1")

    @pinned.workflow(name="job")
    async def job() -> str:
        raise RuntimeError("bug in v1")

    async with pinned, pinned.worker():
        for run_id in ("v-1", "v-2", "v-3"):
            with pytest.raises(tether.RunFailed):
                await (await pinned.start(job, run_id=run_id)).result(timeout=20)
    plain = App(store_url)
    async with plain:
        with caplog.at_level(logging.WARNING, logger="tether"):
            await plain.retry("v-1")
        assert (await plain.store.run_get("v-1")).version is None  # type: ignore[union-attr]
        said = [r.getMessage() for r in caplog.records if "code version" in r.getMessage()]
        assert said == [
            "run 'v-1' ran under code version 'v1'; retried by an app of no version, it has "
            "none now: workers of every version may claim it (a retry from the app of a "
            "version, tether retry --app MODULE:APP or serve --app, gives it that version)"]
        doc = await api_retry(plain, "v-2")  # (what POST /api/v1/runs/v-2/retry runs)
        assert doc["version"] is None
        assert any("ran under code version 'v1'" in w for w in doc.get("warnings", [])), doc
        out = await asyncio.to_thread(cli, "retry", "v-3", db=store_url)
        assert out.returncode == 0, out.stderr
        assert "ran under code version 'v1'" in out.stderr, out.stderr
        # Retried again, of none now: nothing to say of its version.
        caplog.clear()
        await plain.store.run_cancel(run_id="v-1", now=plain.clock.now())  # (never started)
        with caplog.at_level(logging.WARNING, logger="tether"):
            await plain.retry("v-1")
        assert not [r for r in caplog.records if "code version" in r.getMessage()]
