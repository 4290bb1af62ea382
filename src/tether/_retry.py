"""Retry policy: a pure rule for the delay before the next attempt. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tether.errors import ConfigError, NonRetryable, PayloadError, Postpone

#: ``RetryPolicy.max_interval`` when left out (unless ``initial_interval`` is longer).
DEFAULT_MAX_INTERVAL = 60.0

#: ``RetryPolicy.max_retry_after`` when left out (unless ``max_interval`` is longer): the
#: longest wait an error's ``retry_after`` (a provider's ``Retry-After``) is honoured for.
#: Two minutes, the OpenAI Python SDK's own ceiling (Anthropic's SDK: one minute).
DEFAULT_MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is retried. The attempt count and next-attempt time are
    persisted in the journal, so a worker crash does not restart the schedule.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(initial_interval * backoff ** (n - 1), max_interval)``.

    Attributes:
        initial_interval: seconds before the second attempt.
        backoff: factor applied to the interval after each failed attempt.
        max_interval: upper bound of one interval, in seconds; not below
            ``initial_interval`` (``ConfigError``). Left out: 60, or ``initial_interval``
            if that is longer (``RetryPolicy(initial_interval=300)`` waits 300 s, not 60).
        max_attempts: total attempts allowed, first included; ``None`` retries forever.
            An attempt cut off by its worker's death counts, but the step always runs
            again after it (it did not fail; ``--max-crashes`` bounds such deaths).
        max_duration: seconds from the first attempt after which no new attempt starts.
        non_retryable: exception types that fail the step at once (a tuple; one type
            or a list is taken too). A value of the wrong kind is a ``ConfigError``.
        max_retry_after: the longest wait, in seconds, that an error's ``retry_after``
            (a provider's ``Retry-After``) may push the next attempt to; a longer ask
            ("retry in a day", an HTTP-date a week ahead) is honoured up to this ceiling,
            and the step tries again then. Left out: 120 s, or ``max_interval`` if that
            is longer. ``0`` ignores ``retry_after``; ``math.inf`` honours any.
    """

    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float | None = None  # a float once made (see __post_init__)
    max_attempts: int | None = 3
    max_duration: float | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    max_retry_after: float | None = None  # a float once made (see __post_init__)

    def __post_init__(self) -> None:
        # (A string or a timedelta here failed with a bare TypeError, or later: the
        # step's first failure failed the run.)
        for field, optional in (("initial_interval", False), ("backoff", False),
                                ("max_interval", True), ("max_duration", True),
                                ("max_retry_after", True)):
            value = getattr(self, field)
            if (value is None and optional) or (
                    isinstance(value, (int, float)) and not isinstance(value, bool)):
                continue
            raise ConfigError(f"RetryPolicy.{field} must be a number"
                              f"{' or None' if optional else ''}, not {value!r}")
        if self.max_attempts is not None and (
                isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int)):
            raise ConfigError(f"RetryPolicy.max_attempts must be a whole number >= 1 or None, "
                              f"not {self.max_attempts!r}")
        object.__setattr__(self, "non_retryable", _exception_types(self.non_retryable))
        if self.max_interval is None:
            object.__setattr__(self, "max_interval",
                               max(DEFAULT_MAX_INTERVAL, self.initial_interval))
        if self.max_retry_after is None:
            object.__setattr__(self, "max_retry_after",
                               max(DEFAULT_MAX_RETRY_AFTER, self._cap))
        elif math.isnan(self.max_retry_after) or self.max_retry_after < 0:
            raise ConfigError("RetryPolicy.max_retry_after must be a number >= 0 (math.inf "
                              "honours any Retry-After) or None")
        # NaN passes every comparison below, and an infinite interval or backoff makes a
        # retry time that cannot be journaled: the step's first failure failed the run.
        if not all(math.isfinite(v) for v in (self.initial_interval, self._cap,
                                               self.backoff)):
            raise ConfigError("RetryPolicy initial_interval, max_interval and backoff must "
                              "be finite numbers")
        if self.max_duration is not None and math.isnan(self.max_duration):
            raise ConfigError("RetryPolicy.max_duration must be a number or None, not NaN")
        if self.max_duration is not None and self.max_duration < 0:
            raise ConfigError(f"RetryPolicy.max_duration must be >= 0 or None, "
                              f"not {self.max_duration!r}")
        if self.initial_interval < 0 or self._cap < 0:
            raise ConfigError("RetryPolicy intervals must be >= 0")
        if self._cap < self.initial_interval:
            raise ConfigError(
                f"RetryPolicy.max_interval ({self._cap:g} s) is below initial_interval "
                f"({self.initial_interval:g} s): every interval would be capped below the "
                "first; raise max_interval or leave it out")
        if self.backoff < 1:
            raise ConfigError("RetryPolicy.backoff must be >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be >= 1 or None")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (``attempts >= 1``)."""
        exp = max(attempts - 1, 0)
        try:
            raw = self.initial_interval * (self.backoff**exp)
        except OverflowError:
            return self._cap
        return min(raw, self._cap)

    @property
    def _cap(self) -> float:
        """``max_interval`` as made (never None after ``__post_init__``)."""
        cap = self.max_interval
        return DEFAULT_MAX_INTERVAL if cap is None else cap

    @property
    def _retry_after_cap(self) -> float:
        """``max_retry_after`` as made (never None after ``__post_init__``)."""
        cap = self.max_retry_after
        return max(DEFAULT_MAX_RETRY_AFTER, self._cap) if cap is None else cap

    def next_attempt_at(self, *, attempts: int, first_attempt_at: float, now: float,
                        error: BaseException | None = None) -> float | None:
        """When to start the next attempt, or ``None`` if the step has failed for good."""
        if error is not None and self.is_non_retryable(error):
            return None
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return None
        at = now + self.delay(attempts)
        if self.max_duration is not None and at - first_attempt_at > self.max_duration:
            return None
        return at

    def is_non_retryable(self, error: BaseException) -> bool:
        return isinstance(error, (NonRetryable, PayloadError, *self.non_retryable))


def _exception_types(given: object) -> tuple[type[BaseException], ...]:
    """``RetryPolicy.non_retryable`` as a tuple: one exception type, or an iterable of
    them (a tuple, a list, a set)."""
    if isinstance(given, type):
        given = (given,)
    if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
        raise ConfigError(f"RetryPolicy.non_retryable must be exception types (one, or a "
                          f"tuple of them), not {given!r}")
    types = tuple(given)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigError(f"RetryPolicy.non_retryable must be exception types (one, or "
                              f"a tuple of them); {t!r} is not one")
    return types


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What to record after a step attempt raised: the retry decision.

    Attributes:
        attempts: the failed attempts to record (a postponement does not count one).
        retry_at: when the next attempt starts; ``None`` if the step failed for good.
        postponed: the step asked to be tried later (``Postpone``), not a failure.
    """

    attempts: int
    retry_at: float | None
    postponed: bool = False

    @property
    def failed_for_good(self) -> bool:
        return self.retry_at is None


def decide_retry(policy: RetryPolicy, error: BaseException, *, attempts: int,
                 first_attempt_at: float, now: float) -> AttemptOutcome:
    """The retry decision after attempt number ``attempts`` raised ``error``. Pure.

    1. ``Postpone(delay)``: not a failure; the attempt is given back and the step runs
       again at ``now + delay``, whatever the policy says.
    2. Otherwise the policy decides (``RetryPolicy.next_attempt_at``): ``NonRetryable``,
       ``PayloadError`` and the policy's ``non_retryable`` types, the last attempt, or
       passing ``max_duration`` fail the step for good.
    3. An error with a positive ``retry_after`` attribute (seconds, e.g. from an HTTP
       ``Retry-After`` header) pushes a retry that the policy allows to at least
       ``now + min(retry_after, policy.max_retry_after)``: a provider's "come back in a
       day" is honoured up to the ceiling (120 s unless set), and the step asks again
       then instead of sleeping a day. It never turns a final failure into a retry, and
       a push past the policy's ``max_duration`` fails the step for good now, as the
       policy's own delay would (the caller bounded how long the step may take). An
       infinite (or NaN) ``retry_after`` is ignored: no wake-up time could be recorded
       for it.
    """
    if isinstance(error, Postpone):
        return AttemptOutcome(attempts=attempts - 1, retry_at=now + error.delay,
                              postponed=True)
    at = policy.next_attempt_at(attempts=attempts, first_attempt_at=first_attempt_at,
                                now=now, error=error)
    retry_after = getattr(error, "retry_after", None)
    if (at is not None and isinstance(retry_after, (int, float))
            and not isinstance(retry_after, bool) and 0 < retry_after < math.inf):
        at = max(at, now + min(float(retry_after), policy._retry_after_cap))
        if policy.max_duration is not None and at - first_attempt_at > policy.max_duration:
            at = None
    return AttemptOutcome(attempts=attempts, retry_at=at)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` calls (or ``cost`` units per call) per ``per`` seconds under ``key``,
    across every worker sharing the store: a token bucket kept in the store. It holds
    ``limit`` tokens and refills at ``limit`` per ``per``, so a full bucket lets a burst
    of ``limit`` go at once, and up to twice ``limit`` can pass in one window of ``per``
    seconds (the burst, then the refill); over longer spans the rate is ``limit`` per
    ``per``.

    A step with a rate limit that is not granted waits without using an attempt (and
    is released while it waits if the wait is long). Outside a workflow a step is a
    plain call and is not limited.
    """

    key: str
    limit: float
    per: float = 60.0
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not self.key:
            raise ConfigError("RateLimit.key must not be empty")
        # NaN passes "<= 0"; the store refuses non-finite values only when the step runs.
        if not all(math.isfinite(v) for v in (self.limit, self.per, self.cost)):
            raise ConfigError("RateLimit limit, per and cost must be finite numbers")
        if self.limit <= 0 or self.per <= 0 or self.cost <= 0:
            raise ConfigError("RateLimit limit, per and cost must be > 0")
        if self.cost > self.limit:
            raise ConfigError("RateLimit.cost must not exceed limit")


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
