"""``tether versions``' "newest" (the version schedules' ticks go to): the version whose
first live worker started last, whatever the versions' names; and every live worker
counted, however close together the workers of two versions list themselves."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forked import stop_process
from tests.web.helpers import ROOT, TETHER, env
from tether import App
from tether._lifecycle import live_versions, version_announce
from tether.store._port import WorkerInfo

APP = "tests.cli.versions_app:app"


def _versions(db: str) -> dict[str, dict[str, object]]:
    proc = subprocess.run([*TETHER, "versions", "--json", "--db", db], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {row["version"]: row for row in json.loads(proc.stdout)}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop_process(proc)


def _start(db: str, version: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*TETHER, "worker", APP, "--db", db], cwd=ROOT,
                                env=env(TETHER_TEST_VERSION=version), stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_live(db: str, *versions: str) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + 120
    while True:
        rows = _versions(db)
        if all(v in rows and rows[v]["live_workers"] == 1 for v in versions):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_newest_is_the_version_whose_worker_started_last_not_the_highest_name(
        tmp_path: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    """A rollback's case: v2's worker is up, then v1's starts: v1 is newest (the docs'
    "came up last"), and v2 is still counted live."""
    db = f"sqlite:///{tmp_path}/v.db"
    subprocess.run([*TETHER, "db", "migrate", "--db", db], cwd=ROOT, env=env(),
                   capture_output=True, timeout=120, check=True)
    workers.append(_start(db, "v2", tmp_path / "v2.log"))
    _wait_live(db, "v2")
    workers.append(_start(db, "v1", tmp_path / "v1.log"))
    rows = _wait_live(db, "v1", "v2")
    assert rows["v1"]["newest"] is True and rows["v2"]["newest"] is False, rows
    up_v1, up_v2 = rows["v1"]["up_since"], rows["v2"]["up_since"]
    assert isinstance(up_v1, float) and isinstance(up_v2, float) and up_v1 > up_v2, rows


async def test_a_worker_that_lists_itself_while_another_does_stays_listed(
        store_url: str) -> None:
    """Worker B (v1) read the registered workers, then worker A (v2) registered and
    listed itself before B wrote the versions row: B's write took A out again as a
    worker "no longer registered", and v2 counted no live worker (v1 newest, the
    ticks on v1) until A restarted. The interleaving is made by running A's start
    right after B's read of the worker list, on a real store."""
    app = App(store_url)
    async with app:
        store = app.store
        now = time.time()

        def info(worker_id: str) -> WorkerInfo:
            return WorkerInfo(worker_id=worker_id, hostname="h", pid=os.getpid(),
                              pid_start="x", queues="default", started_at=now,
                              heartbeat_at=now)

        await store.worker_register(info=info("B"))
        real = store.worker_list
        other_started: list[bool] = []

        async def worker_list() -> object:
            found = await real()
            if not other_started:  # (A's whole start, between B's read and B's write)
                other_started.append(True)
                await store.worker_register(info=info("A"))
                await version_announce(store, worker_id="A", version="v2",
                                       workflows=["nightly"], now=now)
            return found

        store.worker_list = worker_list  # type: ignore[method-assign]
        try:
            await version_announce(store, worker_id="B", version="v1",
                                   workflows=["nightly"], now=now + 0.001)
        finally:
            store.worker_list = real  # type: ignore[method-assign]
        assert other_started
        live = await live_versions(store, time.time())
    assert {v: n for v, (n, _) in live.items()} == {"v1": 1, "v2": 1}
