"""Real worker processes for fault tests, ended by their PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests import CHECKOUT_PATH, forked

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Starts ``tether worker tests.faults.apps:app`` processes and cleans them up."""

    def __init__(self, db: str, side_file: Path, log_dir: Path) -> None:
        self.db = db
        self.side_file = side_file
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *queues: str, lease: float = 5.0) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "tether", "worker", "tests.faults.apps:app",
                "--db", self.db, "--lease", str(lease)]
        for q in queues:
            args += ["--queue", q]
        env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(self.side_file),
                   PYTHONPATH=CHECKOUT_PATH)
        with open(self.log_dir / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = forked.Popen(args, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(30)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
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
