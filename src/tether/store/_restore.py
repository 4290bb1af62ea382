"""Restoring a backup into a store (``tether db restore``), for both backends: what a
restore returns, what it refuses, and how it tells a live worker from the row a dead
one (or the backup's source store) left behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from tether.errors import ConfigError
from tether.store._port import WORKER_STALE, WorkerInfo

#: The first bytes of each kind of file a restore may be handed.
SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"


class RestoreRefused(ConfigError):
    """A restore that was not done, the target left as it was: the backup is not one
    this store can take (not a Tether backup, a newer schema, another schema name), or
    the target must not be written over (it holds runs and ``force`` was not given; a
    worker or server is using it; it is not a Tether store). ``tether db restore``
    exits 2 on it."""


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What ``restore`` did."""

    #: The restored store: a file's path (SQLite) or where the database is (PostgreSQL).
    target: str
    #: Runs in the restored store, and how many of them wait (for a signal, a timer, an
    #: approval, a child).
    runs: int
    waiting: int
    #: The highest migration applied to the backup as read, and to the store now.
    backup_schema_version: int
    schema_version: int
    #: Migrations applied after the restore (the backup's schema was older).
    migrated: list[str] = field(default_factory=list)
    #: Migrations still pending (an older backup and auto-migration off).
    pending: list[str] = field(default_factory=list)
    #: Runs the target held before, replaced (``force``).
    replaced_runs: int = 0


def file_kind(path: str) -> str:
    """``sqlite``, ``pgdump`` (custom format), ``pgplain`` (pg_dump's SQL text) or
    ``other``, by the file's first bytes.

    Raises: RestoreRefused (no such file, or not readable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise RestoreRefused(f"no backup file {path}") from None
    except IsADirectoryError:
        raise RestoreRefused(f"{path} is a folder, not a backup file") from None
    except OSError as exc:
        raise RestoreRefused(f"cannot read the backup {path}: {exc.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PGDUMP_MAGIC):
        return "pgdump"
    if b"PostgreSQL database dump" in head:
        return "pgplain"
    return "other"


def wrong_kind(path: str, kind: str, want: str) -> RestoreRefused:
    """The refusal of a backup file of the wrong kind for this store."""
    # An operator moving to PostgreSQL tries this first: say that no restore converts
    # between the stores, and which command moves them.
    moving = ("; a backup does not move runs between SQLite and PostgreSQL: `tether db "
              "copy --db FROM_URL --to TO_URL` does, from the store itself (docs/"
              "operations.md, \"Moving from SQLite to PostgreSQL\")")
    if kind == "pgdump":
        return RestoreRefused(
            f"{path} is a PostgreSQL dump (pg_dump's custom format), not a SQLite backup: "
            f"restore it into a PostgreSQL store (--db postgresql://...){moving}")
    if kind == "sqlite":
        return RestoreRefused(
            f"{path} is a SQLite database, not a PostgreSQL dump: restore it into a "
            f"SQLite store (--db sqlite:///path.db){moving}")
    if kind == "pgplain" and want == "postgres":
        return RestoreRefused(
            f"{path} is a plain-SQL pg_dump, not the custom format tether db backup "
            "writes: run it with psql by hand into a database without the store's schema "
            "(docs/operations.md, Backup and restore)")
    what = ("a SQLite database (tether db backup of a SQLite store)" if want == "sqlite"
            else "a pg_dump custom-format file (tether db backup of a PostgreSQL store)")
    return RestoreRefused(f"{path} is not a Tether backup: it is not {what}")


def newer_schema(what: str, unknown: Iterable[int], known: Iterable[int]) -> RestoreRefused:
    """The refusal of a backup (or target) written by a newer Tether."""
    return RestoreRefused(
        f"{what} has schema version {max(unknown):04d}, newer than this Tether knows "
        f"(up to {max(known):04d}): restore it with the Tether version that wrote it, or "
        "upgrade tether")


def command_line(pid: int) -> str:
    """The process's command line, shortened, for a message ("" if unknown)."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
        text = " ".join(w.decode(errors="replace") for w in words if w)
        return text if len(text) <= 80 else text[:77] + "..."
    return ""


#: The long-lived Tether commands a store's user may be, named by ``command_kind``.
_KINDS = ("serve", "mcp", "worker")


def command_kind(pid: int) -> str | None:
    """``serve``, ``mcp`` or ``worker`` if the process runs that ``tether`` command
    (``tether serve ...``, ``python -m tether serve ...``), else None: how a refusal
    names a process that has a SQLite store open (its lock tells its pid, not what it
    is)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [w.decode(errors="replace") for w in f.read().split(b"\0") if w]
    except OSError:
        return None
    for i, word in enumerate(words):
        if word == "tether" or word.endswith("/tether"):
            return _command(words[i + 1:])
    return None


def _command(args: list[str]) -> str | None:
    """The command of ``tether``'s arguments if in ``_KINDS``, past global options and
    their values (``tether --log-level debug serve``)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        valued = "=" not in args[i] and i + 1 < len(args) and args[i + 1] not in _KINDS
        i += 2 if valued else 1
    return args[i] if i < len(args) and args[i] in _KINDS else None


def fresh(worker: WorkerInfo, now: float) -> bool:
    """Whether the worker heartbeated within ``WORKER_STALE`` of ``now``."""
    return now - worker.heartbeat_at <= WORKER_STALE


def describe(worker: WorkerInfo, now: float) -> str:
    ago = max(0.0, now - worker.heartbeat_at)
    return (f"worker {worker.worker_id} (pid {worker.pid} on {worker.hostname}, last "
            f"heartbeat {ago:.0f} s ago)")


def stop_hint(worker: WorkerInfo, host: str, again: str = "the restore") -> str:
    """How to stop ``worker``, from a process on ``host``, then run ``again`` (the
    command refused: ``the restore``, ``the copy``) again."""
    if worker.hostname == host:
        return (f"stop it (kill -TERM {worker.pid}: it hands its runs back and leaves), "
                f"then run {again} again")
    return (f"stop it on {worker.hostname} (kill -TERM {worker.pid}), or, if that host "
            f"is gone, wait until its last heartbeat is {WORKER_STALE:.0f} s old; then "
            f"run {again} again")


def in_use_by(workers: list[WorkerInfo], now: float, host: str,
              again: str = "the restore") -> str:
    """The workers that use a store, named all at once with how to stop them, from a
    process on ``host``: naming the first alone sent an operator to stop one, run the
    restore again, and only then learn of the next. ``workers``: one at least;
    ``again``: the command refused (``stop_hint``)."""
    if len(workers) == 1:
        return f"{describe(workers[0], now)}: {stop_hint(workers[0], host, again)}"
    named = ", ".join(describe(w, now) for w in workers)
    by_host: dict[str, list[str]] = {}
    for w in workers:
        by_host.setdefault(w.hostname, []).append(str(w.pid))
    kills = [f"kill -TERM {' '.join(pids)}" + ("" if h == host else f" on {h}")
             for h, pids in sorted(by_host.items(), key=lambda kv: kv[0] != host)]
    gone = ("" if set(by_host) == {host} else
            f", or, for a host that is gone, wait until its workers' last heartbeat is "
            f"{WORKER_STALE:.0f} s old")
    return (f"{len(workers)} workers, {named}: stop them ({'; '.join(kills)}: a worker "
            f"hands its runs back and leaves){gone}; then run {again} again")
