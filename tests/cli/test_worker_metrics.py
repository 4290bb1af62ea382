"""A worker process's own ``GET /metrics`` (``tether worker --metrics-port``), scraped
over loopback after real events: a step that fails once, one postponed once, a run
that fails, a run taken over after ``kill -9`` of the worker that held it; and the
server's refusals (another path, another method, a non-loopback ``Host``, a missing
token), and the embedded worker's (``app.worker(metrics_port=0)``)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import tether
from tests.forked import stop_process
from tests.web.helpers import ROOT, TETHER, env
from tests.web.test_metrics_exposition import check_histogram, histograms, parse

APP = "tests.cli.metrics_app:app"
TELEMETRY = ROOT / "docs" / "telemetry.md"
BOUND = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def _worker(db: str, log: Path, marks: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*TETHER, "worker", APP, "--db", db, *extra], cwd=ROOT,
                                env=env(TETHER_TEST_MARKS=str(marks)), stdout=out,
                                stderr=subprocess.STDOUT)


def _tether(*args: str, marks: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {} if marks is None else {"TETHER_TEST_MARKS": str(marks)}
    return subprocess.run([*TETHER, *args], cwd=ROOT, env=env(**extra),
                          capture_output=True, text=True, timeout=120)


def _port(log: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while True:
        found = BOUND.search(log.read_text())
        if found:
            return int(found.group(1))
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _request(port: int, raw: bytes) -> tuple[int, dict[str, str], str]:
    """Send ``raw`` as it is; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), data
    return int(lines[0].split(" ")[1]), headers, body.decode()


def _head(port: int, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """``HEAD /metrics``: the status and headers of the answer, and what came after them
    (nothing, for a HEAD)."""
    raw = "\r\n".join(["HEAD /metrics HTTP/1.1", "Host: 127.0.0.1", *headers])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((raw + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    got = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        got[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), got, rest


def _get(port: int, path: str = "/metrics", *headers: str) -> tuple[int, dict[str, str], str]:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return _request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


def _series(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for each sample line of an exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _scrape(port: int) -> dict[str, float]:
    status, headers, body = _get(port)
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return _series(body)


def _scrape_until(port: int, want: dict[str, float]) -> dict[str, float]:
    """Scrape until the series in ``want`` have those values (a run's end is counted
    just after the store took it, so a result can be read a moment before)."""
    deadline = time.monotonic() + 60
    while True:
        got = _scrape(port)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        assert time.monotonic() < deadline, (want, got)
        time.sleep(0.1)


def _result(db: str, run_id: str) -> subprocess.CompletedProcess[str]:
    return _tether("result", run_id, "--wait", "90", "--db", db)


def _worker_id(log: Path) -> str:
    for line in log.read_text().splitlines():
        if "serving queues" in line:
            return line.split("worker ")[1].split(" ")[0]
    raise AssertionError(log.read_text())


def test_the_counters_follow_a_failed_attempt_a_postponement_and_the_runs_ends(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    log = tmp_path / "worker.log"
    proc = _worker(db, log, tmp_path, "--metrics-port", "0", "--concurrency", "7")
    try:
        port = _port(log, proc)
        before = _scrape(port)  # (answers before any run, its counters at zero)
        assert before["tether_worker_runs_claimed_total"] == 0
        assert before["tether_worker_step_attempts_started_total"] == 0
        for workflow, run_id in (("fails_once", "m-1"), ("postponed_once", "m-2"),
                                 ("breaks", "m-3")):
            started = _tether("start", workflow, "--id", run_id, "--input", '["x"]',
                              "--db", db)
            assert started.returncode == 0, started.stderr
        assert _result(db, "m-1").returncode == 0
        assert _result(db, "m-2").returncode == 0
        assert _result(db, "m-3").returncode != 0
        got = _scrape_until(port, {
            'tether_worker_runs_ended_total{status="completed"}': 2,
            'tether_worker_runs_ended_total{status="failed"}': 1})
        assert got['tether_worker_runs_ended_total{status="blocked"}'] == 0
        assert got['tether_worker_runs_ended_total{status="cancelled"}'] == 0
        # flaky: a failed attempt and the one that succeeded; busy: a postponed attempt
        # and the one that succeeded.
        assert got["tether_worker_step_attempts_started_total"] == 4
        assert got["tether_worker_step_attempts_failed_total"] == 1
        assert got["tether_worker_step_postponements_total"] == 1
        assert got["tether_worker_runs_claimed_total"] >= 3
        assert got['tether_worker_runs_taken_over_total{cause="found_dead"}'] == 0
        assert got['tether_worker_runs_taken_over_total{cause="lease_expired"}'] == 0
        assert got["tether_worker_slots"] == 7
        assert got['tether_worker_slots_in_use{queue="default"}'] == 0
        assert got["tether_worker_store_outages_total"] == 0
        assert got["tether_worker_store_unavailable"] == 0
        assert got["tether_worker_draining"] == 0
        assert got["tether_worker_uptime_seconds"] >= 0
        info = [k for k in got if k.startswith("tether_worker_info{")]
        assert len(info) == 1 and got[info[0]] == 1, info
        assert f'worker_id="{_worker_id(log)}"' in info[0], info
        assert 'queues="default"' in info[0], info
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


def test_a_run_taken_over_after_kill_9_of_its_worker_is_counted_found_dead(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    first = _worker(db, tmp_path / "first.log", tmp_path)
    second = None
    try:
        started = _tether("start", "held", "--id", "t-1", "--input", '["x"]', "--db", db)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        while True:  # the step is in flight in the first worker, its attempt written
            shown = _tether("show", "t-1", "--json", "--db", db)
            if '"in_flight": [{' in shown.stdout.replace("\n", "").replace("  ", ""):
                break
            assert time.monotonic() < deadline, shown.stdout
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        (tmp_path / "gate").touch()
        log = tmp_path / "second.log"
        second = _worker(db, log, tmp_path, "--metrics-port", "0")
        port = _port(log, second)
        assert _result(db, "t-1").returncode == 0
        got = _scrape_until(port, {'tether_worker_runs_ended_total{status="completed"}': 1})
        assert got['tether_worker_runs_taken_over_total{cause="found_dead"}'] == 1
        assert got['tether_worker_runs_taken_over_total{cause="lease_expired"}'] == 0
        assert got["tether_worker_runs_claimed_total"] == 1
    finally:
        stop_process(first)
        stop_process(second)
    assert "taken over from a worker found dead" in log.read_text()


def test_a_run_taken_from_a_stalled_worker_is_counted_lease_expired_and_lost_there(
        tmp_path: Path) -> None:
    # The first worker (a 1 s lease) is stopped (SIGSTOP) in the run's step: alive but
    # silent, so no worker finds it dead and the second takes the run over once the
    # lease expired. Continued, the first finds the lease lost.
    db = f"sqlite:///{tmp_path}/m.db"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _worker(db, first_log, tmp_path, "--metrics-port", "0", "--lease", "1")
    second = None
    try:
        first_port = _port(first_log, first)
        started = _tether("start", "held", "--id", "s-1", "--input", '["x"]', "--db", db)
        assert started.returncode == 0, started.stderr
        _scrape_until(first_port, {"tether_worker_step_attempts_started_total": 1,
                                   'tether_worker_slots_in_use{queue="default"}': 1})
        first.send_signal(signal.SIGSTOP)
        (tmp_path / "gate").touch()
        second = _worker(db, second_log, tmp_path, "--metrics-port", "0")
        second_port = _port(second_log, second)
        assert _result(db, "s-1").returncode == 0
        got = _scrape_until(second_port,
                            {'tether_worker_runs_ended_total{status="completed"}': 1})
        assert got['tether_worker_runs_taken_over_total{cause="lease_expired"}'] == 1
        assert got['tether_worker_runs_taken_over_total{cause="found_dead"}'] == 0
        first.send_signal(signal.SIGCONT)
        lost = _scrape_until(first_port, {"tether_worker_leases_lost_total": 1,
                                          'tether_worker_slots_in_use{queue="default"}': 0})
        assert lost['tether_worker_runs_ended_total{status="completed"}'] == 0
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
        stop_process(first)
        stop_process(second)
    assert "taken over from a worker whose lease on it expired" in second_log.read_text()


def test_a_run_failed_at_max_crashes_on_its_takeover_counts_as_both(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    first = _worker(db, tmp_path / "first.log", tmp_path)
    second = None
    try:
        started = _tether("start", "kills_its_worker", "--id", "k-1", "--input", '["x"]',
                          "--db", db)
        assert started.returncode == 0, started.stderr
        assert first.wait(60) == 3  # (its step ended the process)
        log = tmp_path / "second.log"
        second = _worker(db, log, tmp_path, "--metrics-port", "0", "--max-crashes", "1")
        port = _port(log, second)
        assert _result(db, "k-1").returncode != 0
        got = _scrape_until(port, {'tether_worker_runs_ended_total{status="failed"}': 1})
        assert got['tether_worker_runs_taken_over_total{cause="found_dead"}'] == 1
        assert got["tether_worker_step_attempts_started_total"] == 0  # (not run again)
    finally:
        stop_process(first)
        stop_process(second)


def test_the_server_answers_get_metrics_only(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    log = tmp_path / "worker.log"
    proc = _worker(db, log, tmp_path, "--metrics-port", "0")
    try:
        port = _port(log, proc)
        assert _get(port, "/")[0] == 404
        assert _get(port, "/metrics/x")[0] == 404
        status, headers, _ = _request(port, b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1"
                                            b"\r\nContent-Length: 0\r\n\r\n")
        assert (status, headers.get("allow")) == (405, "GET, HEAD")
        # HEAD is answered as GET, without the body (a monitor's probe): as `tether
        # serve`'s /metrics. Until 2026-12-08 it was 405.
        status, headers, rest = _head(port)
        assert (status, rest) == (200, b""), (status, headers, rest)
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        assert int(headers["content-length"]) > 0
        assert _request(port, b"nonsense\r\n\r\n")[0] == 400
        assert _request(port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 10_000
                        + b"\r\n\r\n")[0] == 431
        # Without tokens, a page that rebinds its own name to 127.0.0.1 is refused.
        status, _, body = _request(port, b"GET /metrics HTTP/1.1\r\nHost: evil.example"
                                         b"\r\n\r\n")
        assert status == 403 and "tether_worker" not in body
        assert _get(port, "/metrics?x=1")[0] == 200
        assert proc.poll() is None  # (none of it hurt the worker)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


def test_tokens_are_needed_once_configured(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    tokens = tmp_path / "tokens"
    tokens.write_text("read:read-token-0123456789\nadmin:admin-token-0123456789\n")
    tokens.chmod(0o600)
    log = tmp_path / "worker.log"
    proc = _worker(db, log, tmp_path, "--metrics-port", "0", "--metrics-token-file",
                   str(tokens))
    try:
        port = _port(log, proc)
        status, headers, body = _get(port)
        assert status == 401 and "tether_worker" not in body
        assert headers["www-authenticate"].startswith("Bearer")
        status, headers, rest = _head(port)  # (HEAD needs a token as GET does)
        assert (status, rest) == (401, b"") and headers["www-authenticate"].startswith("Bearer")
        status, _, rest = _head(port, "Authorization: Bearer read-token-0123456789")
        assert (status, rest) == (200, b"")
        assert _get(port, "/metrics", "Authorization: Bearer wrong-token-0123456789")[0] \
            == 401
        for token in ("read-token-0123456789", "admin-token-0123456789"):
            status, _, body = _get(port, "/metrics", f"Authorization: Bearer {token}")
            assert status == 200 and "tether_worker_runs_claimed_total 0" in body
    finally:
        stop_process(proc)
    assert "is readable by" not in log.read_text()  # (mode 0600: no warning)


def test_a_token_file_others_may_read_is_said_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("read:read-token-0123456789\n")
    tokens.chmod(0o644)
    log = tmp_path / "worker.log"
    proc = _worker(f"sqlite:///{tmp_path}/m.db", log, tmp_path, "--metrics-port", "0",
                   "--metrics-token-file", str(tokens))
    try:
        _port(log, proc)
    finally:
        stop_process(proc)
    assert f"token file {tokens} is readable by everyone (mode 0644)" in log.read_text()


def _status_until(port: int, token: str, want: int) -> None:
    """Scrape with ``token`` until the answer is ``want`` (the token file is looked at
    again a second or so after it changed)."""
    deadline = time.monotonic() + 60
    while (status := _get(port, "/metrics", f"Authorization: Bearer {token}")[0]) != want:
        assert time.monotonic() < deadline, (token, status)
        time.sleep(0.1)


def test_the_token_file_is_followed_and_its_changes_logged_as_the_workers(
    tmp_path: Path,
) -> None:
    """A token removed from the file stops working without a restart; a file changed
    into one without a valid token is not taken (the tokens stay), and the worker says
    so on its own logger, ``tether.worker``: the check is ``tether._tokens``', shared
    with ``tether serve`` (whose logger, ``tether.serve``, named these lines before)."""
    first, second = "read-token-0123456789", "read-token-second-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read:{first}\n")
    tokens.chmod(0o600)
    log = tmp_path / "worker.log"
    proc = _worker(f"sqlite:///{tmp_path}/m.db", log, tmp_path, "--metrics-port", "0",
                   "--metrics-token-file", str(tokens))
    try:
        port = _port(log, proc)
        _status_until(port, first, 200)
        tokens.write_text("read:short\n")
        deadline = time.monotonic() + 60
        while "changed, but its tokens were not taken" not in log.read_text():
            assert _get(port, "/metrics", f"Authorization: Bearer {first}")[0] == 200
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        tokens.write_text(f"read:{second}\n")
        _status_until(port, second, 200)
        _status_until(port, first, 401)
    finally:
        stop_process(proc)
    lines = [line for line in log.read_text().splitlines() if f"token file {tokens}" in line]
    assert any(" WARNING tether.worker: " in line and "not taken" in line
               and "line 1: the token is shorter than 16 characters" in line
               for line in lines), lines
    assert any(" INFO tether.worker: " in line and "changed: 1 token(s) now" in line
               for line in lines), lines


def test_a_host_beyond_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    done = _tether("worker", APP, "--db", f"sqlite:///{tmp_path}/m.db", "--metrics-port",
                   "0", "--metrics-host", "0.0.0.0", marks=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "refusing to serve worker metrics on 0.0.0.0 without API tokens" in done.stderr
    assert not (tmp_path / "m.db").exists()  # (refused before the store was opened)
    bad = _tether("worker", APP, "--db", f"sqlite:///{tmp_path}/m.db", "--metrics-port",
                  "70000", marks=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "metrics_port must be an integer from 0 to 65535" in bad.stderr


def _documented() -> dict[str, str]:
    """The families of docs/telemetry.md's table of a worker's series, with their type
    (a row may name two, ``a`, `b``)."""
    out: dict[str, str] = {}
    for line in TELEMETRY.read_text().splitlines():
        if line.startswith("| `tether_worker_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for name in re.findall(r"`(tether_worker_[a-z_]+)", cells[0]):
                out[name] = cells[1]
    assert out, "no table of tether_worker_ series in docs/telemetry.md"
    return out


def test_a_port_in_use_is_one_error_line_before_the_store_is_opened(
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _tether("worker", APP, "--db", f"sqlite:///{tmp_path}/m.db",
                       "--metrics-port", str(port), marks=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"tether: error: cannot serve worker metrics on 127.0.0.1:{port}: "), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "m.db").exists()


async def _async_get(port: int) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        data = await reader.read()
    except ConnectionResetError:
        data = b""
    writer.close()
    if not data:  # (closed without an answer: 0)
        return 0, ""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def test_an_embedded_worker_serves_its_metrics_until_it_stops(
        tmp_path: Path) -> None:
    app = tether.App(f"sqlite:///{tmp_path}/e.db")

    @app.step
    async def double(n: int) -> int:
        return 2 * n

    @app.workflow
    async def twice(n: int) -> int:
        return await double(n)

    worker = app.worker(metrics_port=0)
    assert worker.metrics_port == 0  # (not bound before it starts)
    async with worker:
        port = worker.metrics_port
        assert port is not None and port > 0
        handle = await app.start(twice, 21)
        assert await handle.result(timeout=60) == 42
        for _ in range(600):
            status, body = await _async_get(port)
            assert status == 200
            got = _series(body)
            if got['tether_worker_runs_ended_total{status="completed"}'] == 1:
                break
            await asyncio.sleep(0.1)
        assert got["tether_worker_step_attempts_started_total"] == 1
        assert got["tether_worker_runs_claimed_total"] == 1
        # Read as Prometheus reads it, every family the guide lists, of its type, and
        # no other.
        families = parse(body)
        assert {name: fam.type for name, fam in families.items()} == _documented()
        assert all(fam.help for fam in families.values()), families
    with pytest.raises(OSError):  # the server ended with the worker
        await _async_get(port)
    await app.close()


async def test_the_queue_wait_of_each_claimed_run_is_a_histogram_by_queue(
        store_url: str) -> None:
    """``tether_worker_queue_wait_seconds{queue}``: from when each run became due (its
    start, here) to its claim, read from the claimed row; a queue served with nothing
    claimed has its series at 0. The runs are started before the worker, which starts
    at least half a second later: each waited that long at least."""
    app = tether.App(store_url)

    @app.workflow
    async def noop(n: int) -> int:
        return n

    handles = await app.start_many(noop, [(i,) for i in range(3)])
    await asyncio.sleep(0.5)
    # (two queues: on SQLite a claim of several queues reads its runs by another path)
    async with app.worker(queues=["default", "idle"], metrics_port=0) as worker:
        assert [await h.result(timeout=60) for h in handles] == [0, 1, 2]
        port = worker.metrics_port
        assert port is not None
        _, body = await _async_get(port)
    await app.close()
    fam = parse(body)["tether_worker_queue_wait_seconds"]
    assert fam.type == "histogram"
    by_queue = histograms(fam, "queue")
    assert sorted(by_queue) == ["default", "idle"]
    for series in by_queue.values():
        check_histogram(series)
    got = _series(body)
    assert got['tether_worker_queue_wait_seconds_count{queue="default"}'] == 3
    assert got['tether_worker_queue_wait_seconds_sum{queue="default"}'] >= 3 * 0.5
    assert got['tether_worker_queue_wait_seconds_bucket{queue="default",le="0.25"}'] == 0
    assert got['tether_worker_queue_wait_seconds_bucket{queue="default",le="+Inf"}'] == 3
    assert got['tether_worker_queue_wait_seconds_count{queue="idle"}'] == 0
    assert got['tether_worker_queue_wait_seconds_sum{queue="idle"}'] == 0


async def _scraped(port: int) -> dict[str, float]:
    status, body = await _async_get(port)
    assert status == 200, body
    return _series(body)


async def _until(port: int, series: str, value: float) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while True:
        got = await _scraped(port)
        if got[series] == value:
            return got
        assert time.monotonic() < deadline, (series, value, got)
        await asyncio.sleep(0.1)


@pytest.mark.postgres
async def test_a_store_outage_is_counted_with_its_seconds(pg_migrated_url: str) -> None:
    """The worker's PostgreSQL goes away (every connection cut, new ones refused) and
    comes back: one outage, told while it lasts (the scrape answers without the store),
    its seconds added once it is over."""
    from tests.faults.cutproxy import CuttingProxy

    proxy = CuttingProxy(pg_migrated_url).start()
    app = tether.App(proxy.url(), pool_timeout=1.0, connect_timeout=1.0)

    @app.workflow
    async def nothing() -> None:
        return None

    try:
        async with app.worker(metrics_port=0, poll_interval=0.1) as worker:
            port = worker.metrics_port
            assert port is not None
            got = await _scraped(port)
            assert got["tether_worker_store_outages_total"] == 0
            assert got["tether_worker_store_outage_seconds_total"] == 0
            proxy.go_down()
            during = await _until(port, "tether_worker_store_unavailable", 1)
            assert during["tether_worker_store_outages_total"] == 1
            proxy.back()
            after = await _until(port, "tether_worker_store_unavailable", 0)
            assert after["tether_worker_store_outages_total"] == 1
            assert after["tether_worker_store_outage_seconds_total"] > 0
            # (ended: its seconds stay as they were)
            assert (await _scraped(port))["tether_worker_store_outage_seconds_total"] \
                == after["tether_worker_store_outage_seconds_total"]
    finally:
        await app.close()
        proxy.close()


async def test_connections_past_the_limit_are_closed_unanswered(tmp_path: Path) -> None:
    """16 connections that send nothing hold every place; the 17th is closed without an
    answer, and once they are gone a scrape is answered again."""
    from tether.worker._metrics import MAX_CONNECTIONS

    app = tether.App(f"sqlite:///{tmp_path}/c.db")

    @app.workflow
    async def nothing() -> None:
        return None

    try:
        async with app.worker(metrics_port=0) as worker:
            port = worker.metrics_port
            assert port is not None
            idle = [await asyncio.open_connection("127.0.0.1", port)
                     for _ in range(MAX_CONNECTIONS)]
            try:
                await asyncio.sleep(0)  # (a turn of the loop: the server takes them)
                assert (await _async_get(port))[0] == 0  # (closed: no status line)
            finally:
                for _, writer in idle:
                    writer.close()
                for _, writer in idle:
                    await writer.wait_closed()
            status = 0
            for _ in range(100):  # (the server sees them closed at its next reads)
                status = (await _async_get(port))[0]
                if status:
                    break
                await asyncio.sleep(0.05)
            assert status == 200
    finally:
        await app.close()
