"""When an outage is told in the log: once as it starts, then a reminder every so many
seconds, and once as it ends, however many failures come in between (the store's
connection attempts, a worker's calls)."""

from __future__ import annotations

import time


class OutagePacing:
    """The state of an outage told in the log: since when (``since``, ``None`` while
    there is none), how many failures, and when the last line was written."""

    def __init__(self) -> None:
        #: ``time.monotonic()`` of the first failure since the last success.
        self.since: float | None = None
        self.failures = 0  # since the last success
        self._told = 0.0

    def _failure(self, every: float) -> str | None:
        """Count a failure: ``"start"`` if it begins an outage, ``"reminder"`` if the
        last line is ``every`` seconds old, else ``None`` (nothing to tell)."""
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = self._told = now
            return "start"
        if now - self._told >= every:
            self._told = now
            return "reminder"
        return None

    def _elapsed(self) -> float:
        return time.monotonic() - self.since if self.since is not None else 0.0

    def _clear(self) -> None:
        self.since = None
        self.failures = 0
