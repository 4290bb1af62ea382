"""Tether's public exceptions, and the rules they follow.

```
Exception
├── TetherError                    base of every error Tether raises
│   ├── ConfigError                bad setup or a bad argument (also a ValueError)
│   │   ├── InvalidName                (what, value) an id or name that is empty, holds
│   │   │                              control characters or is too long
│   │   ├── WorkflowArgumentError      (workflow, problem) a start's arguments do not fit
│   │   │                              the workflow's signature (also a TypeError)
│   │   └── ai.ProviderConfigError     no API key, bad base URL (also NonRetryable)
│   ├── OutsideRun                 a run-only function called where no run executes
│   ├── RunNotFound                (run_id)
│   ├── WorkflowNotFound           (name)
│   ├── RunStateError              (run_id, status, request) the state forbids it
│   │   └── RunErased                  (run_id, request) its payloads were erased
│   ├── RunFailed                  (run_id, status, error) an awaited run did not complete
│   ├── StepError                  (step, position, error_type, attempts) a step failed for good
│   ├── NonDeterminismError        (run_id, position, recorded, requested) -> run blocked
│   ├── PayloadError
│   │   ├── NotSerializable        (what, value_type)
│   │   ├── PayloadTooLarge        (what, size, limit)
│   │   ├── PayloadBindingError    a payload moved to another run or slot -> run blocked
│   │   └── encryption.PayloadDecryptError  unknown key, wrong key, tampering
│   │       ├── encryption.PayloadMisplacedError  (also a PayloadBindingError)
│   │       └── encryption.PayloadNotEncryptedError  clear text, e.g. started without --app
│   ├── StoreError                 (sqlstate, outcome_unknown)
│   │   ├── StoreUnavailable       retrying later may succeed
│   │   │   └── StoreRefused       the server refused: no such database or role, a
│   │   │                          failed password (configuration, not an outage)
│   │   └── LeaseLost              (run_id, fencing_token) the write was fenced off
│   ├── SignalError                signal to a run that has ended
│   ├── SignalTimeout              (name, timeout) catchable in the workflow
│   ├── StepTimeout                (step, timeout) one attempt ran past the step's timeout
│   ├── Cancelled                  (run_id) delivered at the run's next operation
│   ├── worker.ExitInTask          SystemExit/KeyboardInterrupt/GeneratorExit raised in
│   │                              a task workflow code started (original: __cause__)
│   ├── Postpone                   (delay, reason) raise from a step: try again later,
│   │                              no attempt used
│   ├── NonRetryable               (data) raise from a step: fail now, whatever the policy
│   │   ├── ai.BudgetExceeded          (spent/budget usd and tokens, estimates)
│   │   ├── ai.InvalidToolCall         the model called an unknown tool or sent bad JSON
│   │   ├── ai.ToolArgumentError       a tool's arguments do not fit its schema
│   │   └── ai.FatalProviderError      (status) the provider refused: 400, 401, 403...
│   │       └── ai.ProviderBillingError    the account is out of credit (OpenAI's 429
│   │                                      insufficient_quota, Anthropic's 402)
│   ├── testing.HistoryError       a history file that cannot be read or is malformed
│   ├── testing.RunStuck           a TestEnv wait on a run that can never end (also a
│   │   │                          TimeoutError)
│   │   └── testing.RunSpinning        ... on a run that keeps failing a step, retried
│   │                                  (TestEnv(stuck_attempts=...))
│   ├── ai.ProviderError           (provider, status, message, code, request_id)
│   │   ├── ai.RetryableProviderError  (retry_after) 429, 5xx, timeouts, drops
│   │   └── ai.FatalProviderError      (also NonRetryable, above)
│   ├── ai.OutputValidationError   (output, attempts, errors, last_text)
│   ├── ai.MaxTurnsExceeded        (agent, max_turns, last_tools) out of turns
│   ├── ai.MaxTokensExceeded       (agent, max_tokens, output_tokens, tool_calls, text)
│   │                              an agent's reply was cut off at max_tokens
│   ├── ai.ModelRefused            (agent, text, tool_calls) the model refused
│   ├── ai.NoPendingApproval       (run_id, detail) nothing to approve
│   ├── ai.mcp.MCPUnavailable      (server, detail) retryable: unreachable, broken
│   └── mcp_tasks.TaskInputRequired  (task) Client.call_tool of a task that waits for input
└── ValueError
    └── ConfigError                (the same class: ``except ValueError`` catches it)
```

Names prefixed ``ai.`` live in ``tether.ai`` (``ai.mcp.`` in ``tether.ai.mcp``),
``encryption.`` in ``tether.encryption``, ``worker.`` in ``tether.worker``,
``testing.`` in ``tether.testing``. Each class names that public module as its
``__module__`` (``tether.ai.BudgetExceeded``, not the private module defining it), so
tracebacks, logs and the type a journal records say the name a user imports; a type
recorded under its private path before 2026-12-06 still decodes to the same class.

Rules:

- **Every error a user can see carries its data as attributes**, and its ``str()`` says
  what happened. Errors are journaled as JSON (type, message, attributes), never pickled.
- **Bad arguments** (a wrong type or value passed to any Tether function, decorator or
  constructor) raise ``ConfigError``, a subclass of both ``TetherError`` and
  ``ValueError``, with a one-line message naming the argument; nothing is written.
- **Whether to retry** is in the class: in a step, ``NonRetryable`` (and its subclasses)
  fails at once, ``Postpone`` waits without using an attempt, anything else follows
  the step's ``RetryPolicy``. ``StoreUnavailable`` is transient; every other
  ``StoreError`` is not.
- No code raises ``TetherError`` itself: every error has a specific class. Foreign
  errors (``apsw``, ``psycopg``, ``httpx``) are translated at the boundary, chained.
"""

from __future__ import annotations

import json
from typing import Any

#: Characters of an id or name that an error message echoes: a longer one is cut there.
SHOWN_MAX = 100


def shown(value: str, *, quoted: bool = True) -> str:
    """``value`` as an error message echoes it (``repr``, or as it is with ``quoted``
    false): a value over ``SHOWN_MAX`` characters is cut there, followed by ``…`` and
    its length. Messages about an id that names nothing (a 404's JSON and page, an MCP
    error, a CLI line) once echoed it whole: an 8,000-character id came back 8,000
    characters long, wherever the message went (logs, a terminal, a page)."""
    if len(value) <= SHOWN_MAX:
        return repr(value) if quoted else value
    head = value[:SHOWN_MAX]
    return f"{head!r}… ({len(value):,} characters)" if quoted else \
        f"{head}… ({len(value):,} characters)"



def shown_json(value: Any) -> str:
    """``value`` as an error message about a JSON request echoes it: in JSON's words
    (``"yes"``, ``true``, ``null``, not Python's ``'yes'``, ``True``, ``None``), cut as
    ``shown`` cuts."""
    return shown(json.dumps(value, ensure_ascii=False), quoted=False)

class TetherError(Exception):
    """Base class of every error Tether raises."""


class ConfigError(TetherError, ValueError):
    """Tether was set up wrongly, or a function got a bad argument (bad URL, bad option,
    missing decoration, a negative timeout). Also a ``ValueError``."""


class WorkflowArgumentError(ConfigError, TypeError):
    """A start's arguments do not fit its workflow's signature (a required argument
    missing, an unknown keyword, one argument too many), where the workflow's function
    is known (``App.start``, ``App.start_many``, ``tether.start_child``, ``tether.call``,
    a workflow tool, ``tether.continue_as_new``, ``App.fork``'s and ``App.schedule``'s
    ``input``):
    raised at the call, as calling the function would raise ``TypeError``, and nothing
    is started. Also a ``TypeError`` (and, as a bad argument, a ``ConfigError``)."""

    def __init__(self, workflow: str, problem: str) -> None:
        super().__init__(f"workflow {workflow!r} cannot take these arguments: {problem}; "
                         "nothing was started")
        self.workflow = workflow
        self.problem = problem


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
        super().__init__(f"no run with id {shown(run_id)}")
        self.run_id = run_id


class WorkflowNotFound(TetherError):
    """No workflow of this name is registered on the app."""

    def __init__(self, name: str, known: list[str] | None = None, *,
                 hint: str | None = None) -> None:
        if known:
            hint = f"registered: {', '.join(sorted(known))}"
        super().__init__(f"no workflow named {name!r}" + (f" ({hint})" if hint else ""))
        self.name = name


class RunStateError(TetherError):
    """The run's status does not allow the request (resume a run that is not blocked)."""

    def __init__(self, run_id: str, status: str, request: str) -> None:
        super().__init__(f"run {run_id!r} is {status}: cannot {request}")
        self.run_id = run_id
        self.status = status
        self.request = request


class RunErased(RunStateError):
    """The run's payloads were erased (``tether erase``): its input and recorded results
    are placeholders, so it cannot be retried, nor forked with them."""

    def __init__(self, run_id: str, request: str) -> None:
        TetherError.__init__(self, f"run {run_id!r} was erased (its input and recorded "
                             f"results are gone): cannot {request}")
        self.run_id = run_id
        self.status = "erased"
        self.request = request


class RunFailed(TetherError):
    """The run whose result was awaited did not complete (it ended failed or cancelled,
    or it is blocked: not ended, but it waits for an operator).

    Raised by ``RunHandle.result``, it carries a note (``__notes__``) saying where the
    run's code went wrong, when its recorded error says: ``at FILE, line N, in
    FUNCTION: CODE``, the innermost frame outside Tether (a step's line that raised,
    else the workflow's).
    """

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        detail = ""
        if error:
            detail = f": {error.get('type', 'Error')}: {error.get('message', '')}"
        verb = "is" if status == "blocked" else "ended"
        super().__init__(f"run {run_id!r} {verb} {status}{detail}")
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

    The run stops as ``blocked``; it waits for a code fix and an operator's resume.
    Raised by a run's own code (an integration that finds a journaled result no longer
    fits the code: a recorded model response calling a tool since renamed), it stops
    the run as ``blocked`` too; ``detail`` then says what does not fit, and a
    ``position`` below 0 names no position.
    """

    def __init__(self, run_id: str, position: int, recorded: tuple[str, str] | None,
                 requested: tuple[str, str] | None, *, detail: str | None = None,
                 code_at: str | None = None) -> None:
        def fmt(op: tuple[str, str] | None) -> str:
            return "nothing" if op is None else f"{op[0]} {op[1]!r}"

        where = f" at position {position}" if position >= 0 else ""
        super().__init__(
            f"non-determinism in run {run_id!r}{where}: " + (
                detail or f"the journal recorded {fmt(recorded)}, the workflow code now "
                          f"asks for {fmt(requested)}"))
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.requested = requested
        # The line of the workflow's code that asked for ``requested`` (``FILE, line N,
        # in FUNCTION``), for the operator: journaled as the error's ``code_at`` and
        # shown by ``tether show``, the run page and the worker's log, not in the
        # message, which remote callers may read (as they never get a traceback).
        self._code_at = code_at

    @property
    def code_at(self) -> str | None:
        """Where the workflow's code asked for the operation, if known."""
        return self._code_at


class PayloadError(TetherError):
    """A value could not be stored as a payload."""


class PayloadBindingError(PayloadError):
    """A stored payload decodes only in another place: it was written for another run,
    or as another of the run's payloads, and was moved or copied there by someone who
    can write to the store. A payload hook that binds payloads to their place raises it
    (``tether.encryption.AesGcm`` does); a worker that meets one blocks the run, since
    no worker could read the payload there, instead of handing it back."""


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
    """The store failed.

    Attributes:
        sqlstate: the PostgreSQL server's code for the error it answered (SQLSTATE,
            e.g. ``"42501"``: the role lacks a privilege), to test rather than the
            message's text (also of a StoreUnavailable for the server's FATAL that ended
            the session, e.g. ``"57P01"``: a terminated backend); None when the server
            gave none (SQLite, a connection lost without the server's word).
        outcome_unknown: the connection was lost after the operation's commit may have
            reached the server and before its answer came (a restart, a network cut at
            that moment): what it wrote may be stored all the same. Where the store
            could not read it back to tell, the message says how to check.
    """

    sqlstate: str | None = None
    outcome_unknown: bool = False

    def __init__(self, *args: object, sqlstate: str | None = None,
                 outcome_unknown: bool = False) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate
        self.outcome_unknown = outcome_unknown


class StoreUnavailable(StoreError):
    """The store cannot be reached; retrying later may succeed."""


class StoreRefused(StoreUnavailable):
    """The database server answered, and refused the connection for a reason of
    configuration: a database or role that does not exist, a failed password login.
    Not an outage to wait out; a worker still tries again (a database may be created
    after it starts), its log line saying so."""


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


class InvalidName(ConfigError):
    """A run id, workflow, queue or signal name that Tether refuses: empty, holding
    control characters (which would rewrite an operator's terminal when printed), or
    a new one longer than ``MAX_NAME`` (200) characters. The message shows the name as
    every message echoes an id (``shown``: its first ``SHOWN_MAX`` characters, then
    ``…`` and its length); it used a form of its own ("'www…'... is 8000 characters
    long")."""

    def __init__(self, what: str, value: str, reason: str) -> None:
        super().__init__(f"{what} {shown(value)} {reason}")
        self.what = what
        self.value = value


class SignalTimeout(TetherError):
    """``wait_for_signal`` timed out before a signal arrived."""

    def __init__(self, name: str, timeout: float | None = None) -> None:
        within = "in time" if timeout is None else f"within {max(float(timeout), 0.0)} s"
        super().__init__(f"no signal {name!r} arrived {within}")
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
