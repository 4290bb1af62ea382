"""The storage port: everything Tether persists goes through ``Store``.

Internal: not for users to implement until it settles. Backends:
``tether.store.sqlite`` (embedded default) and ``tether.store.postgres``.

Every method that writes into a run takes the caller's ``Lease`` and raises
``LeaseLost`` when the run's fencing token moved on: a worker that lost its lease
can never write into a run another worker took over. Methods take ``now`` from the
caller's clock; no query reads the database's own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tether._types import ClaimedRun, JournalEntry, Lease, RunRecord


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    """What a backend can do beyond the common contract."""

    #: Other processes can wake this one when work arrives (LISTEN/NOTIFY, sockets).
    notifications: bool = False
    #: Several hosts may share the store (PostgreSQL yes, SQLite no).
    multi_host: bool = False


@dataclass(slots=True)
class HeartbeatResult:
    """What a worker learns when it renews its leases."""

    #: Runs this worker still holds.
    owned: set[str] = field(default_factory=set)
    #: Of those, runs a user asked to cancel.
    cancel_requested: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process, for detecting owners that are provably dead."""

    worker_id: str
    hostname: str
    pid: int
    pid_start: str
    queues: str
    started_at: float
    heartbeat_at: float


class Store(Protocol):
    """Everything Tether persists."""

    url: str
    capabilities: StoreCapabilities

    async def open(self) -> None:
        """Connect and migrate. Raises: StoreUnavailable, ConfigError."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    async def run_insert(self, *, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless one with its id exists; return (the stored run, created?)."""

    async def run_get(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    async def run_list(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first."""

    async def journal_read(self, run_id: str) -> list[JournalEntry]:
        """The run's journal in position order."""

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float) -> list[ClaimedRun]:
        """Claim up to ``limit`` runnable runs under a new lease (fencing token + 1),
        each with its journal loaded in the same transaction."""

    async def journal_append(self, *, lease: Lease, entry: JournalEntry) -> None:
        """Record one operation's outcome (a pending entry may be overwritten, a final
        one never). Raises: LeaseLost if ``lease`` is stale."""

    async def run_finish(self, *, lease: Lease, status: str, result: str | None,
                         error: str | None, now: float) -> None:
        """End the run (completed, failed, cancelled, blocked). Raises: LeaseLost."""

    async def run_release(self, *, lease: Lease, available_at: float | None,
                          waiting_for: str | None, now: float) -> None:
        """Give the run up to wait: no owner, claimable again at ``available_at`` (or
        when woken). A pending cancel makes it claimable at once. Raises: LeaseLost."""

    async def run_cancel(self, *, run_id: str, now: float) -> RunRecord:
        """Ask a run to cancel; a released or queued run becomes claimable at once.
        Raises: RunNotFound."""

    async def lease_heartbeat(self, *, worker_id: str, now: float,
                              lease_seconds: float) -> HeartbeatResult:
        """Extend every lease ``worker_id`` holds and report which it still holds."""

    async def lease_expire_owner(self, *, worker_id: str, now: float) -> int:
        """Make a dead worker's runs claimable at once; return how many."""

    async def worker_register(self, *, info: WorkerInfo) -> None:
        """Record a live worker."""

    async def worker_unregister(self, *, worker_id: str, now: float) -> None:
        """Forget a worker, handing its runs back to the queue at once."""

    async def worker_list(self) -> list[WorkerInfo]:
        """Known workers."""

    async def next_available_at(self, *, queues: list[str]) -> float | None:
        """The earliest time a run on ``queues`` becomes claimable, or None."""
