"""Checks and conversions both backends share for the values of migration 0002
(run metrics, rate limits, queue limits, live events): bad input is refused the same way
on SQLite and PostgreSQL, before anything is written."""

from __future__ import annotations

import json
import math

from tether._types import check_name
from tether.errors import ConfigError, PayloadTooLarge, StoreError

#: Largest live event (``run_publish``), in UTF-8 bytes. Events are meant for streamed
#: chunks (tokens); a datagram or a few notifications carry one.
MAX_EVENT_BYTES = 64 * 1024


def decode_metrics(text: str | None) -> dict[str, float]:
    """The run's metrics column as a dict (``{}`` when NULL)."""
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): float(v) for k, v in value.items()}


def check_metrics(run_id: str, text: str) -> None:
    """Refuse metrics that are not a plain JSON object of finite numbers.

    Raises: StoreError naming the run and what is wrong (e.g. a payload hook encrypted
    the text: metrics are stored as plain JSON so every tool can read them)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise StoreError(f"run {run_id!r}: metrics must be plain JSON text (an object of "
                         f"numbers), got {text[:40]!r}") from None
    if not isinstance(value, dict):
        raise StoreError(f"run {run_id!r}: metrics must be a JSON object, "
                         f"got {type(value).__name__}")
    for key, number in value.items():
        if "\x00" in key:
            raise StoreError(f"run {run_id!r}: metric {key!r} holds a NUL character "
                             "(PostgreSQL's json refuses it)")
        if (isinstance(number, bool) or not isinstance(number, (int, float))
                or not math.isfinite(number)):
            raise StoreError(f"run {run_id!r}: metric {key!r} must be a finite number, "
                             f"got {number!r}")


def check_rate(key: str, limit: float, period: float, amount: float) -> None:
    """Refuse a rate limit that could never be met or makes no sense.

    Raises: ConfigError naming the key."""
    for name, value in (("limit", limit), ("period", period)):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"rate limit {key!r}: {name} must be a positive number, "
                              f"got {value!r}")
    if not math.isfinite(amount) or amount < 0:
        raise ConfigError(f"rate limit {key!r}: amount must be a number >= 0, got {amount!r}")
    if amount > limit:
        raise ConfigError(f"rate limit {key!r}: amount {amount:g} exceeds the limit "
                          f"{limit:g} per {period:g} s, so it could never be taken")


def bucket_take(tokens: float | None, updated_at: float | None, *, limit: float,
                period: float, amount: float, now: float) -> tuple[float, float, float]:
    """One token-bucket decision: (wait, tokens after, updated_at after).

    The bucket is full at first use (``tokens`` None) and refills continuously at
    ``limit / period`` per second, up to ``limit``. A clock behind the one that wrote the
    bucket last refills nothing and does not move ``updated_at`` back. ``wait`` is 0.0
    when ``amount`` was taken, else the seconds until it will be there (nothing taken).
    The SQL function ``rate_acquire`` of the PostgreSQL store computes the same.
    """
    rate = limit / period
    if tokens is None or updated_at is None:
        level, last = limit, now
    else:
        level = min(limit, tokens + max(0.0, now - updated_at) * rate)
        last = max(updated_at, now)
    if level + 1e-9 * limit >= amount:
        return 0.0, max(level - amount, 0.0), last
    return max((amount - level) / rate, 1e-6), level, last


#: The largest queue concurrency limit: PostgreSQL stores it as an ``integer`` (and
#: SQLite's column takes no integer past 64 bits).
MAX_QUEUE_LIMIT = 2**31 - 1


def check_queue_limit(queue: str, limit: int | None) -> None:
    """Raises: ConfigError for an empty queue name (or one with control characters, as
    for a queue given to a workflow) or a limit that is not an int from 0 to
    ``MAX_QUEUE_LIMIT``."""
    # (an empty one: InvalidName; removing one takes any name)
    check_name("queue", queue, new=limit is not None)
    if limit is None:
        return
    if (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
            or limit > MAX_QUEUE_LIMIT):
        raise ConfigError(f"queue {queue!r}: the concurrency limit must be an integer from 0 "
                          f"(0 pauses the queue) to {MAX_QUEUE_LIMIT:,} or None, got {limit!r}")


def check_event(run_id: str, data: str) -> bytes:
    """The event's UTF-8 bytes. Raises: PayloadTooLarge past ``MAX_EVENT_BYTES``;
    StoreError for a NUL character (PostgreSQL text cannot carry it)."""
    raw = data.encode()
    if len(raw) > MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"live event of run {run_id!r}", len(raw), MAX_EVENT_BYTES)
    if b"\x00" in raw:
        raise StoreError(f"live event of run {run_id!r} contains a NUL character")
    return raw
