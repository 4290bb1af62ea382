"""A disk that fills and empties: the SQLite store lives on a small tmpfs (mounted by
the test); while the soak's workers run (no kills), a filler file takes every free
byte, stays a few seconds, and is deleted; several times. Meanwhile the CLI runs
``runs``, ``show``, ``start``, ``signal`` and ``db status`` against the full disk.

Figures (zero means zero): the soak's (runs lost, i.e. acknowledged starts missing;
not completed after the drain; wrong results; duplicated committed-step effects;
integrity_check), CLI starts acknowledged on a full disk and lost, CLI commands that
printed a traceback or an error of more than one line; reported: fills, worker
processes that exited (the harness starts a replacement for each), CLI commands that
failed with a clean error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import CHECKOUT_PATH, forked
from tests.chaos.harness import ROOT, Profile, retried, soak
from tests.chaos.model import expected
from tether import App

PROFILES = {
    "smoke": Profile("smoke", workers=2, duration=12, runs=30, crash_p=0.0, kill_every=None),
    "full": Profile("full", workers=2, duration=180, runs=500, crash_p=0.0, kill_every=None),
}
FULL_FOR = (2.0, 4.0)  # seconds the disk stays full
FREE_FOR = (2.0, 4.0)  # seconds between fills
MIN_FILLS = 2  # fills go on past the profile's duration (before the drain) until this many
TMPFS_SIZE = "24m"


def missing_privilege() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    return None


@contextlib.contextmanager
def small_tmpfs(size: str = TMPFS_SIZE) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="tether-chaos-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)],
                   check=True, capture_output=True, text=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 16)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):  # the last partial block, byte by byte
            for _ in range(1 << 16):
                written += f.write(b"\0")
    return written


@dataclass
class DiskFigures:
    fills: int = 0
    cli_commands: int = 0
    cli_clean_errors: int = 0
    cli_tracebacks: int = 0
    cli_multiline_errors: int = 0
    cli_starts_acknowledged: list[str] = field(default_factory=list)
    cli_starts_lost: int = 0
    examples: dict[str, str] = field(default_factory=dict)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=CHECKOUT_PATH)
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=120, check=False)


async def disk_fill_soak(work: Path, profile: Profile, seed: int = 31) -> dict[str, Any]:
    rng = random.Random(seed)
    figures = DiskFigures()
    seeds = (s for s in range(1, 10**6) if not expected("x", s).waits_for_signal)
    with small_tmpfs() as mnt:
        url = f"sqlite:///{mnt}/t.db"
        filler = mnt / "filler"

        async def cli_on_full_disk(n: int) -> None:
            rid = "c00000"  # the soak's first run
            new_id = f"cli{n:03d}"
            commands = [
                ("runs", ["runs", "--db", url, "--limit", "5"]),
                ("show", ["show", rid, "--db", url]),
                ("start", ["start", "chaos", "--db", url, "--id", new_id,
                           "--input", f"[{next(seeds)}]"]),
                ("signal", ["signal", rid, "other", "--db", url, "--data", "1"]),
                ("db status", ["db", "status", "--db", url]),
            ]
            for name, args in commands:
                out = await asyncio.to_thread(_cli, *args)
                figures.cli_commands += 1
                text = out.stdout + out.stderr
                if "Traceback" in text:
                    figures.cli_tracebacks += 1
                    figures.examples.setdefault(f"{name} traceback", text[-2000:])
                if out.returncode != 0:
                    figures.cli_clean_errors += 1
                    # Log lines (a timestamp first) may come before; the error itself
                    # must be one line.
                    lines = [x for x in out.stderr.splitlines()
                             if x.strip() and not x[:4].isdigit()]
                    if len(lines) != 1:
                        figures.cli_multiline_errors += 1
                        figures.examples.setdefault(f"{name} multi-line", out.stderr[-2000:])
                    else:
                        figures.examples.setdefault(name, lines[0])
                elif name == "start":
                    figures.cli_starts_acknowledged.append(new_id)

        async def fills(deadline: float) -> None:
            n = 0
            await asyncio.sleep(rng.uniform(*FREE_FOR))
            while time.monotonic() < deadline or figures.fills < MIN_FILLS:
                await asyncio.to_thread(fill, filler)
                figures.fills += 1
                try:
                    if n < 2:  # the CLI against the full disk, twice
                        await cli_on_full_disk(n)
                    await asyncio.sleep(rng.uniform(*FULL_FOR))
                finally:
                    filler.unlink()
                n += 1
                await asyncio.sleep(rng.uniform(*FREE_FOR))

        # The CLI's own starts (cli000, ...) are checked below, not by the soak's model.
        soaked = await soak("sqlite", url, work, profile, seed=seed, disturb=fills,
                            outside=("cli",))
        app = App(url)
        try:
            await retried(app._open)
            for rid in figures.cli_starts_acknowledged:
                run = await retried(lambda r=rid: app.store.run_get(r))
                if run is None:
                    figures.cli_starts_lost += 1
        finally:
            await app.close()
    out = {**soaked.summary(), "backend": "sqlite on a tmpfs that fills and empties",
           "disk fills": figures.fills, "CLI commands on a full disk": figures.cli_commands,
           "of those, failed with a one-line error": figures.cli_clean_errors,
           "CLI tracebacks": figures.cli_tracebacks,
           "CLI errors longer than one line": figures.cli_multiline_errors,
           "CLI starts acknowledged on a full disk": len(figures.cli_starts_acknowledged),
           "CLI starts acknowledged and lost": figures.cli_starts_lost}
    return {**out, "_examples": figures.examples}


MUST_BE_ZERO = ("runs lost", "runs not completed after drain", "wrong results",
                "duplicated committed-step effects", "effects missing", "effects unexpected",
                "journal gaps", "CLI tracebacks", "CLI errors longer than one line",
                "CLI starts acknowledged and lost")
