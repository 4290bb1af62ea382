"""Tether's public exceptions.

```
TetherError
├── ConfigError
├── RunNotFound · WorkflowNotFound
├── RunFailed                  (the awaited run ended failed / cancelled / blocked)
├── StepError                  (a step's recorded failure, re-raised in the workflow)
├── NonDeterminismError        (run_id, position, recorded, requested)
├── PayloadError
│   ├── NotSerializable
│   └── PayloadTooLarge
├── StoreError
│   ├── StoreUnavailable
│   └── LeaseLost
├── SignalError                (signal to an unknown or finished run)
├── SignalTimeout
├── NonRetryable               (raise from a step: fail now, do not retry)
├── StepTimeout                (one attempt of a step ran past its timeout)
└── Cancelled                  (delivered to a cancelled run at its next operation)
```

Every error a user can see carries its data as attributes; its ``str()`` says what
happened. Errors are journaled as JSON (type, message, attributes), never pickled.
"""

from __future__ import annotations

from typing import Any


class TetherError(Exception):
    """Base class of every error Tether raises."""


class ConfigError(TetherError):
    """Tether was set up wrongly (bad URL, bad option, missing decoration)."""


class OutsideRun(TetherError):
    """A function that belongs to a run's code (``tether.wait_for_signal``,
    ``tether.step_key``...) was called where no run executes."""

    def __init__(self, what: str, where: str = "a workflow") -> None:
        super().__init__(f"{what} can only be used inside {where}")
        self.what = what
        self.where = where


class RunNotFound(TetherError):
    """No run has this id in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class WorkflowNotFound(TetherError):
    """No workflow of this name is registered on the app."""

    def __init__(self, name: str, known: list[str] | None = None, *,
                 hint: str | None = None) -> None:
        if known:
            hint = f"registered: {', '.join(sorted(known))}"
        super().__init__(f"no workflow named {name!r}" + (f" ({hint})" if hint else ""))
        self.name = name


class RunFailed(TetherError):
    """The run whose result was awaited did not complete."""

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        detail = ""
        if error:
            detail = f": {error.get('type', 'Error')}: {error.get('message', '')}"
        super().__init__(f"run {run_id!r} ended {status}{detail}")
        self.run_id = run_id
        self.status = status
        self.error = error


class StepError(TetherError):
    """A step failed for good; raised in the workflow, live and on replay alike.

    When the original exception class is importable, the raised object is also an
    instance of that class, so ``except ValueError`` works in workflow code.
    """

    def __init__(self, message: str, *, step: str = "", position: int = -1,
                 error_type: str = "Exception", attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.position = position
        self.error_type = error_type
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


class NonDeterminismError(TetherError):
    """Replay asked for a different operation than the journal holds at a position.

    The run is parked as ``blocked``; it waits for a code fix or an operator.
    """

    def __init__(self, run_id: str, position: int, recorded: tuple[str, str] | None,
                 requested: tuple[str, str] | None) -> None:
        def fmt(op: tuple[str, str] | None) -> str:
            return "nothing" if op is None else f"{op[0]} {op[1]!r}"

        super().__init__(
            f"non-determinism in run {run_id!r} at position {position}: the journal "
            f"recorded {fmt(recorded)}, the workflow code now asks for {fmt(requested)}"
        )
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.requested = requested


class PayloadError(TetherError):
    """A value could not be stored as a payload."""


class NotSerializable(PayloadError):
    """A value is not JSON-serializable (Tether never pickles)."""

    def __init__(self, what: str, value_type: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{what}: value of type {value_type} is not JSON-serializable{extra}; "
            "use JSON types, dataclasses or pydantic models"
        )
        self.what = what
        self.value_type = value_type


class PayloadTooLarge(PayloadError):
    """An encoded payload exceeds the configured size limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what}: payload of {size} bytes exceeds the limit of {limit} bytes")
        self.what = what
        self.size = size
        self.limit = limit


class StoreError(TetherError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached; retrying later may succeed."""


class LeaseLost(StoreError):
    """This worker's lease on a run was taken over; the write was rejected (fencing)."""

    def __init__(self, run_id: str, fencing_token: int) -> None:
        super().__init__(
            f"lease on run {run_id!r} lost (fencing token {fencing_token} is stale); "
            "the write was rejected"
        )
        self.run_id = run_id
        self.fencing_token = fencing_token


class SignalError(TetherError):
    """A signal could not be delivered (unknown or finished run)."""


class SignalTimeout(TetherError):
    """``wait_for_signal`` timed out before a signal arrived."""

    def __init__(self, name: str, timeout: float | None = None) -> None:
        super().__init__(f"no signal {name!r} arrived within {timeout} s")
        self.name = name
        self.timeout = timeout


class NonRetryable(TetherError):
    """Raise from a step to fail it at once, whatever its retry policy says."""

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class Postpone(TetherError):
    """Raise from a step to run it again in ``delay`` seconds without counting a failed
    attempt (an open circuit breaker, a rate limit not granted yet).

    The step's journal entry stays pending with its next-attempt time, and the run is
    released while it waits when the delay is longer than a worker's in-memory wait.
    """

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"postponed for {delay:.3f}s")
        self.delay = max(float(delay), 0.0)
        self.reason = reason


class Cancelled(TetherError):
    """The run was cancelled; raised at its next operation.

    A workflow may catch it to clean up (its later operations still run); the run is
    marked ``cancelled`` either way.
    """

    def __init__(self, run_id: str = "") -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class StepTimeout(TetherError, TimeoutError):
    """One attempt of a step ran longer than its ``timeout``; the attempt failed and is
    retried under the step's policy. (A plain ``def`` step's thread cannot be stopped:
    it runs on in the background while the next attempt starts.)"""

    def __init__(self, step: str = "", timeout: float = 0.0) -> None:
        super().__init__(f"step {step!r} timed out after {timeout:g} s")
        self.step = step
        self.timeout = timeout
