"""Cron parsing, schedule ticks (overlap and catch-up policies) and the schedules CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests import forked
from tests.life.procs import ROOT
from tether import App
from tether._lifecycle import Cron, tick_run_id, tick_schedules, zone_of

UTC = dt.UTC


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(t: float, zone: dt.tzinfo = UTC) -> str:
    return dt.datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("*/5 * * * *", "2026-12-02 10:03:10", "2026-12-02 10:05:00"),
    ("0 9 * * 1", "2026-12-02 10:00:00", "2026-12-07 09:00:00"),  # next Monday
    ("0 0 1 * *", "2026-12-15 00:00:00", "2027-01-01 00:00:00"),
    ("30 8 * * mon-fri", "2026-12-05 09:00:00", "2026-12-07 08:30:00"),  # Sat -> Mon
    ("*/10 * * * * *", "2026-12-02 10:00:01", "2026-12-02 10:00:10"),  # seconds first
    ("0 12 13 * 5", "2026-12-02 00:00:00", "2026-12-04 12:00:00"),  # day OR weekday
    ("@daily", "2026-12-02 00:00:00", "2026-12-03 00:00:00"),
    ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
    ("5/1 * * * *", "2026-12-02 10:05:00", "2026-12-02 10:06:00"),  # 5-59/1: every minute
    ("5/15 * * * *", "2026-12-02 10:05:00", "2026-12-02 10:20:00"),
    # A day field starting with '*' is unrestricted: the day fields are ANDed (cronie),
    # an odd day that is a Monday (Dec 7 is an odd Monday), not an odd day or a Monday
    ("0 0 */2 * mon", "2026-12-02 00:00:00", "2026-12-07 00:00:00"),
    ("0 0 */2 * mon", "2026-12-07 00:00:00", "2026-12-21 00:00:00"),
    ("0 0 13 * */2", "2026-12-02 00:00:00", "2026-12-13 00:00:00"),  # a 13th, Sunday
])
def test_cron_next_tick(cron: str, after: str, expected: str) -> None:
    assert iso(Cron.parse(cron).next_after(ts(after), UTC)) == expected


@pytest.mark.parametrize(("cron", "days"), [
    ("0 9 * * 2-7/2", ["Tue", "Thu", "Sat"]),  # 2, 4, 6: the step passes over 7
    ("0 9 * * 4/2", ["Thu", "Sat"]),  # 4-7/2: 4, 6
    ("0 9 * * 2-7/5", ["Sun", "Tue"]),  # 2, 7
    ("0 9 * * 1-7/2", ["Sun", "Mon", "Wed", "Fri"]),  # 1, 3, 5, 7
    ("0 9 * * */2", ["Sun", "Tue", "Thu", "Sat"]),  # 0-7/2: 0, 2, 4, 6
    ("0 9 * * 5/2", ["Sun", "Fri"]),  # 5, 7
    ("0 9 * * 6-7", ["Sun", "Sat"]),
])
def test_a_weekday_step_ticks_on_sunday_only_when_it_lands_on_7(cron: str,
                                                                 days: list[str]) -> None:
    """A weekday range that ends at 7 (Sunday, as 0 is) took Sunday whatever its step:
    ``2-7/2`` (Tuesday, Thursday, Saturday in Vixie cron) ticked on Sundays too."""
    c, t, seen = Cron.parse(cron), ts("2027-01-04 00:00:00"), set()  # a Monday
    for _ in range(14):
        t = c.next_after(t, UTC)
        seen.add(dt.datetime.fromtimestamp(t, UTC).strftime("%a"))
    week = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]  # (the order of ``days``)
    assert sorted(seen, key=week.index) == days


def test_cron_in_a_time_zone() -> None:
    paris = zone_of("Europe/Paris")
    nxt = Cron.parse("0 9 * * *").next_after(ts("2026-12-02 09:30:00"), paris)
    assert iso(nxt, paris) == "2026-12-03 09:00:00"
    assert iso(nxt) == "2026-12-03 08:00:00"  # UTC+1 in winter


def _ticks(cron: str, after: str, n: int) -> list[str]:
    """The next ``n`` ticks of ``cron`` in Paris after UTC time ``after``, in UTC."""
    paris, c, t, out = zone_of("Europe/Paris"), Cron.parse(cron), ts(after), []
    for _ in range(n):
        t = c.next_after(t, paris)
        out.append(iso(t)[11:16])
    return out


def test_cron_across_the_clocks_going_back_and_forward() -> None:
    """Paris, 25 October 2026: at 03:00 CEST (01:00Z) the clocks go back to 02:00 CET,
    so 02:00-02:59 comes twice. Every 30 minutes stays every 30 minutes through both
    passes (it skipped the second: 90 minutes without a tick); 02:30 daily ticks once.
    29 March 2026: 02:00-02:59 is skipped, and every 30 minutes goes on."""
    assert _ticks("*/30 * * * *", "2026-10-24 23:45:00", 6) == [
        "00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]
    assert _ticks("30 2 * * *", "2026-10-24 23:45:00", 2) == ["00:30", "01:30"]
    assert _ticks("*/30 * * * *", "2026-03-29 00:15:00", 3) == ["00:30", "01:00", "01:30"]
    assert _ticks("30 2 * * *", "2026-03-28 02:00:00", 2) == ["01:30", "00:30"]


def test_cron_next_tick_searches_only_near_a_change_of_the_clocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker computes each missed tick with ``next_after`` on its event loop (up to
    10,000 per schedule). The search over three hours of wall times that a change of
    the clocks needs cost 30 ms a tick for a cron of every second, so an hour's catch-up
    blocked the loop for 100 s, past every lease: away from a change, the tick is
    computed directly (the search is not entered), and near one it is."""
    searched: list[float] = []
    precise = Cron._next_around_change

    def counted(self: Cron, after: float, zone: dt.tzinfo) -> float:
        searched.append(after)
        return precise(self, after, zone)

    monkeypatch.setattr(Cron, "_next_around_change", counted)
    paris, c, t = zone_of("Europe/Paris"), Cron.parse("* * * * * *"), ts("2026-06-01 10:00:00")
    for _ in range(300):
        t = c.next_after(t, paris)
    assert t == ts("2026-06-01 10:05:00") and searched == []
    assert _ticks("*/30 * * * *", "2026-10-24 23:45:00", 6)[2] == "01:00"
    assert searched  # (the repeated hour needs the search)


def test_cron_next_tick_builds_no_wall_time_before_its_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``next_after`` built (and compared) every wall time of its start's hour before
    the start: up to 3,600 datetimes a tick for a cron of every second, so a worker's
    catch-up of an hour of ticks took 1.2 s of CPU on its event loop, and the overlap
    check of ``catchup="all"`` with ``catchup_max=1000`` 2 s each tick. Counted here in
    datetimes built, a tick late in an hour costs what one early in it does."""
    import types

    from tether import _lifecycle

    built = [0]

    class Counted(dt.datetime):
        def __new__(cls, *args: object, **kwargs: object) -> Counted:
            built[0] += 1
            return super().__new__(cls, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_lifecycle, "dt", types.SimpleNamespace(
        datetime=Counted, timedelta=dt.timedelta, date=dt.date, tzinfo=dt.tzinfo, UTC=UTC))
    every_second = Cron.parse("* * * * * *")
    for start, expected in (("2026-06-01 10:00:05", "2026-06-01 10:00:06"),
                            ("2026-06-01 10:59:58", "2026-06-01 10:59:59"),
                            ("2026-06-01 10:59:59", "2026-06-01 11:00:00")):
        built[0] = 0
        assert iso(every_second.next_after(ts(start), UTC)) == expected
        assert built[0] < 20, (start, built[0])


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "*/0 * * * *", "a b c d e",
                                 "5-1 * * * *", "0 0 31 2 *"])
def test_bad_cron_is_a_clear_error(bad: str) -> None:
    with pytest.raises(tether.ConfigError, match="cron"):
        Cron.parse(bad).next_after(ts("2026-01-01 00:00:00"), UTC)


@pytest.mark.parametrize("never", ["0 0 30 2 *", "* * 31 2 *", "0 0 31 4,6,9,11 *",
                                   "0 0 30-31 feb *"])
def test_a_cron_naming_no_existing_day_is_refused_where_it_is_declared(never: str) -> None:
    """A cron whose days never exist (the 30th of February) is refused by app.schedule,
    naming them. It was accepted there, and the first worker of the app to start exited
    with "no tick within five years", stopping every other workflow's runs with it."""
    app = App("sqlite:///unused.db")

    @app.workflow
    async def job() -> None: ...

    with pytest.raises(tether.ConfigError, match=r"no day it names exists.*never tick"):
        app.schedule(job, cron=never)
    # Days that exist in some year, or a weekday besides (Vixie's OR), are fine.
    for cron in ("0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *", "0 0 30,31 1-12/2 *"):
        app.schedule(job, cron=cron, name=f"ok{len(app._schedules)}")
    assert len(app._schedules) == 4


def test_a_schedule_input_the_store_cannot_hold_is_refused_where_it_is_declared() -> None:
    """An input that is no JSON was accepted by app.schedule; the app's first worker then
    exited at its start ("input of schedule ...: not JSON-serializable"), stopping every
    other workflow's runs with it."""
    app = App("sqlite:///unused.db", max_payload=1000)

    @app.workflow
    async def job(x: object = None) -> None: ...

    with pytest.raises(tether.NotSerializable, match="input of schedule 'job'"):
        app.schedule(job, cron="* * * * *", input=[object()])
    with pytest.raises(tether.PayloadTooLarge, match="input of schedule 'big'"):
        app.schedule(job, cron="* * * * *", input=["x" * 2000], name="big")
    assert app._schedules == {}
    app.schedule(job, cron="* * * * *", input={"args": [], "kwargs": {"x": [1, "a"]}})
    assert list(app._schedules) == ["job"]


def test_schedule_options_are_validated() -> None:
    app = App("sqlite:///unused.db")

    @app.workflow
    async def job() -> None: ...

    for kwargs in ({"timezone": "Mars/Olympus"}, {"overlap": "sometimes"},
                   {"catchup": "maybe"}, {"catchup_max": 0}, {"name": "a@b"}):
        with pytest.raises(tether.ConfigError):
            app.schedule(job, cron="* * * * *", **kwargs)
    with pytest.raises(tether.ConfigError, match="cron"):
        app.schedule(job)
    with pytest.raises(tether.ConfigError, match="not a workflow"):
        app.schedule("* * * * *")(lambda: None)


async def setup(url: str, **options: object) -> tuple[App, list[str]]:
    app = App(url)
    done: list[str] = []

    @app.workflow
    async def job() -> str:
        done.append(tether.run_id())
        return "ok"

    @app.workflow
    async def blocker() -> str:
        return str(await tether.wait_for_signal("never"))

    app.schedule(job, cron="0 * * * *", name="hourly", **options)  # type: ignore[arg-type]
    app.schedule(blocker, cron="0 * * * *", name="slow", overlap="skip")
    app.schedule(blocker, cron="0 * * * *", name="slow-cancel", overlap="cancel_previous")
    return app, done


async def test_ticks_catchup_and_overlap(store_url: str) -> None:
    """Driven by explicit times: ticks missed while no worker ran start once (latest),
    each (all, at most N) or not at all (skip); an unfinished previous run makes a tick
    skip, or gets cancelled."""
    from tether._lifecycle import to_record

    app, _ = await setup(store_url, catchup="all", catchup_max=2, overlap="allow")
    async with app:
        store = app.store
        t0 = ts("2026-12-02 10:30:00")
        for spec in app._schedules.values():
            await store.schedule_upsert(schedule=to_record(app, spec, t0))
        names = {"job", "blocker"}
        # 5 hours pass with no worker: catchup=all starts the last 2 missed ticks.
        nxt = await tick_schedules(app, store, names, ts("2026-12-02 15:10:00"), lambda: None)
        assert nxt == ts("2026-12-02 16:00:00")
        runs = sorted(r.run_id for r in await store.run_list(limit=100))
        assert [r for r in runs if r.startswith("hourly@")] == [
            "hourly@2026-12-02T14:00:00Z", "hourly@2026-12-02T15:00:00Z"]
        # overlap: the blockers' runs have not ended (no worker): skip vs cancel.
        await tick_schedules(app, store, names, ts("2026-12-02 16:00:01"), lambda: None)
        runs = sorted(r.run_id for r in await store.run_list(limit=100))
        assert [r for r in runs if r.startswith("slow@")] == ["slow@2026-12-02T15:00:00Z"]
        assert [r for r in runs if r.startswith("slow-cancel@")] == [
            "slow-cancel@2026-12-02T15:00:00Z", "slow-cancel@2026-12-02T16:00:00Z"]
        prev = await store.run_get("slow-cancel@2026-12-02T15:00:00Z")
        assert prev is not None and prev.cancel_requested
        # (its reason says whose cancel it was: tether show and tether result say it)
        assert (prev.cancel_reason, prev.cancelled_with) == (
            "schedule 'slow-cancel' started its next run (overlap cancel_previous)", None)
        # A second worker ticking the same moment starts nothing new.
        before = len(await store.run_list(limit=100))
        await tick_schedules(app, store, names, ts("2026-12-02 16:00:01"), lambda: None)
        assert len(await store.run_list(limit=100)) == before
        assert tick_run_id("x", ts("2026-12-02 16:00:00")) == "x@2026-12-02T16:00:00Z"


async def test_catchup_latest_and_skip(store_url: str) -> None:
    from tether._lifecycle import to_record

    for policy, expected in (("latest", ["hourly@2026-12-02T15:00:00Z"]), ("skip", [])):
        app, _ = await setup(store_url.replace("tether.db", f"{policy}.db")
                             if store_url.startswith("sqlite") else store_url,
                             catchup=policy)
        async with app:
            store = app.store
            spec = app._schedules["hourly"]
            await store.schedule_delete("hourly")
            await store.schedule_upsert(schedule=to_record(app, spec, ts("2026-12-02 10:30:00")))
            for r in await store.run_list(limit=100):
                assert not r.run_id.startswith("hourly@")
            await tick_schedules(app, store, {"job"}, ts("2026-12-02 15:10:00"), lambda: None)
            got = sorted(r.run_id for r in await store.run_list(limit=100)
                         if r.run_id.startswith("hourly@"))
            assert got == expected, policy
            await store.run_purge(finished_before=1e12, statuses=["completed"])
            if not store_url.startswith("sqlite"):
                for r in got:  # queued runs are not purged: drop them by erasing the ids
                    await _drop(store_url, r)


async def _drop(url: str, run_id: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DELETE FROM tether.runs WHERE run_id = %s", (run_id,))


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db], cwd=ROOT,
                      env=env, capture_output=True, text=True, timeout=60)


async def test_schedules_cli(store_url: str, tmp_path: Path) -> None:
    app, done = await setup(store_url)
    async with app, app.worker():
        pass  # the worker created the schedules in the store
    out = cli("schedules", "list", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    assert '"name": "hourly"' in out.stdout
    assert cli("schedules", "pause", "hourly", db=store_url).returncode == 0
    app2, done2 = await setup(store_url)
    async with app2:
        s = await app2.store.schedule_get("hourly")
        assert s is not None and s.paused
    out = cli("schedules", "resume", "hourly", db=store_url)
    assert out.returncode == 0 and "next tick" in out.stdout
    out = cli("schedules", "trigger", "hourly", db=store_url)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert run_id.startswith("hourly@manual-")
    app3, done3 = await setup(store_url)
    async with app3, app3.worker():
        s = await app3.store.schedule_get("hourly")
        assert s is not None and s.last_run_id == run_id  # the schedule's last run now
        assert s.next_tick is not None and not s.paused  # its ticks go on as they were
        assert await app3.handle(run_id).result(timeout=20) == "ok"
    assert done3 == [run_id]
    bad = cli("schedules", "pause", "nope", db=store_url)
    assert bad.returncode == 1 and "no schedule named 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    deleted = cli("schedules", "delete", "hourly", db=store_url)
    assert deleted.returncode == 0, deleted.stderr
    # The line says the deletion lasts until a worker declaring it starts (it said
    # "deleted" alone until 2026-12-07), and that a pause lasts across restarts:
    assert deleted.stdout.startswith("hourly: deleted; a worker whose code still declares "
                                     "it creates it again when it starts"), deleted.stdout
    out = cli("schedules", db=store_url)
    assert "hourly " not in out.stdout and "slow" in out.stdout
    assert done == [] and done2 == []
    pause = cli("schedules", "pause", "slow", db=store_url)
    assert pause.returncode == 0, pause.stderr
    app4, _ = await setup(store_url)
    async with app4, app4.worker():
        pass  # a worker whose code declares both starts again
    listed = {s["name"]: s for s in json.loads(
        cli("schedules", "--json", db=store_url).stdout)}
    assert set(listed) >= {"hourly", "slow"}, listed  # created again, as the line says
    assert listed["slow"]["paused"] is True and listed["hourly"]["paused"] is False


async def test_schedule_actions_print_json(sqlite_url: str) -> None:
    """``pause``, ``resume``, ``trigger`` and ``delete`` take ``--json`` (after the action
    or before it) and print what ``tether serve`` answers for the same action: the
    schedule, or ``{schedule, run_id}``, or ``{schedule, deleted}``. Before, ``--json``
    after the action was refused and before it was ignored (plain text came out)."""

    app, _ = await setup(sqlite_url)
    async with app, app.worker():
        pass  # the worker created the schedules in the store
    out = cli("schedules", "pause", "hourly", "--json", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    paused = json.loads(out.stdout)
    assert (paused["name"], paused["paused"], paused["next_tick"]) == ("hourly", True, None)
    out = cli("schedules", "--json", "resume", "hourly", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    assert resumed["paused"] is False and resumed["next_tick"] is not None
    out = cli("schedules", "trigger", "hourly", "--json", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    triggered = json.loads(out.stdout)
    assert set(triggered) == {"schedule", "run_id"} and triggered["schedule"] == "hourly"
    assert triggered["run_id"].startswith("hourly@manual-")
    listed = json.loads(cli("schedules", "--json", db=sqlite_url).stdout)
    assert {s["name"]: s["last_run_id"] for s in listed}["hourly"] == triggered["run_id"]
    out = cli("schedules", "delete", "hourly", "--json", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"schedule": "hourly", "deleted": True}
    bad = cli("schedules", "pause", "hourly", "--json", db=sqlite_url)
    assert bad.returncode == 1 and bad.stdout == ""
    assert "no schedule named 'hourly'" in bad.stderr


async def test_a_manual_trigger_runs_under_the_schedules_code_version(sqlite_url: str) -> None:
    """A schedule created by workers of version v1, triggered from an app of no version
    (``tether schedules trigger``): the run is v1's, for v1's workers to run (it had no
    version: any worker took it, and ``tether versions`` showed it apart)."""
    from tether._lifecycle import trigger_schedule

    app = App(sqlite_url, version="v1")

    @app.workflow
    async def job() -> str:
        return "ok"

    app.schedule(job, cron="0 * * * *", name="hourly")
    async with app, app.worker():
        pass  # the worker created the schedule
    client = App(sqlite_url)
    async with client:
        s = await client.store.schedule_get("hourly")
        assert s is not None and s.version == "v1"
        run_id = await trigger_schedule(client, client.store, s, client.clock.now())
        run = await client.store.run_get(run_id)
    assert run is not None and run.version == "v1"


def test_a_malformed_args_form_input_is_refused_as_app_fork_refuses_it() -> None:
    """``input={"args": "ab"}`` was split into characters (each tick's run called
    ``job("a", "b")``), a misspelt ``"kwarg"`` key was dropped without a word, and a
    ``"kwargs"`` that is no dict raised a bare TypeError or ValueError: app.schedule now
    checks the ``{"args", "kwargs"}`` form by App.fork's rule (ConfigError)."""
    app = App("sqlite:///unused.db")

    @app.workflow
    async def job(*args: object, **kwargs: object) -> None: ...

    for bad in ({"args": "ab"}, {"args": {"a": 1}}, {"args": [1], "kwarg": {"x": 1}},
                {"args": [1], "kwargs": [1, 2]}, {"args": [1], "kwargs": "ab"}):
        with pytest.raises(tether.ConfigError, match="input"):
            app.schedule(job, cron="* * * * *", input=bad)
    assert app._schedules == {}
    app.schedule(job, cron="* * * * *", input={"args": ("a", "b"), "kwargs": {"k": 1}})
    assert app._schedules["job"].args == ("a", "b")
    assert app._schedules["job"].kwargs == {"k": 1}


@pytest.mark.parametrize(("cron", "message"), [
    ("0 9 * mon *", "'mon' is a weekday name, which the month field does not take"),
    ("0 9 * * jan", "'jan' is a month name, which the day-of-week field does not take"),
    ("0 9 mon * *", "'mon' is a weekday name, which the day-of-month field does not take"),
    ("0 jan * * *", "'jan' is a month name, which the hour field does not take"),
    ("0 9 * * mon-dec", "'dec' is a month name, which the day-of-week field does not take"),
])
def test_a_name_in_a_field_that_does_not_take_it_is_refused(cron: str, message: str) -> None:
    """Names were one list for every field: ``0 9 * mon *`` (Monday written in the month
    field) ticked every day of January, ``0 9 * * jan`` on Mondays, ``0 jan * * *`` at
    1 o'clock. As in cron, month names are the month field's, weekday names the weekday
    field's."""
    with pytest.raises(tether.ConfigError, match=re.escape(message)):
        Cron.parse(cron)
    c = Cron.parse("0 9 * JAN-Mar MON")
    assert (sorted(c.months), sorted(c.weekdays)) == ([1, 2, 3], [1])


def test_a_cron_field_takes_ascii_digits_only() -> None:
    """``str.isdigit`` let other scripts' digits through: ``٣ * * * *`` (an Arabic-Indic
    three) ticked at minute 3, and ``² * * * *`` failed with Python's own "invalid
    literal for int()" message; both are now refused as not a number, as cron does."""
    app = App("sqlite:///unused.db")

    @app.workflow
    async def job() -> None: ...

    for cron in ("٣ * * * *", "*/٣ * * * *", "1-٣ * * * *", "² * * * *", "*/² * * * *"):
        with pytest.raises(tether.ConfigError, match=r"is not a number|bad step"):
            app.schedule(job, cron=cron)
    assert app._schedules == {}


async def test_catchup_after_over_ten_thousand_missed_ticks_starts_the_latest(
        store_url: str) -> None:
    """The search for missed ticks stops at 10,000 of them; past that (a minute cron
    after a week without workers, a cron of seconds after three hours) ``latest``
    started the 10,000th tick, hours old, instead of the most recent, ``all`` the
    ticks before it, and ``skip`` dropped even the tick due now."""
    from tether._lifecycle import to_record

    app = App(store_url)

    @app.workflow
    async def job() -> str:
        return "ok"

    app.schedule(job, cron="* * * * *", name="m-latest", catchup="latest")
    app.schedule(job, cron="* * * * *", name="m-all", catchup="all", catchup_max=3,
                 overlap="allow")
    app.schedule(job, cron="* * * * *", name="m-skip", catchup="skip")
    async with app:
        store = app.store
        for spec in app._schedules.values():
            await store.schedule_upsert(schedule=to_record(app, spec,
                                                           ts("2026-12-01 00:00:30")))
        # eight days later: 11,520 missed ticks
        now = ts("2026-12-09 00:00:20")
        nxt = await tick_schedules(app, store, {"job"}, now, lambda: None)
        assert nxt == ts("2026-12-09 00:01:00")
        runs = sorted(r.run_id for r in await store.run_list(limit=100))
        assert runs == ["m-all@2026-12-08T23:58:00Z", "m-all@2026-12-08T23:59:00Z",
                        "m-all@2026-12-09T00:00:00Z", "m-latest@2026-12-09T00:00:00Z",
                        "m-skip@2026-12-09T00:00:00Z"]
        for s in await store.schedule_list():
            assert (s.next_tick, s.last_tick) == (ts("2026-12-09 00:01:00"),
                                                  ts("2026-12-09 00:00:00")), s.name
