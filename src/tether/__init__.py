"""Tether: durable execution for AI agents.

Every durable action of a run (a step, the clock, a random number) is journaled;
after a crash any worker replays the journal and the run continues where it stopped.
"""

from tether._app import App, RunHandle
from tether._context import now, patched, random, run_id, step_attempt, step_key, uuid
from tether._lifecycle import Retention, continue_as_new
from tether._operations import ChildHandle, call, set_status, sleep, start_child, wait_for_signal
from tether._retry import RateLimit, RetryPolicy
from tether._types import RunInfo, RunStatus
from tether.errors import (
    Cancelled,
    ConfigError,
    InvalidName,
    LeaseLost,
    NonDeterminismError,
    NonRetryable,
    NotSerializable,
    OutsideRun,
    PayloadBindingError,
    PayloadError,
    PayloadTooLarge,
    Postpone,
    RunErased,
    RunFailed,
    RunNotFound,
    RunStateError,
    SignalError,
    SignalTimeout,
    StepError,
    StepTimeout,
    StoreError,
    StoreUnavailable,
    TetherError,
    WorkflowNotFound,
)

__all__ = [
    "App",
    "Cancelled",
    "ChildHandle",
    "ConfigError",
    "InvalidName",
    "LeaseLost",
    "NonDeterminismError",
    "NonRetryable",
    "NotSerializable",
    "OutsideRun",
    "PayloadBindingError",
    "PayloadError",
    "PayloadTooLarge",
    "Postpone",
    "RateLimit",
    "Retention",
    "RetryPolicy",
    "RunErased",
    "RunFailed",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStateError",
    "RunStatus",
    "SignalError",
    "SignalTimeout",
    "StepError",
    "StepTimeout",
    "StoreError",
    "StoreUnavailable",
    "TetherError",
    "WorkflowNotFound",
    "call",
    "continue_as_new",
    "now",
    "patched",
    "random",
    "run_id",
    "set_status",
    "sleep",
    "start_child",
    "step_attempt",
    "step_key",
    "uuid",
    "wait_for_signal",
]
