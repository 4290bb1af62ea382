"""``tether worker --heartbeat SECONDS --lease-margin SECONDS``: the worker's
``heartbeat_interval`` and ``lease_margin`` (only ``app.worker(...)`` could set them),
judged by the worker's own rules: a value it refuses is one line naming the rule, exit 2,
before the store is opened; values it takes serve runs."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.forked import stop_process
from tests.web.helpers import ROOT, TETHER, env
from tether import App

APP = "tests.cli.metrics_app:app"


def _tether(*args: str, marks: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TETHER, *args], cwd=ROOT, env=env(TETHER_TEST_MARKS=str(marks)),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("flags", "says"), [
    (("--lease", "4", "--heartbeat", "1", "--lease-margin", "3"),
     "lease_margin must be a number of seconds >= 0 and below lease_seconds - "
     "heartbeat_interval (4 - 1 = 3), not 3.0"),
    (("--heartbeat", "5"), "heartbeat_interval must be > 0 and below lease_seconds (5), "
                           "not 5.0"),
])
def test_a_lease_setting_the_worker_refuses_is_one_line_and_exit_2(
        tmp_path: Path, flags: tuple[str, ...], says: str) -> None:
    done = _tether("worker", APP, "--db", f"sqlite:///{tmp_path}/w.db", *flags,
                   marks=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"tether: error: {says}"), \
        done.stderr
    assert not (tmp_path / "w.db").exists()  # (refused before the store was opened)


def test_a_worker_with_its_lease_settings_serves_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*TETHER, "worker", APP, "--db", url, "--lease", "4",
                                 "--heartbeat", "1", "--lease-margin", "0.25"], cwd=ROOT,
                                env=env(TETHER_TEST_MARKS=str(tmp_path)), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        async def run() -> str:
            async with App(url) as app:
                handle = await app.start("fails_once", "x", run_id="l-1", check_args=False)
                return str(await handle.result(timeout=60))

        assert asyncio.run(run()) == "x", log.read_text()
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()
