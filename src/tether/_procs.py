"""Processes of this host, by pid: whether one still runs (a worker's registration, a
process holding a store open), told apart from a later process given the same pid by
its start time."""

from __future__ import annotations

import os

__all__ = ["pid_start", "process_alive"]


def pid_start(pid: int) -> str:
    """The process's start time, to tell a live process from a reused pid ("" where
    there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(pid: int, start: str) -> bool:
    """Whether the process ``pid`` of this host, started at ``start`` (``pid_start``;
    "" when unknown), still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # (a pid no process can have, from another host's row)
        return False
    return not start or pid_start(pid) in ("", start)
