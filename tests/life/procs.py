"""Worker processes of ``tests.life.apps`` for the lifecycle tests, ended by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests import forked

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    def __init__(self, db: str, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.side_file = tmp / "side.txt"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, version: str | None = None, schedule: bool = False,
              lease: float = 5.0, env_extra: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "tether", "worker", "tests.life.apps:app",
                "--db", self.db, "--lease", str(lease), *extra]
        env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(self.side_file),
                   PYTHONPATH=str(ROOT), TETHER_TEST_VERSION=version or "",
                   TETHER_TEST_SCHEDULE="1" if schedule else "")
        env.pop("TETHER_DATABASE_URL", None)
        env.update(env_extra or {})
        with open(self.tmp / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = forked.Popen(args, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, i: int) -> str:
        return (self.tmp / f"worker-{i}.log").read_text(errors="replace")

    def story(self) -> str:
        """Every worker's log and the side file, for an assertion's message: a failure
        seen once in many runs must explain itself."""
        parts = [f"--- worker-{i} (pid {p.pid})\n{self.log(i)}" for i, p in enumerate(self.procs)]
        side = self.side_file.read_text() if self.side_file.exists() else ""
        return "\n".join([*parts, f"--- side file\n{side}"])

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def executions(self) -> list[tuple[int, str]]:
        if not self.side_file.exists():
            return []
        out = []
        # Only lines that end in a newline: one a worker is writing may be seen in part.
        for line in self.side_file.read_text().split("\n")[:-1]:
            pid, _, what = line.partition(" ")
            out.append((int(pid), what))
        return out

    def counts(self) -> Counter[str]:
        return Counter(what for _, what in self.executions())
