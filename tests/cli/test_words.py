"""What the commands say to a new operator, read as one reads them: each ``--help``
says what its command does, and a run that ended before its first operation is not
said to have none "yet"."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import httpx
import pytest

import tether
from tests import forked
from tests.cli.test_fit import command_names
from tether import App, RunFailed
from tether.cli import main


@pytest.mark.parametrize("path", command_names()[1:], ids=" ".join)
def test_every_command_help_says_what_it_does(path: tuple[str, ...],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``tether show --help`` (and ``runs``, ``result``, ``approve``, ``queues``, ``db
    migrate``, ``schedules pause`` ... ) went from its usage straight to its arguments:
    a sentence, under the usage, says what the command does (its line of ``tether
    --help`` where it has no longer description)."""
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    usage, _, rest = shown.partition("\n\n")
    assert usage.startswith(f"usage: tether {' '.join(path)}"), shown
    said = rest.split("\n\n", 1)[0]
    assert not said.startswith(("positional arguments:", "options:")), shown
    assert re.match(r"[A-Z]", said) and said.rstrip().endswith((".", ")")), said


def test_a_run_that_ended_before_its_first_operation_has_none_for_good(
        sqlite_url: str) -> None:
    """``tether show`` and the run page of a run that ended without an operation (its
    workflow raised at once; cancelled while queued) said "no operations yet", as if
    some were to come; a run waiting with none recorded still says "yet"."""
    app = App(sqlite_url)

    @app.workflow
    async def hasty(n: int) -> int:
        raise ValueError(f"refused {n} before doing anything")

    @app.workflow
    async def patient() -> object:
        return await tether.wait_for_signal("go")

    async def make() -> dict[str, str]:
        async with app:
            await app.start(hasty, 1, run_id="cancelled-1")
            await app.cancel("cancelled-1")
            async with app.worker(poll_interval=0.05):
                with pytest.raises(RunFailed):
                    await (await app.start(hasty, 2, run_id="failed-1")).result(timeout=30)
                await app.start(patient, run_id="waiting-1")
                for _ in range(600):
                    if (await app.get_run("waiting-1")).status.value == "waiting":
                        break
                    await asyncio.sleep(0.05)
            from tether.serve import create_app

            async with httpx.AsyncClient(transport=httpx.ASGITransport(
                    app=create_app(app, mcp=False)), base_url="http://127.0.0.1") as http:
                return {run_id: " ".join((await http.get(f"/runs/{run_id}")).text.split())
                        for run_id in ("cancelled-1", "failed-1", "waiting-1")}

    pages = asyncio.run(make())
    for run_id, status in (("cancelled-1", "cancelled"), ("failed-1", "failed")):
        shown = forked.run([sys.executable, "-m", "tether", "show", run_id, "--db",
                            sqlite_url], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert f"no operations: the run ended {status} before recording one\n" in \
            shown.stdout and "yet" not in shown.stdout, shown.stdout
        assert (f"No operations: the run ended {status} before recording one." in
                pages[run_id]) and "No operations yet" not in pages[run_id], pages[run_id]
    waiting = forked.run([sys.executable, "-m", "tether", "show", "waiting-1", "--db",
                          sqlite_url], capture_output=True, text=True, timeout=60)
    assert "no operations yet\n" in waiting.stdout, waiting.stdout


@pytest.mark.parametrize(("argv", "said"), [
    (["run"], "argument COMMAND: invalid choice: 'run' (did you mean 'runs'?); choose from "
              "'worker', 'start', 'runs',"),
    (["approval"], "invalid choice: 'approval' (did you mean 'approvals'?); choose from"),
    (["db", "stauts"], "tether db: error: argument ACTION: invalid choice: 'stauts' (did you "
                       "mean 'status'?); choose from 'migrate', 'status', 'backup', 'restore'"),
    (["runs", "--log-level", "warn"], "invalid choice: 'warn' (did you mean 'warning'?)"),
    # (none close: argparse's own words)
    (["zzz"], "argument COMMAND: invalid choice: 'zzz' (choose from 'worker', 'start',"),
], ids=" ".join)
def test_a_typo_of_a_choice_is_answered_with_the_closest(
        argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``tether run`` was answered with the list of all 29 commands; the closest choice
    (a command, a ``db`` or ``schedules`` action, a ``--log-level``) comes first."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tether") and said in err, err


def test_a_timer_wait_is_said_in_the_cli_time_format(sqlite_url: str) -> None:
    """``tether runs``' WAITING FOR and ``tether show``'s "waiting for:" said a timer's
    wake-up as stored, ``timer until 2026-12-07T11:47:21+00:00``, beside the CLI's
    ``2026-12-07 09:47:20.999Z`` times (and the timeline's ``until ...Z``): it is said in
    that format now; ``--json`` keeps the stored text."""
    app = App(sqlite_url)

    @app.workflow
    async def nap() -> str:
        await tether.sleep(7200)
        return "awake"

    async def make() -> str:
        async with app, app.worker(poll_interval=0.05):
            await app.start(nap, run_id="nap-1")
            for _ in range(600):
                info = await app.get_run("nap-1")
                if info.status.value == "waiting":
                    assert info.waiting_for is not None
                    return info.waiting_for
                await asyncio.sleep(0.05)
        raise AssertionError("nap-1 never waited")

    stored = asyncio.run(make())
    at = re.fullmatch(r"timer until (\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)\+00:00", stored)
    assert at, stored
    said = f"timer until {at[1]} {at[2]}Z"

    def tether_says(*args: str) -> str:
        done = forked.run([sys.executable, "-m", "tether", *args, "--db", sqlite_url],
                          capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return str(done.stdout)

    listed = tether_says("runs").splitlines()
    assert listed[1].split(None, 5)[:4] == ["nap-1", "nap", "default", "waiting"]
    assert listed[1].endswith(f"Z {said}"), listed
    assert f"\nwaiting for: {said} (since " in tether_says("show", "nap-1")
    assert json.loads(tether_says("runs", "--json"))[0]["waiting_for"] == stored
    assert json.loads(tether_says("show", "nap-1", "--json"))["waiting_for"] == stored


def test_wait_words_of_branches_and_far_times() -> None:
    """Each timer of a run whose branches wait at once; a time past the dates a
    datetime holds (a timer set that far) as the CLI says it; other text as it is."""
    from tether.cli._common import wait_words

    assert wait_words("signal go or timer until 2026-12-07T11:47:21+00:00 or timer until "
                      "2026-12-08T00:00:00+00:00") == (
        "signal go or timer until 2026-12-07 11:47:21Z or timer until 2026-12-08 00:00:00Z")
    assert wait_words("timer until 9999-12-31T23:59:59+00:00") == \
        "timer until 9999-12-31 23:59:59Z"
    assert wait_words("child order-1.0") == "child order-1.0"
    # (a gather of children: one wait, not "child a or child b", which read as either)
    assert wait_words("child fo.2 or child fo.4") == "2 child runs at once: fo.2, fo.4"
    assert wait_words("signal stop or child fo.1") == "signal stop or child fo.1"
    assert wait_words("timer until 2026-13-45T99:00:00+00:00") == \
        "timer until 2026-13-45T99:00:00+00:00"  # (not a date: as stored)


def test_a_usage_error_escapes_what_the_terminal_would_act_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    """argparse echoes an unknown argument as it was typed (``unrecognized arguments:
    ...``): its control characters are escaped, as in every ``tether: error:`` line (a
    pasted ``ESC [2J`` cleared the operator's screen)."""
    with pytest.raises(SystemExit) as exited:
        main(["runs", "\x1b[2J\x1b[31mgone"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and \
        "tether runs: error: unrecognized arguments: \\x1b[2J\\x1b[31mgone" in err, err
