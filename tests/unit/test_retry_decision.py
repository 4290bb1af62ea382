"""The retry decision after a failed step attempt: a pure function of the policy, the
error and the attempt history."""

from __future__ import annotations

import math

import pytest

from tether import ConfigError, NonRetryable, NotSerializable, Postpone, RetryPolicy
from tether._retry import AttemptOutcome, decide_retry

POLICY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=10.0, max_attempts=4)


class Throttled(Exception):
    def __init__(self, retry_after: float | bool) -> None:
        super().__init__("429")
        self.retry_after = retry_after


def decide(error: BaseException, attempts: int, *, policy: RetryPolicy = POLICY,
           first: float = 100.0, now: float = 100.0) -> AttemptOutcome:
    return decide_retry(policy, error, attempts=attempts, first_attempt_at=first, now=now)


@pytest.mark.parametrize(("attempts", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0)])
def test_backoff_doubles_from_the_initial_interval(attempts: int, delay: float) -> None:
    """After n failed attempts the next starts initial * backoff**(n-1) later."""
    assert decide(RuntimeError("x"), attempts) == AttemptOutcome(attempts, 100.0 + delay)


def test_the_interval_is_capped_by_max_interval() -> None:
    policy = RetryPolicy(initial_interval=3.0, backoff=10.0, max_interval=10.0,
                         max_attempts=None)
    assert decide(RuntimeError("x"), 5, policy=policy).retry_at == 110.0


def test_the_last_attempt_fails_for_good() -> None:
    outcome = decide(RuntimeError("x"), 4)
    assert outcome.failed_for_good and outcome.attempts == 4 and not outcome.postponed


def test_max_attempts_none_retries_forever() -> None:
    policy = RetryPolicy(initial_interval=1.0, max_interval=60.0, max_attempts=None)
    assert decide(RuntimeError("x"), 10_000, policy=policy).retry_at == 160.0


@pytest.mark.parametrize("error", [NonRetryable("declined"),
                                   NotSerializable("result of step 's'", "socket"),
                                   KeyError("listed as non-retryable")])
def test_non_retryable_errors_fail_at_the_first_attempt(error: BaseException) -> None:
    policy = RetryPolicy(non_retryable=(KeyError,))
    assert decide(error, 1, policy=policy).failed_for_good


def test_max_duration_counts_from_the_first_attempt() -> None:
    """A retry that would start past first_attempt_at + max_duration is not made."""
    policy = RetryPolicy(initial_interval=5.0, backoff=1.0, max_attempts=None,
                         max_duration=30.0)
    assert decide(RuntimeError("x"), 3, policy=policy, first=100.0, now=120.0).retry_at == 125.0
    assert decide(RuntimeError("x"), 4, policy=policy, first=100.0, now=126.0).failed_for_good


def test_postpone_gives_the_attempt_back_whatever_the_policy() -> None:
    """Postpone is not a failure: the count goes back and the delay is the error's own,
    even on what would be the last attempt."""
    outcome = decide(Postpone(7.5, "circuit open"), 4)
    assert outcome == AttemptOutcome(attempts=3, retry_at=107.5, postponed=True)


def test_retry_after_pushes_a_retry_later_but_never_earlier_or_into_existence() -> None:
    assert decide(Throttled(30.0), 1).retry_at == 130.0  # later than the policy's 1 s
    assert decide(Throttled(0.5), 2).retry_at == 102.0  # the policy's 2 s wins
    assert decide(Throttled(30.0), 4).failed_for_good  # no retry is left to push
    assert decide(Throttled(True), 1).retry_at == 101.0  # a bool is not a number of seconds


def test_retry_after_past_max_duration_fails_the_step_for_good_now() -> None:
    """The policy bounds how long the step may take: a provider asking for a retry
    after that bound does not stretch it (before, the step slept an hour and retried)."""
    policy = RetryPolicy(initial_interval=1.0, max_attempts=None, max_duration=300.0,
                         max_retry_after=math.inf)
    assert decide(Throttled(120.0), 1, policy=policy).retry_at == 220.0  # within: waits
    assert decide(Throttled(3_600.0), 1, policy=policy).failed_for_good
    # Under the default ceiling the hour is cut to 120 s first, which the bound allows.
    capped = RetryPolicy(initial_interval=1.0, max_attempts=None, max_duration=300.0)
    assert decide(Throttled(3_600.0), 1, policy=capped).retry_at == 220.0
    tight = RetryPolicy(initial_interval=1.0, max_attempts=None, max_duration=100.0)
    assert decide(Throttled(3_600.0), 1, policy=tight).failed_for_good


def test_retry_after_is_honoured_up_to_a_ceiling() -> None:
    """A provider's "retry after a day" with no max_duration set parked the step for a
    day (retry_at was now + 86400). It is honoured up to max_retry_after: 120 s left
    out (the OpenAI SDK's ceiling), or max_interval if that is longer."""
    assert POLICY.max_retry_after == 120.0
    assert decide(Throttled(86_400.0), 1).retry_at == 100.0 + 120.0
    assert decide(Throttled(1e9), 1).retry_at == 100.0 + 120.0
    assert decide(Throttled(90.0), 1).retry_at == 100.0 + 90.0  # within: as asked
    slow = RetryPolicy(initial_interval=1.0, max_interval=600.0)
    assert slow.max_retry_after == 600.0
    assert decide(Throttled(86_400.0), 1, policy=slow).retry_at == 100.0 + 600.0
    own = RetryPolicy(max_retry_after=10.0)
    assert decide(Throttled(86_400.0), 1, policy=own).retry_at == 100.0 + 10.0
    # The ceiling only cuts the push: the policy's own backoff still applies.
    long_backoff = RetryPolicy(initial_interval=30.0, max_retry_after=5.0)
    assert decide(Throttled(86_400.0), 1, policy=long_backoff).retry_at == 130.0
    ignore = RetryPolicy(max_retry_after=0.0)
    assert decide(Throttled(86_400.0), 1, policy=ignore).retry_at == 101.0
    anything = RetryPolicy(max_retry_after=math.inf)
    assert decide(Throttled(86_400.0), 1, policy=anything).retry_at == 100.0 + 86_400.0


@pytest.mark.parametrize("value", [float("nan"), -1.0])
def test_a_max_retry_after_that_is_not_a_wait_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="max_retry_after"):
        RetryPolicy(max_retry_after=value)


def test_max_interval_left_out_is_sixty_seconds_or_the_initial_interval() -> None:
    assert RetryPolicy().max_interval == 60.0
    assert RetryPolicy().delay(10) == 60.0
    # A first interval longer than the default cap is kept, not cut to 60 s.
    slow = RetryPolicy(initial_interval=300, backoff=1.0)
    assert slow.max_interval == 300
    assert slow.delay(1) == 300 and slow.delay(5) == 300


def test_a_max_interval_below_the_initial_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"max_interval \(5 s\) is below initial_interval"):
        RetryPolicy(initial_interval=10, max_interval=5)
    assert RetryPolicy(initial_interval=5, max_interval=5).delay(3) == 5


@pytest.mark.parametrize("kwargs", [
    {"initial_interval": float("nan")},
    {"initial_interval": float("inf")},
    {"max_interval": float("nan")},
    {"max_interval": float("inf")},
    {"backoff": float("nan")},
    {"backoff": float("inf")},
    {"max_duration": float("nan")},
])
def test_a_retry_policy_with_non_finite_numbers_is_refused(kwargs: dict[str, float]) -> None:
    # NaN passed every check, and the step's first failure then failed the run with
    # "ValueError: Invalid value NaN" (its next attempt's time could not be journaled).
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_non_retryable_takes_one_exception_type_or_any_iterable_of_them() -> None:
    """``non_retryable=ValueError`` (no tuple) was accepted, and the step's first failure
    then failed the run with ``TypeError: Value after * must be an iterable``; a list
    made the policy unhashable. Both are taken now, as a tuple."""
    for given in (ValueError, [ValueError, KeyError], {ValueError}):
        policy = RetryPolicy(non_retryable=given)  # type: ignore[arg-type]
        assert isinstance(policy.non_retryable, tuple) and ValueError in policy.non_retryable
        hash(policy)
        assert decide(ValueError("bad"), 1, policy=policy) == AttemptOutcome(1, None)
        assert decide(RuntimeError("x"), 1, policy=policy).retry_at is not None


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"non_retryable": (1,)}, "non_retryable"),
    ({"non_retryable": "ValueError"}, "non_retryable"),
    ({"non_retryable": (ValueError, int)}, "non_retryable"),
    ({"max_attempts": 1.5}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"max_duration": -1}, "max_duration"),
    ({"max_duration": "60"}, "max_duration"),
    ({"initial_interval": "1"}, "initial_interval"),
    ({"backoff": None}, "backoff"),
])
def test_a_retry_policy_with_values_of_the_wrong_kind_is_refused(
        kwargs: dict[str, object], says: str) -> None:
    """These were accepted (or raised a bare ``TypeError``), and the step's first
    failure failed the run with an internal ``TypeError`` (``isinstance() arg 2 must be
    a type``); now the policy is refused where it is written, naming the field."""
    with pytest.raises(ConfigError, match=says):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
