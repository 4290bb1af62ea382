"""Worker lines about a run carry its id (and the position, when the line is about one)
as fields, in JSON and in text, also the lines a worker writes outside the run's code:
a log pipeline that selects a run's lines by ``run_id`` gets the takeover after a crash
too.

Until 2026-12-06 a line written while the run's code executed had them (the log
filter takes them from the executing run), but the lines the worker wrote around it
did not: "run r: taken over from a worker whose lease on it expired (... at position
4)" was a JSON object without ``run_id`` or ``position``, and its text line had no
``[run=r position=4]``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.forked import stop_process
from tests.web.helpers import ROOT, TETHER, WEBAPP, env


def _worker(db: str, log: Path, gate: Path, fmt: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*TETHER, "worker", WEBAPP, "--db", db, "--log-format", fmt],
                                cwd=ROOT, env=env(TETHER_TEST_GATE=str(gate)), stdout=out,
                                stderr=subprocess.STDOUT)


def _tether(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TETHER, *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)


def _journal(db: str, run_id: str) -> list[dict[str, object]]:
    proc = _tether("show", run_id, "--json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["journal"])


def test_a_takeover_line_names_the_run_and_position(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/logs.db"
    gate = tmp_path / "gate"  # step 4 of `steps` waits until this file exists
    first = _worker(db, tmp_path / "first.log", gate, "json")
    second = None
    try:
        started = _tether("start", "steps", "--id", "lg-1", "--input", "[6]", "--db", db)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        while len(_journal(db, "lg-1")) < 3:  # steps 1-3 done; step 4 holds at the gate
            assert time.monotonic() < deadline, "the run did not reach step 4"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        gate.touch()
        second = _worker(db, tmp_path / "second.log", gate, "json")
        done = _tether("result", "lg-1", "--wait", "90", "--db", db)
        assert done.returncode == 0, done.stderr
        stop_process(second)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_process(proc)
    lines = [json.loads(line) for line in (tmp_path / "second.log").read_text().splitlines()
             if line.startswith("{")]
    about = [d for d in lines if "lg-1" in str(d["message"])]
    takeover = [d for d in about if "taken over" in str(d["message"])]
    assert len(takeover) == 1, lines
    assert takeover[0].get("run_id") == "lg-1", takeover
    assert takeover[0].get("position") == 3, takeover
    assert takeover[0].get("worker_id") == _worker_id(tmp_path / "second.log"), takeover
    # Killed on this host: the second worker found its owner dead by its pid, no lease
    # ran out (until 2026-12-06 the line said "whose lease on it expired").
    message = str(takeover[0]["message"])
    assert "taken over from a worker found dead (its process on this host is gone, " \
           f"worker {_worker_id(tmp_path / 'first.log')}; crash 1 of " in message, message
    assert "lease" not in message, message
    unnamed = [d for d in about if d.get("run_id") != "lg-1"]
    assert not unnamed, unnamed


def _in_flight(db: str, run_id: str) -> list[dict[str, object]]:
    proc = _tether("show", run_id, "--json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["in_flight"])


def test_a_takeover_after_another_worker_found_the_owner_dead_says_so(
        tmp_path: Path) -> None:
    # Three workers of one host: `first` serves the run's queue and is killed in a step;
    # `other` serves another queue only, finds `first` dead by its pid and ends its
    # leases; `third`, started after that, takes the run over. Until 2026-12-07 its line
    # said "taken over from a worker whose lease on it expired (it died, stalled, or lost
    # the store ...)", although no lease had run out and the owner was known dead.
    db = f"sqlite:///{tmp_path}/logs.db"
    gate = tmp_path / "gate"
    first = _worker(db, tmp_path / "first.log", gate, "text")
    other = third = None
    try:
        started = _tether("start", "steps", "--id", "lg-2", "--input", "[6]", "--db", db)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        while not _in_flight(db, "lg-2"):  # step 4 holds at the gate, its attempt written
            assert time.monotonic() < deadline, "the run did not reach step 4"
            time.sleep(0.1)
        with open(tmp_path / "other.log", "wb") as out:
            other = subprocess.Popen([*TETHER, "worker", WEBAPP, "--db", db, "--queue",
                                      "elsewhere"], cwd=ROOT, env=env(), stdout=out,
                                     stderr=subprocess.STDOUT)
        while "serving queues" not in (tmp_path / "other.log").read_text():
            assert time.monotonic() < deadline, "the other worker did not start"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        while "is gone; 1 of its runs is claimable now" not in (
                tmp_path / "other.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "other.log").read_text()
            time.sleep(0.1)
        gate.touch()
        third = _worker(db, tmp_path / "third.log", gate, "text")
        done = _tether("result", "lg-2", "--wait", "90", "--db", db)
        assert done.returncode == 0, done.stderr
    finally:
        for proc in (first, other, third):
            if proc is not None:
                stop_process(proc)
    lines = [line for line in (tmp_path / "third.log").read_text().splitlines()
             if "taken over" in line]
    assert len(lines) == 1, (tmp_path / "third.log").read_text()
    assert (f"run lg-2: taken over from a worker found dead (its process on this host is "
            f"gone, worker {_worker_id(tmp_path / 'first.log')}; crash 1 of ") in lines[0], \
        lines[0]
    assert "lease" not in lines[0], lines[0]
    # (the taking worker, as its own lines name it, at the end of the line's fields)
    taker = _worker_id(tmp_path / "third.log")
    assert lines[0].endswith(f" [run=lg-2 position=3 worker={taker}]"), lines[0]


def _worker_id(log: Path) -> str:
    for line in log.read_text().splitlines():
        if "serving queues" in line:
            return line.split("worker ")[1].split(" ")[0]
    raise AssertionError(log.read_text())


def test_a_workers_own_lines_and_its_runs_lines_carry_its_id(tmp_path: Path) -> None:
    # One worker, JSON lines: its start, a step attempt that failed and was retried, a
    # run that failed, and its stop each carry `worker_id` (a log pipeline fed by many
    # workers tells them apart by it, as it tells runs apart by `run_id`).
    db = f"sqlite:///{tmp_path}/logs.db"
    log = tmp_path / "worker.log"
    worker = _worker(db, log, tmp_path / "gate", "json")
    try:
        for workflow, run_id in (("retrying", "wk-1"), ("fixable", "wk-2")):
            started = _tether("start", workflow, "--id", run_id, "--input", '["x"]',
                              "--db", db)
            assert started.returncode == 0, started.stderr
        assert _tether("result", "wk-1", "--wait", "90", "--db", db).returncode == 0
        assert _tether("result", "wk-2", "--wait", "90", "--db", db).returncode != 0
        stop_process(worker)
    finally:
        stop_process(worker)
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{")]
    me = _worker_id(log)
    mine = [d for d in lines if str(d["logger"]).startswith(("tether.worker", "tether.observe"))]
    said = {what: [d for d in mine if what in str(d["message"])]
            for what in ("serving queues", "step flaky attempt 1 failed",
                         "run wk-2 (fixable) failed", f"worker {me} stopped")}
    assert all(said.values()), (said, lines)
    assert [d for d in mine if d.get("worker_id") != me] == [], lines
