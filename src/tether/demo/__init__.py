"""The crash-recovery demo: a worker process runs a six-step chain, is killed with
SIGKILL after step 3 as a node restart would, and a second worker process finishes
the run without running steps 1-3 again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

from tether.cli._runs import print_timeline
from tether.demo import chain


def _spawn_worker(db: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tether", "worker", "tether.demo.chain:app", "--db", db],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _executed(log_path: str) -> list[tuple[int, str]]:
    if not os.path.exists(log_path):
        return []
    out = []
    with open(log_path) as f:
        for line in f:
            pid, _, what = line.strip().partition(" ")
            out.append((int(pid), what))
    return out


async def run_demo() -> int:
    folder = tempfile.mkdtemp(prefix="tether-demo-")
    db = f"sqlite:///{folder}/demo.db"
    log_path = os.path.join(folder, "steps.log")
    env = dict(os.environ, TETHER_DEMO_LOG=log_path, TETHER_DATABASE_URL=db)
    print(f"store: {db}  (SQLite, WAL, synchronous=FULL)")
    app = chain.app
    app.use_store(db)
    first = _spawn_worker(db, env)
    second: subprocess.Popen[bytes] | None = None
    try:
        async with app:
            handle = await app.start(chain.research_chain, "durable execution", run_id="demo-1")
            print(f"started run {handle.run_id} on worker pid {first.pid}")
            while True:
                info = await app.get_run(handle.run_id)
                done = [e for e in info.journal if e["kind"] == "step" and e["status"] == "ok"]
                if len(done) >= 3:
                    break
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            first.wait()
            print(f"step 3 committed: kill -9 worker {first.pid} (as a node restart would)")
            before = _executed(log_path)
            t0 = time.monotonic()
            second = _spawn_worker(db, env)
            print(f"started a new worker pid {second.pid}")
            result = await handle.result(timeout=60)
            elapsed = time.monotonic() - t0
            info = await app.get_run(handle.run_id)
        after = _executed(log_path)
        print()
        print_timeline(info)
        ran_first = [what for pid, what in before if pid == first.pid]
        ran_second = [what for pid, what in after if pid == second.pid]
        repeats = [k for k, n in Counter(what for _, what in after).items() if n > 1]
        print()
        print(f"worker {first.pid} ran {len(ran_first)} steps before it was killed: "
              f"{', '.join(ran_first)}")
        print(f"worker {second.pid} replayed {len(ran_first)} recorded steps and ran "
              f"{len(ran_second)}: {', '.join(ran_second)}")
        print(f"steps run twice: {', '.join(repeats) if repeats else 'none'}")
        print(f"run completed {elapsed:.2f} s after the new worker started; result: {result}")
        return 0 if not repeats else 1
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
