"""The lifecycle commands as a user runs them: real subprocesses against a real store.
Bad input gets a one-line error and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tests.life.procs import ROOT
from tether import App, RetryPolicy


def cli(*args: str, db: str | None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TETHER_DATABASE_URL", None)
    argv = [sys.executable, "-m", "tether", *args] + (["--db", db] if db else [])
    return forked.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                      timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str,
                   code: int | None = None) -> None:
    assert proc.returncode != 0, proc
    if code is not None:
        assert proc.returncode == code, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_fork_past_the_end_of_an_empty_journal_is_bad_input(store_url: str) -> None:
    """A run that has recorded nothing yet (queued, no worker) forks at 0 only: ``--at
    1`` exits 2 with one line that says its journal is empty."""
    started = cli("start", "later", "--id", "e-1", db=store_url)
    assert started.returncode == 0, started.stderr
    one_line_error(cli("fork", "e-1", "--at", "1", db=store_url),
                   "run 'e-1' has no journal entries; --at 1 is past its end (at most 0)",
                   code=2)
    out = cli("fork", "e-1", "--at", "0", "--id", "e-2", db=store_url)
    assert out.returncode == 0 and out.stdout == "e-2\n", out.stderr


def test_version_flag() -> None:
    out = cli("--version", db=None)
    assert out.returncode == 0 and out.stdout.startswith("tether ")


def test_entry_points_start_in_a_new_interpreter() -> None:
    """The installed ``tether`` script and ``python -m tether`` in new interpreters (the
    suite's other commands are forked from tests/zygote.py, past Python's start-up)."""
    script = Path(sys.executable).with_name("tether")
    for argv in ([str(script), "--version"], [sys.executable, "-m", "tether", "--version"]):
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("tether "), out


async def test_retry_fork_purge_erase_from_the_command_line(store_url: str) -> None:
    app = App(store_url)
    state = {"broken": True}

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def work(x: int) -> int:
        if state["broken"]:
            raise RuntimeError("boom")
        return x * 2

    @app.workflow
    async def job(x: int) -> int:
        return await work(x)

    async with app, app.worker():
        h = await app.start(job, 4, run_id="j-1")
        with pytest.raises(Exception, match="boom"):
            await h.result(timeout=20)
        state["broken"] = False
        out = cli("retry", "j-1", db=store_url)
        assert out.returncode == 0 and "queued" in out.stdout, out.stderr
        # (a fresh handle: App's result reader may still hold the run's first ending)
        await wait_for(lambda: status_is(app, "j-1", "completed"), timeout=30,
                       what="retried run completed")
        assert await app.handle("j-1").result(timeout=20) == 8
        show = cli("show", "j-1", db=store_url)
        assert "attempts:" in show.stdout and "boom" in show.stdout
        out = cli("fork", "j-1", "--at", "0", "--input", "[5]", "--id", "j-2", db=store_url)
        assert out.returncode == 0 and out.stdout.strip() == "j-2", out.stderr
        assert await app.handle("j-2").result(timeout=20) == 10
        show = cli("show", "j-2", "--json", db=store_url)
        data = json.loads(show.stdout)
        assert (data["forked_from"], data["forked_at"]) == ("j-1", 0)
        assert "forked from run j-1 at position 0" in cli("show", "j-2", db=store_url).stdout

    # bad input: one line, nothing changed
    one_line_error(cli("retry", "j-1", db=store_url), "completed")
    one_line_error(cli("retry", "nope", db=store_url), "nope")
    one_line_error(cli("fork", "j-1", "--at", "-1", db=store_url), "--at", code=2)
    # Past the journal's end is bad input too (it exited 1), and the line says its length.
    one_line_error(cli("fork", "j-1", "--at", "7", db=store_url),
                   "run 'j-1' has a journal of 1 position (0..0); --at 7 is past its end "
                   "(at most 1)", code=2)
    one_line_error(cli("fork", "nope", "--at", "7", db=store_url), "nope", code=1)
    one_line_error(cli("fork", "j-1", "--at", "0", "--input", "{x", db=store_url), "JSON")
    # --id is idempotent, as start's is: this fork asked for again (same source,
    # position and input) prints its id and starts nothing; an id another run holds is
    # bad input, exit 2 (it was exit 1 for both), on one line that says which run it is.
    again = cli("fork", "j-1", "--at", "0", "--input", "[5]", "--id", "j-2", "--json",
                db=store_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"run_id": "j-2", "forked_from": "j-1",
                                        "forked_at": 0, "created": False}
    one_line_error(cli("fork", "j-1", "--at", "0", "--id", "j-2", db=store_url),
                   "run id 'j-2' is already used by the fork of run 'j-1' at position 0 "
                   "with another input", code=2)
    one_line_error(cli("fork", "j-1", "--at", "1", "--input", "[5]", "--id", "j-2",
                       db=store_url),
                   "run id 'j-2' is already used by a fork of run 'j-1' at position 0",
                   code=2)
    one_line_error(cli("fork", "j-2", "--at", "0", "--id", "j-1", db=store_url),
                   "run id 'j-1' is already used by a run of workflow 'job' that is no fork",
                   code=2)
    one_line_error(cli("purge", "--older-than", "soon", db=store_url), "--older-than")
    one_line_error(cli("purge", "--older-than", "1d", "--status", "running",
                       db=store_url), "ended runs only")
    # An empty --status (an unset variable in a script) names no status: it purged
    # every ended run, as if --status were not given.
    for empty in ("", " , "):
        one_line_error(cli("purge", "--older-than", "0s", "--status", empty, db=store_url),
                       "ended runs only", code=2)
    one_line_error(cli("erase", "nope", db=store_url), "nope")
    one_line_error(cli("migrate-runs", "--from", "a", "--to", "b", db=store_url), "--app")

    out = cli("erase", "j-2", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["journal_entries"] == 1
    assert json.loads(out.stdout)["already_erased"] is False
    # Erased again: nothing is left, and it says so (it said "erased run j-2: its input
    # and outcome, ..." as if it had erased them now).
    again = cli("erase", "j-2", db=store_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("run j-2 was already erased (at "), again.stdout
    assert again.stdout.rstrip().endswith("nothing was left to erase"), again.stdout
    assert json.loads(cli("erase", "j-2", "--json", db=store_url).stdout)["already_erased"]
    out = cli("purge", "--older-than", "0s", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert sorted(report["run_ids"]) == ["j-1", "j-2"] and report["runs"] == 2
    assert json.loads(cli("runs", "--json", db=store_url).stdout) == []
    out = cli("versions", db=store_url)
    assert out.returncode == 0 and "no runs" in out.stdout


def test_migrate_runs_refuses_an_app_of_another_version_than_to(tmp_path: Path) -> None:
    """``migrate-runs --to v2 --app`` of an app whose version is v1 checked the runs
    against v1's code and moved them to v2, whose workers run other code; it is bad
    input (an app without a version is taken as the new code, as before)."""
    import os

    db = f"sqlite:///{tmp_path / 't.db'}"
    argv = [sys.executable, "-m", "tether", "migrate-runs", "--from", "v0", "--to", "v2",
            "--app", "tests.life.apps:app", "--db", db]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TETHER_TEST_VERSION="v1")
    made = forked.run([sys.executable, "-m", "tether", "db", "migrate", "--db", db], cwd=ROOT,
                      env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    out = forked.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    one_line_error(out, "--app tests.life.apps:app is the code of version 'v1', not of "
                   "--to 'v2'", code=2)
    for version in ("v2", ""):  # (its own version, or none)
        env["TETHER_TEST_VERSION"] = version
        out = forked.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
        assert out.returncode == 0 and "moved 0 of 0" in out.stdout, out.stderr


async def test_app_option_uses_that_apps_store(tmp_path: Path) -> None:
    """``retry``/``fork``/``migrate-runs``/``export --app MODULE:APP`` (and ``replay
    --check MODULE:APP --workflow``) use the store the app names,
    unless ``--db`` names another, as ``tether start --app`` does (they used
    ``./tether.db`` instead: "no Tether store at ./tether.db")."""
    import os

    db = tmp_path / "data" / "own.db"
    db.parent.mkdir()
    (tmp_path / "ownapp.py").write_text(
        "from tether import App\n"
        f"app = App('sqlite:///{db}')\n\n"
        "@app.workflow\n"
        "async def job() -> int:\n"
        "    return 1\n")
    app = App(f"sqlite:///{db}")
    broken = {"on": True}

    @app.workflow
    async def job() -> int:
        if broken["on"]:
            raise RuntimeError("broken")
        return 1

    async with app:
        async with app.worker():
            h = await app.start(job, run_id="j-1")
            await wait_for(lambda: status_is(app, "j-1", "failed"), what="j-1 failed")

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("TETHER_DATABASE_URL", None)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return forked.run([sys.executable, "-m", "tether", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)

        typo = run("start", "jbo", "--app", "ownapp:app")  # refused, not queued for ever
        assert typo.returncode == 2 and "ownapp:app has no workflow 'jbo' (its workflows: " \
            "job)" in typo.stderr, typo.stderr
        done = run("retry", "j-1", "--app", "ownapp:app")
        assert done.returncode == 0, done.stderr
        assert (await app.get_run("j-1")).status.value == "queued"
        done = run("fork", "j-1", "--at", "0", "--id", "j-2", "--app", "ownapp:app")
        assert done.returncode == 0, done.stderr
        assert (await app.get_run("j-2")).forked_from == "j-1"
        one_line_error(run("fork", "j-1", "--at", "0", "--app", "ownapp:app",
                           "--db", f"sqlite:///{tmp_path}/other.db"), "no Tether store")
        # `export --app` and `replay --check APP --workflow` read the app's runs in its
        # store too (they read ./tether.db: "no Tether store at ./tether.db").
        done = run("export", "j-1", "--app", "ownapp:app")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["run_id"] == "j-1"
        done = run("replay", "--check", "ownapp:app", "--workflow", "job", "--json")
        assert done.returncode == 0, done.stderr
        assert sorted(r["run_id"] for r in json.loads(done.stdout)) == ["j-1", "j-2"]
        one_line_error(run("export", "j-1", "--app", "ownapp:app",
                           "--db", f"sqlite:///{tmp_path}/other.db"), "no Tether store")
        assert not (tmp_path / "tether.db").exists()
        broken["on"] = False
        async with app.worker():
            assert await h.result(timeout=20) == 1


async def test_lifecycle_commands_print_json_and_retry_names_its_children(
        store_url: str) -> None:
    """``retry``, ``cancel``, ``resume`` and ``fork`` take ``--json`` (``purge`` and
    ``erase`` had it already); ``retry`` names the children it brought back with the
    run, in its plain output too. Before, none of the four had ``--json``, and retry's
    output did not say that it had retried any child."""
    import tether
    from tests.life.test_retry_children import tree_app

    calls: dict[str, int] = {}
    app = tree_app(store_url, calls, {"charge": False})
    mode = {"v": 1}

    @app.step
    async def a() -> int:
        return 1

    @app.step
    async def b() -> int:
        return 2

    @app.workflow
    async def shifty() -> int:
        await (a() if mode["v"] == 1 else b())
        return int(await tether.wait_for_signal("go"))

    async with app, app.worker():
        await app.start("parent", 2, run_id="p-2")
        await wait_for(lambda: status_is(app, "g-2", "waiting"), what="grandchild waits")
        out = cli("cancel", "p-2", "--json", db=store_url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["run_id"] == "p-2"  # pending or already ended
        for rid in ("p-2", "c-2", "g-2"):
            await wait_for(lambda rid=rid: status_is(app, rid, "cancelled"), what=rid)
        out = cli("cancel", "p-2", "--json", db=store_url)
        assert json.loads(out.stdout) == {"run_id": "p-2", "status": "cancelled",
                                           "cancel_reason": None}

        out = cli("retry", "p-2", "--json", db=store_url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"run_id": "p-2", "status": "queued",
                                          "children": ["c-2", "g-2"]}
        await wait_for(lambda: status_is(app, "g-2", "waiting"), what="grandchild again")
        await app.cancel("p-2")
        for rid in ("p-2", "c-2", "g-2"):
            await wait_for(lambda rid=rid: status_is(app, rid, "cancelled"), what=rid)
        out = cli("retry", "p-2", db=store_url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ("p-2: queued (retrying; children retried with it: "
                                      "c-2, g-2)")
        await wait_for(lambda: status_is(app, "g-2", "waiting"), what="grandchild again")
        await app.signal("g-2", "go", 5)
        assert await app.handle("p-2").result(timeout=20) == (3 + 5) * 10 + 1

        await app.start(shifty, run_id="s-2")
        await wait_for(lambda: status_is(app, "s-2", "waiting"), what="s-2 waits")
        mode["v"] = 2
        await app.signal("s-2", "go", 7)
        await wait_for(lambda: status_is(app, "s-2", "blocked"), what="s-2 blocked")
        mode["v"] = 1
        out = cli("resume", "s-2", "--json", db=store_url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"run_id": "s-2", "status": "queued"}
        assert await app.handle("s-2").result(timeout=20) == 7

        out = cli("fork", "s-2", "--at", "1", "--id", "s-3", "--json", db=store_url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"run_id": "s-3", "forked_from": "s-2",
                                          "forked_at": 1, "created": True}
        await app.signal("s-3", "go", 8)
        assert await app.handle("s-3").result(timeout=20) == 8


async def test_show_of_a_child_names_its_parent_and_says_when_a_purge_took_it(
        store_url: str) -> None:
    """``tether show`` of a child run names its parent (it named none: the parent of a
    child was only in ``--json``); after ``tether purge --status failed`` deleted the
    failed parent and kept its completed child, it says the parent is no longer stored,
    through a pipe and on a terminal, where the parent's id stays whole on a line of
    its own when the line has no room for it (a person copies it)."""
    from tests.cli.test_fit import on_terminal

    boss_id = "boss-1-" + "0123456789" * 4
    app = App(store_url)

    @app.workflow
    async def helper() -> int:
        return 1

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.workflow
    async def boss() -> None:
        await tether.call(helper, run_id="kid-1")
        await boom()

    async with app, app.worker():
        with pytest.raises(tether.RunFailed):
            await (await app.start(boss, run_id=boss_id)).result(timeout=20)
    shown = cli("show", "kid-1", db=store_url)
    assert shown.returncode == 0, shown.stderr
    assert f"child of run {boss_id}\n" in shown.stdout, shown.stdout
    purged = cli("purge", "--older-than", "0s", "--status", "failed", db=store_url)
    assert purged.returncode == 0 and "purged 1 run" in purged.stdout, purged
    shown = cli("show", "kid-1", db=store_url)
    assert shown.returncode == 0, shown.stderr
    assert f"child of run {boss_id} (no longer stored: purged)\n" in shown.stdout, \
        shown.stdout
    wide = on_terminal("show", "kid-1", db=store_url, columns=120)
    assert f"child of run {boss_id} (no longer stored: purged)\n" in wide, wide
    fitted = on_terminal("show", "kid-1", db=store_url, columns=80)
    assert f"child of run {boss_id}\n(no longer stored: purged)\n" in fitted, fitted
    narrow = on_terminal("show", "kid-1", db=store_url, columns=40)
    assert f"child of run\n{boss_id}\n(no longer stored: purged)\n" in narrow, narrow


async def test_a_fork_or_retry_of_a_workflow_no_worker_has_says_it_waits(
        store_url: str) -> None:
    """``tether fork`` and ``tether retry`` of a run whose workflow no worker of the store
    has registered (renamed or removed in code since, as here: started before any worker
    had it) warn as ``tether start`` does: the new run waits until a worker with that
    workflow serves its queue. They printed the new run's id, or ``queued``, and nothing
    else, and the run waited for ever unexplained. A workflow a worker registered gets no
    warning."""
    started = cli("start", "renamed_flow", "--id", "r-1", db=store_url)
    assert started.returncode == 0 and "no worker has registered" in started.stderr, started
    forked_ = cli("fork", "r-1", "--at", "0", "--id", "r-1-fork", db=store_url)
    assert forked_.returncode == 0 and forked_.stdout == "r-1-fork\n", forked_
    assert ("no worker has registered workflow 'renamed_flow' in this store yet; the run "
            "waits on queue 'default'") in forked_.stderr, forked_.stderr
    assert cli("cancel", "r-1", db=store_url).returncode == 0
    retried = cli("retry", "r-1", db=store_url)
    assert retried.returncode == 0, retried
    assert "no worker has registered workflow 'renamed_flow'" in retried.stderr, retried

    app = App(store_url)

    @app.workflow
    async def known_flow() -> int:
        return 1

    async with app:
        async with app.worker():
            assert await (await app.start(known_flow, run_id="k-1")).result(timeout=20) == 1
    quiet = cli("fork", "k-1", "--at", "0", "--id", "k-1-fork", db=store_url)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet


async def test_migrate_runs_refuses_an_empty_version(store_url: str) -> None:
    """``migrate-runs --to ''`` moved the runs to the version "", which no worker can
    have (``App(version="")`` is refused), so they waited for ever; ``--from ''`` moved
    nothing and said "from  to v3". Both are bad input now, and nothing moves."""
    app = App(store_url, version="v1")

    @app.workflow
    async def held() -> None:
        await tether.wait_for_signal("go")

    async with app:
        await app.start(held, run_id="m-1")
    for flag, argv in (("--to", ["--from", "v1", "--to", ""]),
                       ("--to", ["--from", "v1", "--to", "  "]),
                       ("--from", ["--from", "", "--to", "v3"])):
        out = cli("migrate-runs", *argv, "--no-check", db=store_url)
        one_line_error(out, f"{flag} ", "a version is a non-empty name", code=2)
    async with App(store_url) as reader:
        assert (await reader.get_run("m-1")).version == "v1"


async def test_purge_status_repeated_purges_each_status_named(store_url: str) -> None:
    """``--status completed --status failed`` (repeated, as ``--workflow`` is) purged
    only the failed run: argparse kept the last value and dropped the others without a
    word. Each ``--status`` now adds its statuses, as a comma list does."""
    app = App(store_url)

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def work(x: int) -> int:
        if x < 0:
            raise RuntimeError("boom")
        return x

    @app.workflow
    async def job(x: int) -> int:
        return await work(x)

    async with app, app.worker():
        await app.start(job, 1, run_id="s-ok")
        await app.start(job, -1, run_id="s-bad")
        await app.start(job, 2, run_id="s-kept")
        assert await app.handle("s-ok").result(timeout=20) == 1
        assert await app.handle("s-kept").result(timeout=20) == 2
        with pytest.raises(Exception, match="boom"):
            await app.handle("s-bad").result(timeout=20)
    out = cli("purge", "--older-than", "0s", "--status", "failed", "--status", "completed",
              "--workflow", "job", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["run_ids"]) == ["s-bad", "s-kept", "s-ok"], out
    one_line_error(cli("purge", "--older-than", "0s", "--status", "failed", "--status",
                       "running", db=store_url), "ended runs only", code=2)


def test_show_of_a_fork_at_position_0_says_nothing_was_copied(store_url: str) -> None:
    """A fork at position 0 copies no entry; ``tether show`` said "(positions 0..-1
    copied from it)", in a pipe and on a terminal. It now says nothing was copied; a
    fork at 1 still names the positions it copied."""
    from tests.cli.test_fit import on_terminal

    assert cli("start", "later", "--id", "z-1", db=store_url).returncode == 0
    assert cli("fork", "z-1", "--at", "0", "--id", "z-2", db=store_url).returncode == 0
    piped = cli("show", "z-2", db=store_url)
    assert piped.returncode == 0, piped.stderr
    assert "forked from run z-1 at position 0 (nothing copied from it)\n" in piped.stdout, \
        piped.stdout
    shown = on_terminal("show", "z-2", db=store_url, columns=100)
    assert "0..-1" not in shown and "(nothing copied from it)" in shown, shown
    assert "0..-1" not in cli("show", "z-2", "--wide", db=store_url).stdout


async def test_a_version_with_control_characters_is_refused(store_url: str) -> None:
    """``App(version="v\\x00")`` was accepted: on PostgreSQL every start then failed with
    a StoreError (text cannot hold NUL), and on SQLite the version was stored and printed
    as it was; ``migrate-runs --to`` took one too. A version is a name: control
    characters are refused where it is given (``ConfigError``, exit 2), as in ids."""
    for bad in ("v\x00", "v\n2", "v\x1b[2J"):
        with pytest.raises(tether.ConfigError, match=r"version.*control characters"):
            App(store_url, version=bad)
    app = App(store_url, version="v1")

    @app.workflow
    async def held() -> None:
        await tether.wait_for_signal("go")

    async with app:
        await app.start(held, run_id="vc-1")
    out = cli("migrate-runs", "--from", "v1", "--to", "v\n2", "--no-check", db=store_url)
    one_line_error(out, "--to", "control characters", code=2)
    async with App(store_url) as reader:
        assert (await reader.get_run("vc-1")).version == "v1"


async def test_runs_json_and_the_api_list_say_each_runs_version(store_url: str) -> None:
    """``tether versions`` counts the runs left on a version, but no listing said which
    they were: ``tether runs --json`` and ``GET /api/v1/runs`` gave no ``version`` (only
    ``tether show`` of each run did), so an operator could not find the v1 runs that
    keep the old workers up. Both give it now (null for a run of no version)."""
    from tether.serve._api import run_summary

    for version, run_id in (("v1", "rv-1"), (None, "rv-none")):
        app = App(store_url, version=version)

        @app.workflow
        async def held() -> None:
            await tether.wait_for_signal("go")

        async with app:
            await app.start(held, run_id=run_id)
    out = cli("runs", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    listed = {r["run_id"]: r.get("version", "missing") for r in json.loads(out.stdout)}
    assert listed == {"rv-1": "v1", "rv-none": None}, listed
    async with App(store_url) as reader:
        found = await reader.store.run_search(limit=10)
    assert {r.run_id: run_summary(r)["version"] for r in found} == {
        "rv-1": "v1", "rv-none": None}


async def test_versions_lists_none_first_then_the_versions_by_name(store_url: str) -> None:
    """``tether versions`` lists (none) first, then the versions by name, on both stores
    and whether a version has runs or only a live worker. PostgreSQL listed (none) last
    and SQLite first, and a version whose workers had started no run yet came after all
    the others (PostgreSQL: v2, (none), v1, for a live v1 worker with no run)."""
    import asyncio

    apps = {v: App(store_url, version=v) for v in ("v2", "v1", "v0")}
    plain = App(store_url)
    for app in (*apps.values(), plain):
        @app.workflow(queue="nobody-serves-it")
        async def job() -> None:
            return None
    async with apps["v2"], apps["v1"], apps["v0"], plain:
        await apps["v2"].start("job", run_id="r-v2")
        await apps["v1"].start("job", run_id="r-v1")
        await plain.start("job", run_id="r-none")
        # (v0: a live worker, no run; it serves another queue, so it claims none of them)
        async with apps["v0"].worker(queues=["idle"]):
            out = await asyncio.to_thread(cli, "versions", "--json", db=store_url)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["version"] for r in rows] == [None, "v0", "v1", "v2"], rows
    assert [r["runs"] for r in rows] == [1, 0, 1, 1], rows


async def test_show_says_when_no_live_worker_has_a_queued_runs_version(store_url: str) -> None:
    """A run pinned to v1 is claimed only by a v1 worker: with none live, it stays queued
    while v2's workers serve its queue, and ``tether show`` said only that it "waits in
    queue default for a worker". It now says that no live worker has its version, names
    the live ones, and how to go on; with a v1 worker live, nothing of the sort."""
    import asyncio

    old, new = App(store_url, version="v1"), App(store_url, version="v2")
    for app in (old, new):
        @app.workflow(queue="nobody-serves-it")
        async def job() -> None:
            return None
    async with old, new:
        await old.start("job", run_id="pinned-1")
        async with new.worker(queues=["idle"]):
            out = await asyncio.to_thread(cli, "show", "pinned-1", db=store_url)
            assert out.returncode == 0, out.stderr
            assert ("no live worker of version 'v1' (live now: v2): only one of that version "
                    "claims this run; start one, or move the run to another version with "
                    "tether migrate-runs --from v1 --to VERSION") in out.stdout, out.stdout
            async with old.worker(queues=["idle"]):
                out = await asyncio.to_thread(cli, "show", "pinned-1", db=store_url)
            assert out.returncode == 0, out.stderr
            assert "no live worker" not in out.stdout, out.stdout


async def pinned_with_the_live_workers_unreadable(sqlite_url: str) -> None:
    """A store holding ``pinned-1``, queued, pinned to version v1 (a v1 worker was live
    once: the versions row exists), and ``plain-1`` of no version, both of a queue no
    worker serves; then its workers table renamed away, so that reading the live
    workers fails while the runs' own reads do not (the CLI's and the web UI's tests of
    saying "cannot tell")."""
    import sqlite3

    pinned, plain = App(sqlite_url, version="v1"), App(sqlite_url)
    for app in (pinned, plain):
        @app.workflow(queue="nobody-serves-it")
        async def job() -> None:
            return None
    async with pinned, plain:
        await pinned.start("job", run_id="pinned-1")
        await plain.start("job", run_id="plain-1")
        async with pinned.worker(queues=["idle"]):
            pass
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("ALTER TABLE tether_workers RENAME TO tether_workers_gone")


async def test_show_says_it_cannot_tell_when_the_live_workers_are_unreadable(
        sqlite_url: str) -> None:
    """``tether show`` of a run pinned to v1 said "no live worker of version 'v1'" when
    its read of the live workers failed (it took a failed read for none live): it says
    it could not tell, and why, and asserts nothing. (The store's workers table is
    renamed away under it: its read fails, the run's own reads do not.)"""
    import asyncio

    await pinned_with_the_live_workers_unreadable(sqlite_url)
    out = await asyncio.to_thread(cli, "show", "pinned-1", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    assert "no live worker" not in out.stdout, out.stdout
    note = [line for line in out.stdout.splitlines() if line.startswith("could not tell")]
    assert len(note) == 1 and note[0].startswith(
        "could not tell whether a live worker of version 'v1' runs: reading the live "
        "workers failed (StoreError: "), out.stdout
    assert "no such table: tether_workers" in note[0], note
    assert note[0].endswith("); only one of that version claims this run"), note


async def test_runs_says_it_cannot_tell_when_the_live_workers_are_unreadable(
        sqlite_url: str) -> None:
    """``tether runs``' WAITING FOR of a run pinned to v1 said nothing when its read of
    the live workers failed, while ``tether show`` said it could not tell: it says so
    the short way, on a pipe and on a terminal, and not of a run of no version. (The
    store's workers table is renamed away under it, as for ``tether show``.)"""
    import asyncio

    from tests.cli.test_fit import on_terminal

    await pinned_with_the_live_workers_unreadable(sqlite_url)
    out = await asyncio.to_thread(cli, "runs", db=sqlite_url)
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert rows["pinned-1"].endswith(" version 'v1': live workers unreadable"), rows
    assert "unreadable" not in rows["plain-1"], rows
    fitted = await asyncio.to_thread(on_terminal, "runs", db=sqlite_url, columns=160)
    assert next(ln for ln in fitted.splitlines() if ln.startswith("pinned-1 ")
                ).endswith(" version 'v1': live workers unreadable"), fitted
    assert "unreadable" not in next(ln for ln in fitted.splitlines()
                                    if ln.startswith("plain-1 ")), fitted


async def test_runs_says_when_no_live_worker_has_a_listed_runs_version(
        store_url: str) -> None:
    """``tether runs``' WAITING FOR of a queued run pinned to a version no live worker
    has was empty, as for a run about to be claimed, while v2's workers served its
    queue (``tether show`` said why). It says so now, after what a waiting run waits
    for, on a pipe and on a terminal; not for a run of no version, nor once a worker of
    its version is live. ``--json`` is as it was."""
    import asyncio

    from tests.cli.test_fit import on_terminal

    old, new, plain = App(store_url, version="v1"), App(store_url, version="v2"), App(store_url)
    for app in (old, new, plain):
        @app.workflow(queue="nobody-serves-it")
        async def job() -> None:
            return None

        @app.workflow(queue="nobody-serves-it")
        async def waits() -> None:
            await tether.wait_for_signal("go")

    async with old, new, plain:
        await old.start("waits", run_id="pinned-w")
        # (the waiting run: a worker of v1 took it to its signal wait)
        async with old.worker(queues=["nobody-serves-it"]):
            await wait_for(lambda: status_is(old, "pinned-w", "waiting"), timeout=30,
                           what="pinned-w waits")
        await old.start("job", run_id="pinned-1")
        await plain.start("job", run_id="plain-1")
        await new.start("job", run_id="pinned-2")
        async with new.worker(queues=["idle"]):
            out = await asyncio.to_thread(cli, "runs", db=store_url)
            assert out.returncode == 0, out.stderr
            rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
            assert rows["pinned-1"].split()[2:4] == ["nobody-serves-it", "queued"], rows
            assert rows["pinned-1"].endswith(" no live worker of version 'v1'"), rows
            assert rows["pinned-w"].endswith(
                " signal go; no live worker of version 'v1'"), rows
            assert "no live worker" not in rows["plain-1"], rows
            assert "no live worker" not in rows["pinned-2"], rows
            fitted = await asyncio.to_thread(on_terminal, "runs", db=store_url,
                                             columns=160)
            assert next(ln for ln in fitted.splitlines() if ln.startswith("pinned-1 ")
                        ).endswith(" no live worker of version 'v1'"), fitted
            as_json = await asyncio.to_thread(cli, "runs", "--json", db=store_url)
            assert "no live worker" not in as_json.stdout, as_json.stdout
            async with old.worker(queues=["idle"]):
                out = await asyncio.to_thread(cli, "runs", db=store_url)
            assert out.returncode == 0, out.stderr
            assert "no live worker" not in out.stdout, out.stdout
