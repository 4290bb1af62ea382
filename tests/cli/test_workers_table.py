"""``tether workers``' ages (UP, SEEN: ``ago``) at each of their thresholds, and a stale
registration as ``--all`` shows it: its row marked stale, its ages those its last
heartbeat and its start left, in days. Against a real SQLite store and a real
``tether`` process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests import forked
from tether import App
from tether.cli._workers import ago
from tether.store._port import WorkerInfo

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


#: An age and how it reads (``tether._clock.age``) below and at each threshold: the web
#: UI (tests/web/test_ages.py) and ``tether approvals`` read ages by the same table.
AGES = [
    (0, "0 s"),
    (-3.0, "0 s"),  # (a heartbeat "in the future": another host's clock ahead)
    (42.4, "42 s"),
    (119, "119 s"),
    # 120 s: minutes
    (120, "2 min"),
    (17 * MINUTE, "17 min"),
    (119 * MINUTE, "119 min"),
    # 2 h: hours, to a tenth
    (2 * HOUR, "2.0 h"),
    (5.2 * HOUR, "5.2 h"),
    (47.9 * HOUR, "47.9 h"),
    # 2 days: days, to a tenth under 10
    (2 * DAY, "2.0 d"),
    (3 * DAY + 2 * HOUR, "3.1 d"),
    (9.9 * DAY, "9.9 d"),
    # 10 days: whole days
    (10 * DAY, "10 d"),
    (118.3 * DAY, "118 d"),
    (3650 * DAY, "3650 d"),
]


@pytest.mark.parametrize(("seconds", "shown"), AGES)
def test_ago_at_each_threshold(seconds: float, shown: str) -> None:
    assert ago(seconds) == shown


def test_workers_all_shows_a_stale_registration_with_its_ages(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/workers.db"
    now = time.time()

    async def register() -> None:
        async with App(db) as app:
            # A worker killed three days ago, started twelve days ago; one live (a
            # heartbeat a moment ago: live for the next 55 s).
            for info in (
                WorkerInfo(
                    "host-a:4001:dead",
                    "host-a",
                    4001,
                    "s",
                    "default",
                    now - 12 * DAY,
                    now - 3 * DAY - HOUR,
                ),
                WorkerInfo(
                    "host-a:4002:live",
                    "host-a",
                    4002,
                    "s",
                    "default,other",
                    now - 30 * MINUTE,
                    now - 5,
                ),
            ):
                await app.store.worker_register(info=info)

    asyncio.run(register())
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    env["COLUMNS"] = "200"

    def workers(*args: str) -> list[list[str]]:
        out = forked.run(
            [sys.executable, "-m", "tether", "workers", *args, "--db", db],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        return [line.split() for line in out.stdout.splitlines()]

    head, dead, live = workers("--all")
    assert head == ["WORKER", "HOST", "PID", "VERSION", "UP", "SEEN", "HELD", "STATE", "QUEUES"]
    assert dead == [
        "host-a:4001:dead",
        "host-a",
        "4001",
        "-",
        "12",
        "d",
        "3.0",
        "d",
        "0",
        "stale",
        "default",
    ]
    assert live[:5] == ["host-a:4002:live", "host-a", "4002", "-", "30"]
    assert live[5] == "min" and live[7] == "s" and live[-3:] == ["0", "live", "default,other"]
    # Without --all: the live worker alone, and no STATE column.
    head, only = workers()
    assert "STATE" not in head and only[0] == "host-a:4002:live" and "live" not in only
