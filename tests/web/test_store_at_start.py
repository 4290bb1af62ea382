"""``tether serve`` started before its store answers: it listens at once, answers 503
meanwhile, and serves once the store is up, without a restart (real processes; the
store a private PostgreSQL cluster on a port of its own, started after the server)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import forked
from tests.chaos.pgcluster import PrivateCluster, missing_privilege
from tests.forked import stop_process
from tests.web.helpers import ADMIN, ROOT, TETHER, WEBAPP, env, free_port

needs_cluster = pytest.mark.skipif(missing_privilege() is not None,
                                   reason=str(missing_privilege()))


def _launch(db: str, log: Path, *args: str, **extra_env: str) -> tuple[subprocess.Popen[bytes],
                                                                        str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = forked.Popen([*TETHER, "serve", "--db", db, "--port", str(port), *args],
                            cwd=ROOT, env=env(**extra_env), stdout=out,
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _until(url: str, status: int, proc: subprocess.Popen[bytes], log: Path,
           timeout: float = 120) -> httpx.Response:
    """``url``'s first answer with ``status`` (the server must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tether serve exited: {log.read_text()}"
        try:
            answer = httpx.get(url, timeout=5)
        except httpx.HTTPError as exc:
            last = exc
        else:
            if answer.status_code == status:
                return answer
            last = answer
        time.sleep(0.1)
    raise AssertionError(f"{url}: no {status} within {timeout} s (last: {last!r}): "
                         f"{log.read_text()}")


@pytest.mark.slow
@needs_cluster
async def test_serve_listens_before_its_store_is_up_and_serves_once_it_is(
        tmp_path: Path) -> None:
    """``tether serve`` opened its store before listening: a database not up yet was
    one error line and exit 1 (in Kubernetes, CrashLoopBackOff and a UI down minutes
    after the database was back). Now it listens at once: ``/healthz`` answers 503
    naming the unreachable server, the API its 503 ``store_unavailable`` with
    ``Retry-After``, a page the 503 page that loads itself again; each failed attempt is
    a line in the log; and once the database is up, the same process answers 200."""
    cluster = PrivateCluster()  # (its port is free: nothing listens there yet)
    log = tmp_path / "serve.log"
    (tmp_path / "tokens").write_text(f"admin:{ADMIN}\n")
    (tmp_path / "tokens").chmod(0o600)
    proc, url = _launch(cluster.url(), log, "--app", WEBAPP, "--token-file",
                        str(tmp_path / "tokens"))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        health = _until(url + "/healthz", 503, proc, log)
        error = health.json()["error"]
        assert error["code"] == "store_unavailable", error
        assert f"127.0.0.1:{cluster.port} is unavailable" in error["message"], error
        api = httpx.get(url + "/api/v1/runs", headers=auth, timeout=5)
        assert api.status_code == 503, api.text
        assert api.json()["error"]["code"] == "store_unavailable"
        assert api.headers["Retry-After"] == "1"
        # (the token is still required: the guard answers before the store is asked)
        assert httpx.get(url + "/api/v1/runs", timeout=5).status_code == 401
        page = httpx.get(url + "/runs", headers=auth, timeout=5)
        assert page.status_code == 503, page.text
        assert "The store is unavailable" in page.text
        assert '<meta http-equiv="refresh" content="5">' in page.text
        assert httpx.get(url + "/openapi.json", headers=auth, timeout=5).status_code == 200

        await asyncio.to_thread(cluster.start)
        assert _until(url + "/healthz", 200, proc, log).json() == {"ok": True}
        started = httpx.post(url + "/api/v1/runs", headers=auth, timeout=10,
                             json={"workflow": "greet", "input": ["x"], "run_id": "r-1"})
        assert started.status_code == 201, started.text
        listed = httpx.get(url + "/api/v1/runs", headers=auth, timeout=10)
        assert listed.status_code == 200, listed.text
        assert [r["run_id"] for r in listed.json()["runs"]] == ["r-1"]
        assert proc.poll() is None
    finally:
        stop_process(proc, 20)
        await asyncio.to_thread(cluster.stop)
    said = log.read_text()
    assert "store unavailable: PostgreSQL at" in said, said
    assert "retrying in 0.5 s (attempt 1)" in said, said
    assert "store reachable after" in said, said
    assert "Traceback" not in said, said


@pytest.mark.slow
@needs_cluster
async def test_a_store_no_wait_fixes_found_after_listening_exits_1(tmp_path: Path) -> None:
    """A mistake met once the database is up (no Tether schema, auto-migration off: a
    ``ConfigError``) is not waited for: ``tether serve`` stops and exits 1 with that one
    error line, as when it is met before listening."""
    cluster = PrivateCluster()
    log = tmp_path / "serve.log"
    proc, url = _launch(cluster.url(), log, TETHER_AUTO_MIGRATE="0")
    try:
        _until(url + "/healthz", 503, proc, log)
        await asyncio.to_thread(cluster.start)
        assert await asyncio.to_thread(proc.wait, 120) == 1, log.read_text()
    finally:
        stop_process(proc, 20)
        await asyncio.to_thread(cluster.stop)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("tether: error:")]
    assert len(lines) == 1 and "no Tether store in PostgreSQL schema" in lines[0], \
        log.read_text()
    assert "Traceback" not in log.read_text()


def test_wait_for_store_gives_up_and_exits_1(tmp_path: Path) -> None:
    """``--wait-for-store SECONDS``: a store still unreachable that long after the start
    is given up: the server stops, one error line says so, exit 1 (an orchestrator
    restarts it, or an operator looks). ``0`` is the first attempt only, before
    listening."""
    log = tmp_path / "serve.log"
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    proc, url = _launch(dead, log, "--wait-for-store", "2")
    try:
        _until(url + "/healthz", 503, proc, log)  # (it listened meanwhile)
        assert proc.wait(120) == 1, log.read_text()
    finally:
        stop_process(proc, 20)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("tether: error:")]
    assert len(lines) == 1, log.read_text()
    assert "is unavailable" in lines[0] and "still unreachable after 2 s" in lines[0], lines
    assert "Traceback" not in log.read_text()

    done = subprocess.run([*TETHER, "serve", "--db", dead, "--port", str(free_port()),
                           "--wait-for-store", "0"], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done
    assert "Uvicorn running" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("tether: error:")]
    assert len(errors) == 1 and "is unavailable" in errors[0], done.stderr


def test_a_store_no_wait_fixes_is_one_line_before_listening(tmp_path: Path) -> None:
    """A ``ConfigError`` at the first attempt (a SQLite file in a folder that does not
    exist) is not waited for: one error line and exit 1, before the server listens."""
    db = f"sqlite:///{tmp_path / 'no-such-folder' / 'tether.db'}"
    done = subprocess.run([*TETHER, "serve", "--db", db, "--port", str(free_port())],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1, done
    assert "Uvicorn running" not in done.stderr and "retrying" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("tether: error:")]
    assert len(errors) == 1 and "no folder" in errors[0], done.stderr
