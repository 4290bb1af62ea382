"""The durable model calls of this process in flight, while a test environment watches.

Only a test environment reads these (``TestEnv`` ends a wait on a model whose endpoint
accepted the request and never answers, or that nothing answers at, and says where a
call went), so a call lists itself only while one is open: a production call does no
such bookkeeping. ``watchers`` is a counter, not a flag: several environments may be
open at once.

Every kind of durable model call lists itself: ``tether.ai.LLM``'s (OpenAI-compatible
or Anthropic, ``tether.ai._llm.OutstandingCall``) and those of the integrations, whose
model requests go through ``tether.ai.MeteredModel`` with the framework's own client
(``MeteredCall``; the integration says when its answer began, ``began``, and lists its
free requests too, a token count, ``MeteredModel.watched``). Their step names share
nothing (``llm:...``, ``openai_agents:model:...``, ``pydantic_ai:...__model.request``), so
the environment knows a model call by its run and position here, not by its name.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Iterator
from typing import Any, Protocol

#: The open test environments that watch the calls in flight.
watchers = 0


class Call(Protocol):
    """What the environment reads of a call in flight."""

    @property
    def run_id(self) -> str: ...

    @property
    def step(self) -> str:
        """The step's name (its position in the run: ``position``)."""

    @property
    def position(self) -> int: ...

    @property
    def base_url(self) -> str: ...

    @property
    def since(self) -> float:
        """When the attempt's request began (``time.monotonic()``)."""

    @property
    def timeout(self) -> float | None:
        """How long its requests wait for an answer (seconds; None: for ever, or not
        known to Tether: ``timeout_known``)."""

    @property
    def timeout_known(self) -> bool: ...

    @property
    def answered(self) -> bool:
        """Whether an answer began."""


#: The attempts of model calls in flight in this process, by ``id()``.
calls: dict[int, Call] = {}


@dataclasses.dataclass(frozen=True)
class Attempted:
    """The last attempt of a model call that ended (``attempts``): where it went and
    whether it reached nothing there (a refused connection, no such host)."""

    step: str
    base_url: str
    unreached: bool


#: The last ended attempt of each model call of this process's runs, by (run id,
#: position), while an environment watches; forgotten when the last one closes.
attempts: dict[tuple[str, int], Attempted] = {}


@dataclasses.dataclass(eq=False)
class MeteredCall:
    """An attempt of a model call an integration makes with its framework's client
    (``tether.ai.MeteredModel``): its timeout is the client's, which Tether does not
    know, and its answer began when the integration says so (``began``: a streamed
    answer's first event), which a slow stream does long before it ends."""

    run_id: str
    step: str
    position: int
    base_url: str
    since: float
    timeout: float | None = None
    timeout_known: bool = False
    answered: bool = False


#: The integration's attempt this task (and those it starts) makes, while it is listed:
#: what ``began`` marks.
_making: contextvars.ContextVar[MeteredCall | None] = contextvars.ContextVar(
    "tether_inflight_metered", default=None)


@contextlib.contextmanager
def listed(call: Call) -> Iterator[None]:
    """List ``call`` among the calls in flight while its request is made; at its end,
    keep where it went (``attempts``). Nothing when no environment watches."""
    if not watchers:
        yield
        return
    calls[id(call)] = call
    making = _making.set(call) if isinstance(call, MeteredCall) else None
    unreached = False
    try:
        yield
    except BaseException as exc:
        unreached = unreached_by(exc)
        raise
    finally:
        if making is not None:
            _making.reset(making)
        del calls[id(call)]
        if watchers:
            attempts[(call.run_id, call.position)] = Attempted(call.step, call.base_url,
                                                               unreached)


def metered(run_id: str, step: str, position: int, base_url: str) -> MeteredCall:
    """A ``MeteredCall`` that begins now."""
    return MeteredCall(run_id, step, position, base_url, time.monotonic())


def began() -> None:
    """The answer of the integration's attempt this task makes began (its first
    streamed event came): however slowly it goes on, the endpoint answers, and a test
    environment does not take it for one that says nothing. Nothing when none is
    listed (no environment watches, or outside an attempt)."""
    found = _making.get()
    if found is not None:
        found.answered = True


#: The exceptions of a request that reached nothing, by class name, as the clients'
#: transports raise them (``httpx``'s and ``httpx2``'s ``ConnectError``; the OS's), under
#: whatever the framework wraps them in (``openai.APIConnectionError``, pydantic-ai's
#: ``ModelAPIError``, ``tether.ai.RetryableProviderError``).
_UNREACHED = frozenset({"ConnectError", "ConnectionRefusedError", "gaierror"})


def unreached_by(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the request reached nothing."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if type(found).__name__ in _UNREACHED:
            return True
        found = found.__cause__ or found.__context__
    return False


def outstanding() -> list[Any]:
    """The attempts of model calls in flight now, oldest first."""
    return sorted(calls.values(), key=lambda call: call.since)


def unwatched() -> None:
    """The last environment closed: forget the ended attempts."""
    if not watchers:
        attempts.clear()
