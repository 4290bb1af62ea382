"""continue_as_new keeps one run id with bounded journals and carries pending signals;
purge and erase report what they deleted and leave the store consistent."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App


async def test_continue_as_new_keeps_the_run_and_its_signals(store_url: str) -> None:
    """A session that takes messages as signals continues as new every two messages:
    the journal stays short, every generation shows in the history, no signal is lost."""
    app = App(store_url)

    @app.step
    async def remember(note: str) -> str:
        return note.upper()

    @app.workflow
    async def session(seen: list[str]) -> list[str]:
        for _ in range(2):
            msg = await tether.wait_for_signal("message")
            if msg == "bye":
                return seen
            seen = [*seen, await remember(msg)]
        tether.continue_as_new(seen)

    async with app, app.worker():
        h = await app.start(session, [], run_id="s-1")
        for word in ("a", "b", "c", "d", "e"):
            await app.signal("s-1", "message", word)
        await app.signal("s-1", "message", "bye")  # all sent before most are taken
        assert await h.result(timeout=30) == ["A", "B", "C", "D", "E"]
        info = await app.get_run("s-1")
    assert info.generation == 2
    assert [g["generation"] for g in info.history] == [0, 1]
    assert info.history[1]["input"] == [["A", "B"]]
    assert all(len(g["journal"]) == 4 for g in info.history)
    assert len(info.journal) <= 4
    keys = {a["generation"] for a in info.attempts}
    assert keys == {0, 1, 2}


async def test_tether_show_names_the_generation_of_an_earlier_attempt(
        sqlite_url: str) -> None:
    """``tether show`` lists the attempts worth a look of every generation under the
    current generation's table; one of an earlier generation is marked with it
    (``g0.0``). Before, generation 0's two attempts at position 0 printed as ``0``, read
    as the current generation's step, which took one attempt."""
    import io

    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    app = App(sqlite_url)

    @app.step(retry=tether.RetryPolicy(initial_interval=0.01))
    async def flaky(gen: int) -> int:
        if gen == 0 and tether.step_attempt() == 1:
            raise RuntimeError("first try")
        return gen

    @app.workflow
    async def twice(gen: int) -> int:
        await flaky(gen)
        if gen == 0:
            tether.continue_as_new(1)
        return gen

    async with app, app.worker():
        assert await (await app.start(twice, 0, run_id="t-1")).result(timeout=30) == 1
        info = await app.get_run("t-1")
    wide, fitted = io.StringIO(), io.StringIO()
    print_timeline(info, wide)
    print_fitted(info, 80, fitted.write)
    for text in (wide.getvalue(), fitted.getvalue()):
        rows = text.split("\nattempts:\n")[1].split("\n\n")[0].splitlines()
        rows = [r.split()[0] for r in rows if "flaky" in r]
        assert rows == ["g0.0", "g0.0"], text


async def test_continue_as_new_outside_a_workflow_is_an_error() -> None:
    with pytest.raises(tether.OutsideRun, match="continue_as_new"):
        tether.continue_as_new(1)


async def test_continue_as_new_in_a_step_fails_the_step_not_the_journal(
        store_url: str) -> None:
    """Called in a step's body, ``continue_as_new`` passed through the step (its outcome
    never journaled) and continued the run as new, as the workflow's own call does: the
    next generation called ``job`` with the step's arguments (a TypeError here), and a
    step whose call was meant for its workflow ran again in each generation. As every
    other operation of the run (``tether.sleep``...), it is refused there now: the
    step's attempt fails with ``OutsideRun`` under its retry policy, and the run stays
    in its generation."""
    app = App(store_url)

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def decide() -> None:
        tether.continue_as_new("again")

    @app.workflow
    async def job() -> None:
        await decide()

    async with app, app.worker():
        h = await app.start(job, run_id="cs-1")
        with pytest.raises(tether.RunFailed, match="OutsideRun"):
            await h.result(timeout=20)
        info = await app.get_run("cs-1")
        assert info.generation == 0 and info.history == [], info
        assert [(e["kind"], e["name"], e["status"]) for e in info.journal] == [
            ("step", "decide", "error")], info.journal
        assert "not in a step" in info.journal[0]["error"]["message"], info.journal[0]


async def test_purge_and_erase_leave_the_store_consistent(store_url: str) -> None:
    app = App(store_url)

    @app.step
    async def secret(x: str) -> str:
        return f"secret-{x}"

    @app.workflow
    async def wf(x: str) -> str:
        return await secret(x)

    @app.workflow
    async def waits() -> str:
        return str(await tether.wait_for_signal("go"))

    async with app, app.worker():
        for i in range(3):
            await (await app.start(wf, f"p{i}", run_id=f"old-{i}")).result(timeout=20)
        keep = await app.start(wf, "k", run_id="keep")
        await keep.result(timeout=20)
        pending = await app.start(waits, run_id="pending")
        await app.signal("pending", "go", "payload-x")
        await pending.result(timeout=20)
        live = await app.start(waits, run_id="live")
        await wait_for(lambda: status_is(app, "live", "waiting"), what="live waiting")

        # Erase one run's payloads: the timeline keeps its shape.
        before = await app.get_run("pending")
        report = await app.store.run_erase(run_id="pending", now=app.clock.now())
        assert report.runs == 1 and report.signals == 1 and report.journal_entries == 1
        after = await app.get_run("pending")
        assert after.input == {"erased": True} and after.result == {"erased": True}
        assert [(e["kind"], e["name"], e["status"]) for e in after.journal] == [
            (e["kind"], e["name"], e["status"]) for e in before.journal]
        assert after.erased_at is not None
        with pytest.raises(tether.RunStateError, match="cancel it first"):
            await app.store.run_erase(run_id="live", now=app.clock.now())

        # Purge: the three old ones (made old by the cutoff), not the others.
        cutoff = (await app.get_run("old-2")).finished_at
        assert cutoff is not None
        listed = [len(await app.store.attempt_list(f"old-{i}")) for i in range(3)]
        assert listed == [1, 1, 1]
        report = await app.store.run_purge(finished_before=cutoff + 1e-6,
                                           statuses=["completed"])
        assert sorted(report.run_ids) == ["old-0", "old-1", "old-2"]
        # (The attempts the runs listed, on both stores: SQLite, which writes no row
        # for a first attempt that succeeded, its journal entry its record, counted
        # none of them.)
        assert report.runs == 3 and report.journal_entries == 3 and report.attempts == 3
        for rid in ("old-0", "old-1", "old-2"):
            with pytest.raises(tether.RunNotFound):
                await app.get_run(rid)
        for rid in ("keep", "pending", "live"):
            await app.get_run(rid)  # every remaining run still shows
        await app.signal("live", "go", 1)
        assert await live.result(timeout=20) == "1"
    await check_integrity(store_url)


async def test_purge_counts_the_attempts_the_runs_listed(store_url: str) -> None:
    """A purge's ``attempts`` is how many attempts ``App.get_run`` listed for the runs it
    deleted, on both stores: a first attempt that succeeded, one that failed and its
    retry, in two generations (the earlier one archived). SQLite, which writes no row
    for a first attempt that succeeded (its journal entry its record), counted only
    the rows: 2 here against PostgreSQL's 7 for the same history. Its ``run_ids`` are
    sorted on both (SQLite listed them in the order they ended)."""
    app = App(store_url)
    failed: list[int] = []

    @app.step
    async def first() -> int:
        return 1

    @app.step(retry=tether.RetryPolicy(max_attempts=3, initial_interval=0.01))
    async def flaky() -> int:
        if not failed:
            failed.append(1)
            raise ValueError("once")
        return 2

    @app.workflow
    async def gens(n: int) -> int:
        await first()
        await flaky()
        if n == 0:
            tether.continue_as_new(1)
        return n

    async with app, app.worker():
        assert await (await app.start(gens, 0, run_id="att-1")).result(timeout=20) == 1
        # (ended after att-1, listed before it: a purge's run_ids are sorted on both)
        assert await (await app.start(gens, 1, run_id="att-0")).result(timeout=20) == 1
        info = await app.get_run("att-1")
        later = await app.get_run("att-0")
        assert len(later.attempts) == 2, later.attempts
        assert sorted((a["generation"], a["name"], a["attempt"], a["status"])
                      for a in info.attempts) == [
            (0, "first", 1, "ok"), (0, "flaky", 1, "error"), (0, "flaky", 2, "ok"),
            (1, "first", 1, "ok"), (1, "flaky", 1, "ok")], info.attempts
        assert later.finished_at is not None
        report = await app.store.run_purge(finished_before=later.finished_at + 1,
                                           statuses=["completed"])
    assert (report.run_ids, report.archived_entries, report.attempts) == (
        ["att-0", "att-1"], 2, 7), report


async def check_integrity(url: str, runs: int = 3) -> None:
    """The backend's own consistency check, and no row left without its run."""
    if url.startswith("sqlite"):
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for table in ("tether_journal", "tether_attempts", "tether_signals",
                      "tether_journal_archive"):
            orphans = conn.execute(f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                                   "(SELECT 1 FROM tether_runs r WHERE r.run_id = t.run_id)"
                                   ).fetchall()
            assert orphans == [(0,)], table
        conn.close()
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("journal", "attempts", "signals", "journal_archive"):
            cur = await conn.execute(f"SELECT count(*) FROM tether.{table} t WHERE NOT EXISTS "
                                     "(SELECT 1 FROM tether.runs r WHERE r.run_id = t.run_id)")
            assert await cur.fetchone() == (0,), table
        cur = await conn.execute("SELECT count(*) FROM tether.runs")
        assert await cur.fetchone() == (runs,)


async def _purged(app: App, run_id: str) -> bool:
    try:
        await app.get_run(run_id)
    except tether.RunNotFound:
        return True
    return False


async def test_retention_policy_purges_in_the_background(store_url: str) -> None:
    app = App(store_url, retention=tether.Retention(older_than=0.0, every=0.1))

    @app.workflow
    async def quick() -> int:
        return 1

    async with app, app.worker():
        h = await app.start(quick, run_id="short-lived")
        assert await h.result(timeout=20) == 1

        await wait_for(lambda: _purged(app, "short-lived"), timeout=10,
                       what="purged by the retention policy")


async def test_a_purge_that_fails_unexpectedly_is_logged_and_tried_again(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An error of the purge that is no StoreError (a bug) ended the worker's retention
    loop, unsaid: no run was purged again until the worker restarted. It is logged with
    its traceback and the purge tried again at the next turn."""
    app = App(store_url, retention=tether.Retention(older_than=0.0, every=0.1))
    calls: list[int] = []

    @app.workflow
    async def quick() -> int:
        return 1

    async with app:
        purge = app.store.run_purge

        async def flaky(**kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug in the purge")
            return await purge(**kw)

        app.store.run_purge = flaky  # type: ignore[method-assign]
        async with app.worker():
            assert await (await app.start(quick, run_id="r")).result(timeout=20) == 1

            await wait_for(lambda: _purged(app, "r"), timeout=10,
                           what="purged after the failed purge")
    failed = [r for r in caplog.records if "the purge failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


def test_retention_and_durations_are_validated() -> None:
    from tether._lifecycle import parse_duration

    assert parse_duration("30d") == 30 * 86400
    assert parse_duration(dt.timedelta(minutes=2)) == 120
    for bad in ("soon", "-1s", -5, True):
        with pytest.raises(tether.ConfigError):
            parse_duration(bad)
    with pytest.raises(tether.ConfigError):
        App("sqlite:///x.db", retention="eventually")


async def test_purge_keeps_a_child_its_waiting_parent_may_still_read(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def child() -> int:
        return 7

    @app.workflow
    async def parent() -> int:
        handle = await tether.start_child(child)
        await tether.wait_for_signal("then")  # the child ends meanwhile
        return await handle.result()

    async with app, app.worker():
        h = await app.start(parent, run_id="p")
        await wait_for(lambda: status_is(app, "p.0", "completed"), what="child done")
        report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                           statuses=["completed"])
        assert report.runs == 0
        await app.signal("p", "then")
        assert await h.result(timeout=20) == 7
        report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                           statuses=["completed"])
        assert sorted(report.run_ids) == ["p", "p.0"]


async def test_each_generation_gets_children_of_its_own(store_url: str) -> None:
    """Positions start again at 0 after continue_as_new, and a child's default id was
    ``<parent>.<position>``: the second generation's child had the first one's id, and
    the run got the first generation's child result back (13 for 17)."""
    app = App(store_url)

    @app.workflow
    async def plus_ten(x: int) -> int:
        return x + 10

    @app.workflow
    async def rounds(x: int, left: int) -> list[int]:
        got = await tether.call(plus_ten, x)
        if left:
            tether.continue_as_new(x + 4, left - 1)
        return [got]

    async with app, app.worker():
        assert await (await app.start(rounds, 3, 2, run_id="g")).result(timeout=30) == [21]
        ids = sorted(r.run_id for r in await app.store.run_list(limit=10)
                     if r.parent_run_id == "g")
    assert ids == ["g.0", "g.g1.0", "g.g2.0"]


async def test_purge_and_erase_lines_count_one_in_the_singular(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The retention log line, ``tether purge`` and ``tether erase`` say "1 run", "1
    journal entry", "1 attempt error", "1 signal payload" (they said "purged 1 runs" and
    "1 attempt errors, 1 signal payloads" until 2026-12-06), and the plural otherwise."""
    from tests.life.test_cli_lifecycle import cli

    caplog.set_level("INFO", logger="tether")
    app = App(store_url, retention=tether.Retention(older_than=0.0, every=0.1))

    @app.step
    async def one() -> int:
        return 1

    @app.workflow
    async def quick() -> int:
        return await one()

    async with app, app.worker():
        assert await (await app.start(quick, run_id="q-1")).result(timeout=20) == 1
        await wait_for(lambda: _purged(app, "q-1"), timeout=10, what="purged")
    lines = [r.getMessage() for r in caplog.records if "retention: purged" in r.getMessage()]
    assert lines == [
        "retention: purged 1 run (1 journal entry, 1 attempt, 0 signals, 0 message texts)"]

    app = App(store_url)

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def fragile(x: int) -> int:
        raise ValueError(f"bad {x}")

    @app.workflow
    async def picky() -> int:
        return await fragile(int(await tether.wait_for_signal("go")))

    async with app, app.worker():
        await app.start(picky, run_id="e-1")
        await wait_for(lambda: status_is(app, "e-1", "waiting"), what="e-1 waits")
        await app.signal("e-1", "go", 3)
        with pytest.raises(tether.RunFailed):
            await app.handle("e-1").result(timeout=20)
        await app.start(picky, run_id="e-2")
        await wait_for(lambda: status_is(app, "e-2", "waiting"), what="e-2 waits")
        await app.cancel("e-2")
        await wait_for(lambda: status_is(app, "e-2", "cancelled"), what="e-2 cancelled")
    erased = cli("erase", "e-1", db=store_url)
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.strip() == (
        "erased run e-1: its input and outcome, 2 journal entries, 0 archived entries, "
        "1 attempt error, 1 signal payload, 0 message texts no other run references")
    purged = cli("purge", "--older-than", "0s", "--status", "cancelled", db=store_url)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == (
        "purged 1 run: 1 journal entry, 0 archived entries, 0 attempts, 0 signals, "
        "0 message texts no run references")
