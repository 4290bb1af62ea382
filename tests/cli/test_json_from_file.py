"""A JSON option (``signal --data``, ``start``/``fork --input``) read from a file
(``@FILE``) or standard input (``-``, ``@-``): a payload over the ~128 KiB an argument
may hold (the shell's "Argument list too long") reaches the run; what cannot be read
is a one-line usage error (exit 2) that names the file. Real ``python -m tether``
processes on a real store, a worker serving in this process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tether
from tests import forked
from tests.cli.test_cli import assert_one_line_error
from tether import App
from tether.cli import _common

MIB = 1024 * 1024


def make_app(url: str) -> App:
    app = App(url)

    @app.workflow(name="echo")
    async def echo(text: str) -> int:
        return len(text)

    @app.workflow(name="approval")
    async def approval() -> object:
        return await tether.wait_for_signal("approve")

    return app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[tuple[App, str]]:
    app = make_app(store_url)
    async with app.worker(poll_interval=0.1):
        yield app, store_url
    await app.close()


def run_cli(*args: str, db: str, stdin: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    argv = [sys.executable, "-m", "tether", *args, "--db", db]
    proc = forked.run(argv, capture_output=True, input=stdin, timeout=60, env=env, cwd=cwd)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(), proc.stderr.decode())


async def cli(*args: str, db: str, stdin: bytes | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, db=db, stdin=stdin, cwd=cwd)


def big_payload() -> dict[str, object]:
    """A payload of over 1 MiB: far past what one argument may hold."""
    return {"by": "ana", "notes": "n" * MIB}


@pytest.mark.parametrize("how", ["@file", "-", "@-"])
async def test_a_1_mib_signal_payload_reaches_the_run(
        served: tuple[App, str], tmp_path: Path, how: str) -> None:
    app, url = served
    payload = big_payload()
    text = json.dumps(payload, indent=2).encode()  # (pretty-printed, as a file may be)
    handle = await app.start("approval", run_id=f"big-{how}")
    if how == "@file":
        (tmp_path / "payload.json").write_bytes(text)
        proc = await cli("signal", handle.run_id, "approve", "--data", "@payload.json",
                         db=url, cwd=tmp_path)
    else:
        proc = await cli("signal", handle.run_id, "approve", "--data", how,
                         db=url, stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert await handle.result(timeout=30) == payload


@pytest.mark.parametrize("how", ["@file", "-"])
async def test_a_1_mib_input_reaches_the_run(
        served: tuple[App, str], tmp_path: Path, how: str) -> None:
    app, url = served
    text = json.dumps(["t" * MIB]).encode()
    (tmp_path / "input.json").write_bytes(text)
    arg = f"@{tmp_path / 'input.json'}" if how == "@file" else "-"
    proc = await cli("start", "echo", "--id", "in-1", "--input", arg, db=url,
                     stdin=None if how == "@file" else text)
    assert proc.returncode == 0, proc.stderr
    assert await app.handle("in-1").result(timeout=30) == MIB
    # and a fork's new input the same way (a BOM before it, as some editors write)
    (tmp_path / "fork.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(["abc"]).encode())
    proc = await cli("fork", "in-1", "--at", "0", "--id", "in-2", "--input",
                     f"@{tmp_path / 'fork.json'}", db=url)
    assert proc.returncode == 0, proc.stderr
    assert await app.handle("in-2").result(timeout=30) == 3


async def test_a_text_starting_with_at_is_json_quoted(served: tuple[App, str]) -> None:
    """A JSON text never starts with @: the text "@ana" is sent as JSON, quoted."""
    app, url = served
    handle = await app.start("approval", run_id="at-text")
    proc = await cli("signal", "at-text", "approve", "--data", '"@ana"', db=url)
    assert proc.returncode == 0, proc.stderr
    assert await handle.result(timeout=30) == "@ana"


@pytest.mark.parametrize(("arg", "content", "needles"), [
    ("@missing.json", None,
     ["--data @missing.json: cannot read missing.json", "--data '\"@missing.json\"'"]),
    ("@bad.json", b'{"ok": true,\n', ["--data @bad.json is not valid JSON", "line 2"]),
    ("@bad.json", b"{'ok': True}", ["--data @bad.json is not valid JSON"]),
    ("@bad.json", b"", ["--data @bad.json is not valid JSON: it is empty"]),
    ("@bad.json", b"\xff\xfe", ["--data @bad.json is not valid JSON: it is not UTF-8"]),
    ("@bad.json", b"NaN", ["--data @bad.json is not valid JSON: NaN"]),
    ("@.", None, ["--data @.: cannot read .: Is a directory"]),
    ("@", None, ["--data @ names no file"]),
    ("-", b"", ["--data - (standard input) is not valid JSON: it is empty"]),
    ("-", b"[1,", ["--data - (standard input) is not valid JSON"]),
])
def test_what_cannot_be_read_is_a_one_line_usage_error(
        sqlite_url: str, tmp_path: Path, arg: str, content: bytes | None,
        needles: list[str]) -> None:
    if arg.startswith("@") and content is not None:
        (tmp_path / arg[1:]).write_bytes(content)
    proc = run_cli("signal", "r1", "approve", "--data", arg, db=sqlite_url,
                   stdin=content if arg == "-" else None, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert_one_line_error(proc, *needles)


def test_an_input_read_from_a_file_must_still_be_an_array(
        sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{"topic": "x"}')
    proc = run_cli("start", "echo", "--input", "@in.json", db=sqlite_url, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert_one_line_error(proc, "--input must be a JSON array")


def test_standard_input_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No command has two JSON options yet; the helper they share refuses a second
    read of standard input (it would find it empty) with an error naming the first."""
    read, write = os.pipe()
    os.write(write, b'{"a": 1}')
    os.close(write)
    monkeypatch.setattr(_common, "stdin_taken", [])
    with open(read, encoding="utf-8") as stream:
        monkeypatch.setattr(sys, "stdin", stream)
        assert _common.parse_json("-", "--data") == {"a": 1}
        with pytest.raises(_common.CliError) as caught:
            _common.parse_json("@-", "--input")
    assert caught.value.code == 2
    assert "standard input was read already, by --data -" in str(caught.value)


def test_an_input_that_does_not_fit_is_shown_cut(tmp_path: Path) -> None:
    """A 1 MiB --input the workflow's signature refuses (start --app, fork --app):
    the error is one line of a few hundred characters, not the megabyte read."""
    (tmp_path / "spec_flow.py").write_text(
        "from tether import App\napp = App()\n\n"
        "@app.workflow\nasync def crawl(pages: int) -> int:\n    return pages\n")
    (tmp_path / "big.json").write_text(json.dumps(["x" * MIB]))
    db = f"sqlite:///{tmp_path}/tether.db"
    started = run_cli("start", "crawl", "--app", "spec_flow:app", "--id", "c-1",
                      "--input", "[3]", db=db, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    for command in (("start", "crawl"), ("fork", "c-1", "--at", "0")):
        proc = run_cli(*command, "--app", "spec_flow:app", "--input", "@big.json", db=db,
                       cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[:500]
        assert_one_line_error(proc, '--input ["xxx', "…", "does not fit crawl(pages: int)")
        assert len(proc.stderr) < 1000, proc.stderr[:500]


async def test_from_a_terminal_it_says_to_end_with_ctrl_d(served: tuple[App, str]) -> None:
    """``--data -`` on a terminal (a real pseudo-terminal): a line on stderr says what it
    waits for, and what is typed up to Ctrl-D is the payload."""
    import pty

    app, url = served
    handle = await app.start("approval", run_id="typed")
    main, sub = pty.openpty()
    try:
        env = dict(os.environ)
        env.pop("TETHER_DATABASE_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "signal", "typed", "approve", "--data", "-",
             "--db", url], stdin=sub, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env)
        os.write(main, b'{"typed": true}\n\x04')
        try:
            _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    finally:
        os.close(sub)
        os.close(main)
    assert proc.returncode == 0, err
    assert b"reading --data from the terminal: type the JSON, then Ctrl-D" in err
    assert await handle.result(timeout=30) == {"typed": True}
