"""Options before COMMAND: ``tether --log-level debug runs`` as git, docker and kubectl
take theirs. ``--db``, ``--log-level``, ``--log-format`` (every command's) and ``--json``
(the commands with JSON output) may come before the command; given on both sides, the
one after it wins. Until 2026-12-06 only ``--version`` and ``--help`` could come first:
``tether --log-level debug runs`` was refused with "invalid choice: 'debug'"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked
from tether import App
from tether.cli import build_parser


def _tether(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args], capture_output=True,
                      text=True, timeout=60, env=env)


@pytest.fixture
async def url(sqlite_url: str) -> str:
    """A SQLite store holding one queued run, ``r-1``."""
    app = App(sqlite_url)

    @app.workflow
    async def noop() -> None:
        return None

    await app.start(noop, run_id="r-1")
    await app.close()
    return sqlite_url


#: Three store URLs (a --db that names no store a backend takes is refused as it is parsed).
A, B, C = "sqlite:///a.db", "sqlite:///b.db", "sqlite:///c.db"


@pytest.mark.parametrize(("argv", "expected"), [
    # before the command only
    (["--db", A, "--log-level", "debug", "--log-format", "json", "runs"],
     {"db": A, "log_level": "debug", "log_format": "json", "json": False}),
    (["--json", "runs"], {"db": None, "log_level": None, "log_format": "text", "json": True}),
    # after it only (the form every command always took)
    (["runs", "--db", B, "--log-level", "error", "--log-format", "json", "--json"],
     {"db": B, "log_level": "error", "log_format": "json", "json": True}),
    # on both sides: the one after the command wins
    (["--db", A, "--log-level", "debug", "--log-format", "json", "runs", "--db", B,
      "--log-level", "error", "--log-format", "text"],
     {"db": B, "log_level": "error", "log_format": "text"}),
    # a command with actions: before the command, before the action, after it
    (["--db", A, "schedules", "list"], {"db": A, "action": "list"}),
    (["--db", A, "schedules", "--db", B, "list"], {"db": B}),
    (["--db", A, "schedules", "--db", B, "list", "--db", C], {"db": C}),
    (["--json", "schedules", "pause", "nightly"], {"json": True, "name": "nightly"}),
    (["--json", "--log-level", "warning", "db", "status"],
     {"json": True, "log_level": "warning", "db_command": "status"}),
    (["--db", A, "db", "migrate"], {"db": A, "db_command": "migrate"}),
    # nothing given anywhere: the defaults
    (["versions"], {"db": None, "log_level": None, "log_format": "text", "json": False}),
])
def test_each_place_and_which_wins(argv: list[str], expected: dict[str, object]) -> None:
    args = vars(build_parser().parse_args(argv))
    assert {k: args.get(k) for k in expected} == expected
    assert not [k for k in args if k.startswith("before_")], args


def test_log_level_before_the_command(url: str) -> None:
    proc = _tether("--log-level", "debug", "--db", url, "runs")
    assert proc.returncode == 0, proc.stderr
    assert "r-1" in proc.stdout
    # (Tether's own debug line: asyncio's "Using selector" line, which this looked for,
    # is left out now)
    assert f" DEBUG tether.cli: store {url} (from --db)" in proc.stderr, proc.stderr
    # the level after the command wins
    quiet = _tether("--log-level", "debug", "--db", url, "runs", "--log-level", "error")
    assert quiet.returncode == 0, quiet.stderr
    assert " DEBUG " not in quiet.stderr, quiet.stderr


def test_db_and_json_before_the_command(url: str, tmp_path: Path) -> None:
    proc = _tether("--json", "--db", url, "runs")
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)] == ["r-1"]
    # --db after the command wins over the one before it (which names no store)
    after = _tether("--db", f"sqlite:///{tmp_path}/none.db", "runs", "--db", url, "--json")
    assert after.returncode == 0, after.stderr
    assert [r["run_id"] for r in json.loads(after.stdout)] == ["r-1"]


def test_log_format_before_the_command(tmp_path: Path) -> None:
    proc = _tether("--log-format", "json", "--db", f"sqlite:///{tmp_path}/none.db", "runs")
    assert proc.returncode == 1, proc
    (line,) = proc.stderr.splitlines()
    doc = json.loads(line)
    assert doc["level"] == "error" and "no Tether store" in doc["message"], doc


def test_json_before_a_command_without_json_output_is_refused(url: str) -> None:
    """``tether --json db migrate``: the command prints text, where the script that
    asked expects JSON."""
    proc = _tether("--json", "--db", url, "db", "migrate")
    assert proc.returncode == 2, proc
    assert "--json: `tether db migrate` has no JSON output" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_says_which_options_may_come_before_the_command() -> None:
    proc = _tether("--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "options before COMMAND" in text
    assert ("--db, --log-level and --log-format, which every command takes, and --json"
            in text)
    assert "the one after COMMAND wins" in text
