"""Hostile input at the API and the CLI (issue 12 items 6 and 7): every case is a
clear one-line error that loses nothing, and nothing Tether prints can drive the
operator's terminal."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, make_app, tether_cli
from tether import App, ConfigError, InvalidName, NotSerializable, RunFailed

BAD_NAMES = ["", "  ", "a\nb", "x\x1b[31mred", "bell\x07", "\u202eevil", "nul\x00", "\ud800"]


def deep(n: int) -> list[object]:
    top: list[object] = []
    cur = top
    for _ in range(n):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    return top


@pytest.fixture
async def app(sqlite_url: str) -> App:
    return make_app(sqlite_url)


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
async def test_bad_run_ids_and_signal_names_are_refused_at_the_api(app: App, bad: str) -> None:
    async with app:
        with pytest.raises(InvalidName):
            await app.start("doubler", 1, run_id=bad)
        handle = await app.start("doubler", 1, run_id="fine")
        with pytest.raises(InvalidName):
            await app.signal(handle.run_id, bad)
        assert [r.run_id for r in await app.list_runs()] == ["fine"]  # nothing stored


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
async def test_bad_fork_ids_are_refused_at_the_api(app: App, bad: str) -> None:
    """A fork's new id is a run id like any other: ``start`` refuses control characters
    in it, and so does ``fork`` (``tether fork --id`` printed it raw)."""
    async with app:
        await app.start("doubler", 1, run_id="src")
        with pytest.raises(InvalidName):
            await app.fork("src", at=0, new_run_id=bad)
        assert [r.run_id for r in await app.list_runs()] == ["src"]  # nothing stored


@pytest.mark.parametrize("limit", [-1, 2**31, 10**20])
async def test_queue_limits_out_of_range_are_config_errors(app: App, limit: int) -> None:
    """A limit past what the stores hold is refused before it reaches them (SQLite raised
    OverflowError, a traceback from ``tether queue-limit q 99999999999999999999``)."""
    async with app:
        with pytest.raises(ConfigError, match="concurrency limit"):
            await app.set_queue_limit("q", limit)
        await app.set_queue_limit("q", 2**31 - 1)
        with pytest.raises(InvalidName):
            await app.set_queue_limit("q\x1b[31m", 1)  # `tether queues` would print it
        assert await app.queue_limits() == {"q": 2**31 - 1}


@pytest.mark.parametrize("bad", ["a\nb", "q\x1b[2J"])
def test_bad_workflow_and_queue_names_are_refused_at_registration(bad: str) -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(InvalidName):
        app.workflow(name=bad)(_wf)
    with pytest.raises(InvalidName):
        app.workflow(name="ok", queue=bad)(_wf)


async def _wf() -> None:
    return None


async def test_payloads_too_deep_or_not_unicode_are_payload_errors(app: App) -> None:
    async with app:
        for value in (deep(100_000), "lone \ud800 surrogate", {"k": ["\udfff"]}):
            with pytest.raises(NotSerializable):
                await app.start("doubler", value)
        handle = await app.start("approval", run_id="sig")
        with pytest.raises(NotSerializable):
            await app.signal(handle.run_id, "approve", deep(100_000))
        assert {r.run_id for r in await app.list_runs()} == {"sig"}


@pytest.mark.slow
async def test_cli_turns_hostile_arguments_into_one_line_errors(sqlite_url: str,
                                                                tmp_path: Path) -> None:
    app = make_app(sqlite_url)
    async with app:
        async with app.worker():  # registers the workflows by name in the store
            pass
        await app.start("approval", run_id="r1")
    deep_json = "[" * 30_000 + "]" * 30_000
    cases = [
        (("start", "doubler", "--input", deep_json), "nested too deeply"),
        (("signal", "r1", "go", "--data", deep_json), "nested too deeply"),
        (("start", "doubler", "--id", "a\x1b[31mb"), "control characters"),
        (("signal", "r1", "bad\nname"), "control characters"),
        (("start", "doubler", "--input", '["\\ud800"]'), "surrogate"),
    ]
    for args, needle in cases:
        done = tether_cli(*args, db=sqlite_url)
        assert_one_line_error(done, needle)
        assert "\x1b" not in done.stderr and "\x1b" not in done.stdout
    huge = tether_cli("runs", "--limit", "99999999999999999999", db=sqlite_url)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
    assert "--limit: must be at most" in huge.stderr
    listed = tether_cli("runs", "--json", db=sqlite_url)
    assert '"r1"' in listed.stdout and listed.stdout.count('"run_id"') == 1


async def test_names_and_messages_from_the_store_are_printed_escaped(sqlite_url: str) -> None:
    """A run written by an older Tether (or straight into the store) with control
    characters in its id, workflow name, status and error is printed escaped."""
    import apsw

    app = make_app(sqlite_url)
    async with app:
        await app.start("doubler", 2, run_id="r1")
    path = sqlite_url.split("///", 1)[1]
    conn = apsw.Connection(path)
    conn.execute(
        "UPDATE tether_runs SET run_id = 'r\x1b]0;pwned\x07', workflow = 'wf\x1b[2J', "
        "waiting_for = 'w\x1b[1A', status = 'failed', "
        "error = '{\"type\": \"E\", \"message\": \"boom\\u001b[31m\"}'")
    conn.close()
    for args in (("runs",), ("show", "r\x1b]0;pwned\x07")):
        done: subprocess.CompletedProcess[str] = tether_cli(*args, db=sqlite_url)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
        assert "\\x1b" in done.stdout


@pytest.mark.parametrize("text", ["inf", "Infinity", "nan", "0", "-1"])
def test_a_duration_option_must_be_a_finite_positive_number(text: str) -> None:
    """``tether worker --lease inf`` was taken: a dead worker's runs would never resume
    (its lease never expires, and it is never counted stale)."""
    import argparse

    from tether.cli._common import positive_float

    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)
    assert positive_float("2.5") == 2.5


def test_nan_is_refused_as_no_number_not_as_a_number_out_of_range() -> None:
    """``tether result --wait nan`` said "must be at least 0, got nan", as if the sign
    were the mistake: NaN is no number at all (exit 2, as before)."""
    done = subprocess.run([sys.executable, "-m", "tether", "result", "r-1", "--wait", "nan"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("tether result: error: argument --wait: expected "
                                            "a number, got 'nan'"), done.stderr


HOSTILE_MODULE = '''
import tether
from tether import App, RetryPolicy

app = App()


@app.step(retry=RetryPolicy(max_attempts=1))
async def explode() -> None:
    raise RuntimeError("boom\\x1b[31m red\\nsecond line \\x9b2J \\u202eevil")


@app.workflow
async def hostile() -> None:
    await tether.wait_for_signal("go")
    await explode()
'''

#: What a terminal acts on: ESC, CSI in its one-byte (C1) form, a bidi override, BEL.
DRIVING = ("\x1b", "\x9b", "\u202e", "\x07")


@pytest.mark.slow
async def test_workflow_errors_and_signal_names_are_printed_escaped(tmp_path: Path) -> None:
    """A workflow's error message with an ANSI escape, a C1 CSI, a bidi override and a
    line break, and a signal name with an escape and a line break (written by an older
    Tether), reach the operator escaped through every command that prints them: the
    worker's log (text and JSON), ``show`` (text and JSON), ``result``, ``runs --json``,
    ``export`` and ``replay``. ``replay``'s lines, ``export``'s and ``--json``'s C1 and
    bidi characters, and the worker's log lines were printed raw."""
    import apsw

    from tests import forked

    (tmp_path / "hostile_mod.py").write_text(HOSTILE_MODULE)
    url = f"sqlite:///{tmp_path}/tether.db"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    logs = {}
    for fmt in ("text", "json"):
        with open(tmp_path / f"worker-{fmt}.log", "w") as log:
            worker = forked.Popen([sys.executable, "-m", "tether", "worker", "hostile_mod:app",
                                   "--db", url, "--log-format", fmt], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
            try:
                async with App(url) as client:
                    handle = await client.start("hostile", run_id=f"h-{fmt}")
                    await client.signal(handle.run_id, "go")
                    with pytest.raises(RunFailed):
                        await handle.result(timeout=60)
            finally:
                worker.terminate()
                worker.wait(30)
        logs[fmt] = (tmp_path / f"worker-{fmt}.log").read_text()
    assert "boom\\x1b[31m red\\x0asecond line \\x9b2J \\u202eevil" in logs["text"], logs["text"]
    assert "boom\\u001b[31m red\\nsecond line \\u009b2J \\u202eevil" in logs["json"], logs["json"]
    conn = apsw.Connection(f"{tmp_path}/tether.db")
    conn.execute("UPDATE tether_journal SET name = 'go\x1b[2J' || char(10) || 'x' "
                 "WHERE kind = 'signal' AND run_id = 'h-text'")
    conn.close()
    outputs = dict(logs)
    for args in (("show", "h-text"), ("show", "h-text", "--json"), ("result", "h-text"),
                 ("runs", "--json"), ("export", "h-text"),
                 ("replay", "--check", "hostile_mod:app", "--workflow", "hostile")):
        done = forked.run([sys.executable, "-m", "tether", *args, "--db", url], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr, done.stderr
        outputs[" ".join(args)] = done.stdout + done.stderr
    for command, text in outputs.items():
        for c in DRIVING:
            assert c not in text, (command, c, text)
    shown = outputs["show h-text"]
    assert "go\\x1b[2J\\x0ax" in shown  # the signal's name
    assert "RuntimeError: boom\\x1b[31m red\\x0asecond line \\x9b2J \\u202eevil" in shown
    assert "\\u001b[31m red\\nsecond line \\u009b2J \\u202eevil" in outputs["show h-text --json"]
    assert outputs["result h-text"].count("\n") == 1  # one line, its break escaped
    replayed = outputs["replay --check hostile_mod:app --workflow hostile"]
    assert "MISMATCH h-text hostile: position 0: recorded signal 'go\\x1b[2J\\nx'" in replayed


async def test_names_over_the_limit_are_usage_errors_at_the_cli(sqlite_url: str) -> None:
    """``tether signal`` took a signal name of any length (and PostgreSQL then failed
    with an opaque "store unavailable"); now it is exit 2, one line, nothing sent."""
    app = make_app(sqlite_url)
    async with app:
        async with app.worker():
            pass
        await app.start("approval", run_id="r1")
    for args in (("signal", "r1", "n" * 201), ("signal", "r1", "go", "--idempotency-key",
                                              "k" * 201), ("start", "doubler", "--id", "i" * 201)):
        done = tether_cli(*args, db=sqlite_url)
        assert_one_line_error(done, "at most 200 are allowed")
        assert done.returncode == 2
    async with make_app(sqlite_url) as app:
        assert [r.run_id for r in await app.list_runs()] == ["r1"]
        assert (await app.get_run("r1")).status == "queued"


async def test_workflow_and_queue_names_no_run_can_have_are_usage_errors(
        sqlite_url: str) -> None:
    """``tether start NAME`` (and ``App.start("NAME")``) of a name no worker had
    registered queued a run whatever the name: one holding ANSI escapes or over 200
    characters (which no worker can register, so it waited for ever), and an empty one
    was exit 1; ``tether queue-limit "" 2`` and ``tether schedules pause ""`` were
    exit 1; ``tether runs --queue`` or
    ``--workflow`` with control characters listed nothing, exit 0. The API refused each
    with a 400. Now each is bad input: one line, exit 2, nothing stored."""
    app = make_app(sqlite_url)
    async with app:
        for bad in ("x\x1b[31mred", "w" * 201):
            with pytest.raises(InvalidName):
                await app.start(bad)
        with pytest.raises(InvalidName):
            await app.set_queue_limit("", 2)
    cases = [
        (("start", ""), "workflow '' is empty"),
        (("start", "x\x1b[31mred"), "control characters"),
        (("start", "w" * 201), "at most 200 are allowed"),
        (("queue-limit", "", "2"), "queue '' is empty"),
        (("runs", "--queue", "a\nb"), "control characters"),
        (("runs", "--workflow", "a\x1b[2J"), "control characters"),
        (("runs", "--workflow", "w" * 201), "at most 200 are allowed"),
        # (and "no schedule named ''", exit 1, for these)
        (("schedules", "pause", ""), "schedule name '' is empty"),
        (("schedules", "trigger", "a\x1b[2J"), "control characters"),
    ]
    for args, needle in cases:
        done = tether_cli(*args, db=sqlite_url)
        assert_one_line_error(done, needle)
        assert done.returncode == 2, (args, done.returncode)
        assert "\x1b" not in done.stderr
    listed = tether_cli("runs", "--workflow", "", "--json", db=sqlite_url)  # no filter
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed
    async with make_app(sqlite_url) as app:
        assert await app.list_runs() == [] and await app.queue_limits() == {}


@pytest.mark.parametrize("argv, needle", [
    (("start", ""), "workflow '' is empty"),
    (("start", "a\tb"), "workflow 'a\\tb' holds control characters"),
    (("start", "w" * 201), "at most 200 are allowed"),
    (("start", "doubler", "--id", "a\nb"), "run id 'a\\nb' holds control characters"),
    (("start", "doubler", "--queue", ""), "queue '' is empty"),
    (("queue-limit", "", "2"), "queue '' is empty"),
    (("signal", "r1", ""), "signal name '' is empty"),
], ids=lambda v: repr(v) if isinstance(v, str) else None)
def test_a_refused_name_creates_no_store(argv: tuple[str, ...], needle: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``tether start ""`` in an empty folder said "workflow '' is empty" (exit 2) and
    left a new ``tether.db`` behind, as did ``tether queue-limit "" 2``; ``tether signal
    r1 ""`` answered "no Tether store at ..." (exit 1) there, not that the name is bad
    input. A name no run can have is refused before any store is opened: one line,
    exit 2, no file."""
    from tether.cli import main

    db = tmp_path / "none.db"
    assert main([*argv, "--db", f"sqlite:///{db}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert needle in err, err
    assert list(tmp_path.iterdir()) == []


def run_id_commands() -> dict[tuple[str, ...], list[str]]:
    """Every command that takes a ``RUN_ID`` argument, with what else it requires (a
    value for each other positional and each required option)."""
    from tests.cli.test_fit import command_names
    from tether.cli import build_parser

    found: dict[tuple[str, ...], list[str]] = {}
    for path in command_names():
        parser = build_parser()
        for name in path:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[name]
        actions = parser._actions
        if not any(a.metavar == "RUN_ID" and not a.option_strings for a in actions):
            continue
        extra = [v for a in actions if a.required and a.dest != "run_id"
                 for v in ([a.option_strings[0], "0"] if a.option_strings else ["x"])]
        found[path] = extra
    return found


@pytest.mark.parametrize("bad", ["", "  ", "a\x1b[2Jb", "line\nbreak"], ids=repr)
def test_every_run_id_argument_refuses_an_empty_or_control_character_id(
        bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``tether show ""`` (cancel, result, approve, ... alike) answered "no run with id
    ''" with exit 1, while ``tether --help`` lists an empty id, or one with control
    characters, as bad input (exit 2) and ``start --id ""`` exits 2. Every ``RUN_ID``
    is now bad input, in one line: an empty one before any store is opened (the store
    named does not exist: a lookup would say so with exit 1), one with control
    characters once no run has it (a run stored so by an older Tether stays actionable:
    ``test_names_and_messages_from_the_store_are_printed_escaped``)."""
    import asyncio

    from tether.cli import main

    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def create() -> None:
        async with make_app(url) as app:
            await app.start("doubler", 1, run_id="r1")

    asyncio.run(create())
    commands = run_id_commands()
    assert {("show",), ("cancel",), ("result",), ("signal",), ("resume",), ("approve",),
            ("budget",), ("retry",), ("fork",), ("erase",), ("export",)} <= set(commands)
    empty = not bad.strip()
    db = f"sqlite:///{tmp_path / 'none.db'}" if empty else url
    for path, extra in commands.items():
        argv = [*path, bad, *extra, "--db", db]
        if path == ("budget",):
            argv += ["--usd", "1"]
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (argv, err)
        assert err.startswith("tether: error: run id ") and "\x1b" not in err, (argv, err)
        assert ("is empty" if empty else "holds control characters") in err, err
    assert not (tmp_path / "none.db").exists()


def test_an_unknown_long_id_is_echoed_cut_by_every_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``tether show`` of an 8,000-character id that no run has printed it whole ("no
    run with id 'xxxx…'"), and so did every ``RUN_ID`` command and ``tether schedules
    pause NAME``: the line shows its first 100 characters and its length."""
    import asyncio

    from tether.cli import main

    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def create() -> None:
        async with make_app(url) as app:
            await app.start("doubler", 1, run_id="r1")

    asyncio.run(create())
    long_id = "x" * 7990 + "0123456789"
    argvs = []
    for path, extra in run_id_commands().items():
        argv = [*path, long_id, *extra, "--db", url]
        if path == ("budget",):
            argv += ["--usd", "1"]
        argvs.append(argv)
    argvs += [["schedules", action, long_id, "--db", url]
              for action in ("pause", "resume", "trigger", "delete")]
    for argv in argvs:
        assert main(argv) != 0, argv
        out, err = capsys.readouterr()
        assert out == "", (argv[0], out[:300])
        assert err.count("\n") == 1 and err.startswith("tether: error: "), (argv[0], err[:300])
        assert "(8,000 characters)" in err, (argv[0], err[:300])
        assert "0123456789" not in err and len(err) < 300, (argv[0], err[:300])
