"""A PostgreSQL server that answers "no such database", "no such role" or "password
authentication failed" is configured wrong, not down: the commands say so.

Before, such an answer was told as an outage ("PostgreSQL at h:p is unavailable:
FATAL: ..."), and ``tether worker`` retried it for ever with the line of an outage, so
an operator waited for one to pass. Real subprocesses against the shared server, with
the names of a database and a role that do not exist (neither is created but the
worker test's own database, made once the worker retries, and dropped after)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import forked
from tests.cli.test_cli import assert_one_line_error, tether_cli
from tests.conftest import DB_PREFIX, _create_database, _database_url, _drop_database, _need_pg


def _missing_database() -> str:
    return f"{DB_PREFIX}missing_{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("command", [("runs",), ("show", "x"), ("start", "wf"),
                                     ("result", "x")])
def test_a_database_that_does_not_exist_is_one_line_naming_it(
        command: tuple[str, ...]) -> None:
    _need_pg()
    name = _missing_database()
    proc = tether_cli(*command, db=_database_url(name), timeout=90)
    assert_one_line_error(proc, "refused the connection", f'database "{name}" does not exist',
                          "a configuration problem, not an outage")
    assert proc.returncode == 1  # (a store that cannot be reached: `tether --help`)
    assert "unavailable" not in proc.stderr


def test_a_role_that_does_not_exist_is_one_line_naming_it() -> None:
    _need_pg()
    role = f"{DB_PREFIX}nobody_{uuid.uuid4().hex[:8]}"
    url = _database_url("postgres").replace("://postgres@", f"://{role}@", 1)
    assert role in url
    proc = tether_cli("runs", db=url, timeout=90)
    assert_one_line_error(proc, f'role "{role}" does not exist', "configuration problem")
    assert proc.returncode == 1


def test_a_server_that_is_down_is_still_told_as_unavailable() -> None:
    proc = tether_cli("runs", db="postgresql://postgres@127.0.0.1:1/nowhere", timeout=90)
    assert_one_line_error(proc, "is unavailable")
    assert "configuration problem" not in proc.stderr


def _wait_for(log: Path, proc: subprocess.Popen[bytes], text: str) -> str:
    for _ in range(1200):  # (a bounded wait for the log, not a timing assertion)
        got = log.read_text()
        if text in got or proc.poll() is not None:
            return got
        time.sleep(0.05)
    return log.read_text()


def test_a_worker_says_its_database_does_not_exist_and_starts_once_it_does(
        tmp_path: Path) -> None:
    """``tether worker`` on a database not created yet (a Kubernetes deploy can start
    it first) logs, each attempt, that the server said the database does not exist, a
    configuration problem; it keeps trying, and serves once the database is made."""
    _need_pg()
    name = _missing_database()
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    log = tmp_path / "worker.log"
    created = False
    with log.open("w") as out:
        proc = forked.Popen([sys.executable, "-m", "tether", "worker", "tests.cli.cli_app:app",
                             "--db", _database_url(name)],
                            cwd=forked.ROOT, env=env, stdout=out, stderr=out)
    try:
        text = _wait_for(log, proc, "(attempt 2)")
        assert proc.poll() is None, text
        first = next(line for line in text.splitlines() if "(attempt 1)" in line)
        assert f'refused the connection: database "{name}" does not exist' in first, first
        assert "a configuration problem, not an outage" in first, first
        assert "retrying in 0.5 s (attempt 1) until it is fixed" in first, first
        assert "store unavailable" not in text, text
        _create_database(name)
        created = True
        text = _wait_for(log, proc, "serving queues")
        assert "serving queues" in text and proc.poll() is None, text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if created:
            _drop_database(name)
    assert "Traceback" not in log.read_text()
