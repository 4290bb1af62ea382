"""What an LLM operation cost, and what replay saved.

The journaled result of a durable LLM call is a *call record*::

    {"reply": ChatReply.to_dict(), "cost_usd": 0.00042, "priced": true}

The cost is computed once, when the provider answered, from the ``PriceTable`` of the
``LLM`` that called it, and kept in the journal. Replay therefore reports as saved
exactly what was paid, even if prices changed since.

Run metrics (``App.get_run(run_id).metrics``, ``tether show``):

============================ ==========================================================
``llm.calls``                provider calls that answered (a fresh call, from the step)
``tokens.input`` / ``.output`` tokens those calls consumed
``cost.usd``                 their cost (0 for a model the price table does not know)
``llm.unpriced_calls``       calls whose model had no price (their cost is unknown)
``llm.unreported_calls``     calls whose provider answered without their usage (their
                             tokens, and so their cost, are unknown: counted 0)
``saved.calls``              calls answered from the journal instead (replay)
``saved.tokens.input`` / ... tokens not paid again thanks to replay
``saved.cost.usd``           cost not paid again
``tokens.estimated``         of ``tokens.input`` / ``.output``, how many are estimates:
                             attempts cut midway before the provider told their usage
============================ ==========================================================

A streamed attempt that fails after the provider accepted it (cut, an error event)
was billed its prompt and the output delivered so far, though the provider may not
have told them (OpenAI tells a stream's usage in its last chunk only; Anthropic its
input first, its output at the end): ``cut_usage`` counts what was told and estimates
the rest, ``CHARS_PER_TOKEN`` characters a token. So does a plain answer cut in its
body (billed whole: its prompt is estimated, its output unknown), and a request an
interrupted turn cancelled after its answer began (``watching`` follows the requests of
an attempt, ``cancelled_usage`` says on the ``TurnInterrupted`` what they were billed).
An attempt with no answer begun (a refused connection, an error status) was not billed
and counts nothing.

What a call's failed attempts were paid (``PaidAttempts``) is journaled with its
record (``failed``) and, until then, carried from one attempt to the next on the error
each failed attempt journals (its attribute ``failed_attempts``, in the step's pending
entry and attempt history): the next attempt reads it back
(``tether.ext.StepInfo.previous_error``) whichever execution of the run made the
earlier ones (a release during a long backoff, a crash between attempts), so the record
and the budget count them all, and the metrics, written when each attempt failed, are
not added again. A call that fails for good carries them on its journaled error, which
the workflow's tally reads (``RunSpending.settle``).

Spent figures are added from the step body, so they count what was really paid: a
crash after the provider answered and before the journal commit pays twice, and the
lost answer is usually not counted (its cost is written with its journal entry, in one
transaction, unless that write went out on its own first). Saved figures are added
by the engine's ``on_replay`` hook, once per journal position over the run's life.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tether import ext
from tether.ai._errors import ProviderError
from tether.ai._pricing import PriceTable
from tether.ai._types import ChatReply, Usage

__all__ = ["CHARS_PER_TOKEN", "FAILED_ATTEMPTS", "CallRecord", "PaidAttempts", "StreamProgress",
           "cancelled_usage", "cut_usage", "failed_cost", "failed_metrics", "paid_by",
           "saved_metrics", "spent_metrics", "watching"]

#: The attribute of an LLM step's failure (journaled with it, ``attrs``) that carries
#: what the call's failed attempts were paid so far, this one included: ``{"tokens",
#: "usd", "estimated"}``, as the record's ``failed``.
FAILED_ATTEMPTS = "failed_attempts"

#: Characters per token in the estimates of what an attempt cut midway used: of the
#: request's canonical JSON (its messages, tools and output schema, as the budget's
#: estimate of a prompt counts them) and of the answer the stream delivered. The usual
#: rule of thumb for English text and JSON; no tokenizer is at hand.
CHARS_PER_TOKEN = 4

_T = TypeVar("_T")

log = logging.getLogger("tether.ai")
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The journaled outcome of one durable LLM call."""

    reply: ChatReply
    cost_usd: float
    priced: bool

    @classmethod
    def priced_by(cls, prices: PriceTable, requested_model: str, reply: ChatReply) -> CallRecord:
        """The record of ``reply``, priced by the model that answered (often a dated
        name), else by the model requested."""
        price = prices.price(reply.model) if reply.model else prices.price(requested_model)
        if not price.known:
            price = prices.price(requested_model)
        if not price.known and requested_model not in _warned:
            _warned.add(requested_model)
            log.warning("no price for model %r (answered as %r): tokens are counted, cost "
                        "is 0; pass LLM(prices={...}) to price it", requested_model,
                        reply.model)
        return cls(reply, price.cost(reply.usage), price.known)

    def to_dict(self) -> dict[str, Any]:
        return {"reply": self.reply.to_dict(), "cost_usd": self.cost_usd,
                "priced": self.priced}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallRecord:
        return cls(ChatReply.from_dict(d["reply"]), float(d.get("cost_usd", 0.0)),
                   bool(d.get("priced", True)))


def spent_metrics(record: CallRecord) -> dict[str, float]:
    """Metrics a fresh call adds to its run."""
    usage = record.reply.usage
    deltas = {"llm.calls": 1.0, "tokens.input": float(usage.input_tokens),
              "tokens.output": float(usage.output_tokens), "cost.usd": record.cost_usd}
    if not record.priced:
        deltas["llm.unpriced_calls"] = 1.0
    if not record.reply.usage_reported:
        deltas["llm.unreported_calls"] = 1.0
    return deltas


def saved_metrics(value: Any) -> dict[str, float] | None:
    """Metrics a call answered from the journal adds (the engine's ``on_replay``)."""
    if not isinstance(value, Mapping) or "reply" not in value:
        return None
    record = CallRecord.from_dict(value)
    usage = record.reply.usage
    return {"saved.calls": 1.0, "saved.tokens.input": float(usage.input_tokens),
            "saved.tokens.output": float(usage.output_tokens),
            "saved.cost.usd": record.cost_usd}


def cut_usage(told: Usage | None, delivered: int | None,
              estimate_input: int) -> tuple[Usage, int] | None:
    """What a failed attempt was paid, and how many of those tokens are estimated;
    ``None`` when it was paid nothing.

    ``told`` is the usage the provider told before the failure (``ProviderError.usage``),
    ``delivered`` the characters of answer a stream it had accepted delivered
    (``ProviderError.delivered``; ``None``: no answer began, so nothing was billed), and
    ``estimate_input`` the request's estimated prompt tokens. What was told counts as
    told; an input not told is ``estimate_input``, and an output not told, or told
    lower than what was delivered (Anthropic tells 1 at the start), is the delivered
    characters over ``CHARS_PER_TOKEN``, rounded up.
    """
    told_in = told.input_tokens if told is not None else 0
    told_out = told.output_tokens if told is not None else 0
    if delivered is None:
        if told is None or told.total_tokens <= 0:
            return None
        return told, 0
    inp = told_in if told_in > 0 else max(0, estimate_input)
    out = max(told_out, -(-max(0, delivered) // CHARS_PER_TOKEN))
    used = Usage(inp, out)
    if told is not None and told_in > 0:  # (the prompt as told: its cached part too)
        used = Usage(inp, out, told.cache_read_tokens, told.cache_write_tokens,
                     told.cache_write_1h_tokens)
    if used.total_tokens <= 0:
        return None
    return used, (inp - told_in) + (out - told_out)


class StreamProgress:
    """How far a request got, for what a failure after it began was billed
    (``ProviderError.delivered``): whether the provider accepted it (a 2xx answer
    began), the characters of answer a stream delivered (text, tool-call arguments,
    reasoning; a plain answer's body counts none: its bytes are mostly not answer) and
    the usage the provider told so far (``told``; Anthropic's ``message_start``)."""

    __slots__ = ("chars", "opened", "told")

    def __init__(self) -> None:
        self.opened = False
        self.chars = 0
        self.told: Usage | None = None
        watched = _WATCHED.get()
        if watched is not None:  # (an attempt that may be cancelled midway: ``watching``)
            watched.append(self)

    def mark(self, exc: ProviderError) -> None:
        """Say on ``exc`` what the request delivered before it, if its answer had begun."""
        if self.opened:
            exc.delivered = self.chars


#: The progress of the requests made in this context (and the tasks it starts), when an
#: attempt watches them (``watching``).
_WATCHED: contextvars.ContextVar[list[StreamProgress] | None] = contextvars.ContextVar(
    "tether_llm_requests", default=None)


@contextlib.contextmanager
def watching() -> Iterator[list[StreamProgress]]:
    """Collect the progress of the requests made in the block, in order, even of those
    cancelled midway (an interrupted turn, ``cancelled_usage``)."""
    watched: list[StreamProgress] = []
    token = _WATCHED.set(watched)
    try:
        yield watched
    finally:
        _WATCHED.reset(token)


def cancelled_usage(watched: Sequence[StreamProgress], exc: BaseException) -> None:
    """Say on ``exc`` (the error that replaces a request cancelled midway) what the
    request was billed, as a cut one says it (``ProviderError.usage``, ``delivered``):
    the usage told so far and the characters delivered, once its answer had begun.
    Nothing when none had: an answer not begun is not billed."""
    begun = [p for p in watched if p.opened]
    if not begun:
        return
    progress = begun[-1]  # (one request at a time: a plain retry follows a refused one)
    try:
        exc.delivered = progress.chars  # type: ignore[attr-defined]
        if progress.told is not None and progress.told.total_tokens > 0:
            exc.usage = progress.told  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # (an exception that takes no attribute)
        pass


def failed_metrics(used: Usage, usd: float, estimated: int) -> dict[str, float]:
    """Metrics a failed attempt that was paid (``cut_usage``) adds to its run: its tokens
    and cost (not ``llm.calls``, which counts answers), and how many tokens are
    estimated."""
    deltas = {"tokens.input": float(used.input_tokens),
              "tokens.output": float(used.output_tokens), "cost.usd": usd}
    if estimated:
        deltas["tokens.estimated"] = float(estimated)
    return deltas


def paid_by(exc: BaseException, price: Any,
            estimate_input: int) -> tuple[Usage, float, int] | None:
    """What a failed attempt was paid (tokens, priced by ``price``, and how many of
    them are estimated), when it was paid: its provider told its usage before it failed
    (``ProviderError.usage``), or a stream it had accepted was cut
    (``ProviderError.delivered``: ``cut_usage`` estimates what was not told, the prompt
    from ``estimate_input``); ``None`` otherwise."""
    usage = getattr(exc, "usage", None)
    delivered = getattr(exc, "delivered", None)
    cut = cut_usage(usage if isinstance(usage, Usage) else None,
                    delivered if isinstance(delivered, int)
                    and not isinstance(delivered, bool) else None, estimate_input)
    if cut is None:
        return None
    used, estimated = cut
    return used, price.cost(used), estimated


def failed_cost(record: Mapping[str, Any]) -> tuple[int, float]:
    """What a journaled call record says its failed attempts were paid (its
    ``failed``: tokens, USD), 0 for a record without it (an older Tether's, or a call
    whose first attempt was answered: most)."""
    failed = record.get("failed")
    if failed is None:
        return 0, 0.0
    paid = PaidAttempts.read(failed)
    return paid.tokens, paid.usd


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class PaidAttempts:
    """What one call's failed attempts were paid: tokens, USD, and how many of the
    tokens are estimated (``cut_usage``)."""

    tokens: int = 0
    usd: float = 0.0
    estimated: int = 0

    @classmethod
    def read(cls, value: Any) -> PaidAttempts:
        """From a record's ``failed`` or an error's ``failed_attempts``; nothing from
        anything else (a record or error of an older Tether has neither)."""
        if not isinstance(value, Mapping):
            return cls()
        usd = value.get("usd")
        return cls(_count(value.get("tokens")),
                   float(usd) if isinstance(usd, (int, float)) and not isinstance(usd, bool)
                   and usd > 0 and usd != float("inf") else 0.0,
                   _count(value.get("estimated")))

    @classmethod
    def before(cls) -> PaidAttempts:
        """In an LLM step's body: what the call's earlier attempts were paid, carried
        on the error its previous attempt journaled, whichever execution made it."""
        step = ext.current_step()
        error = step.previous_error if step is not None else None
        attrs = error.get("attrs") if isinstance(error, Mapping) else None
        return cls.read(attrs.get(FAILED_ATTEMPTS) if isinstance(attrs, Mapping) else None)

    @classmethod
    def of_error(cls, exc: BaseException) -> PaidAttempts:
        """What a call that failed for good (``exc``, as the workflow receives it, live
        or replayed) says its failed attempts were paid."""
        return cls.read(getattr(exc, FAILED_ATTEMPTS, None))

    def __bool__(self) -> bool:
        return bool(self.tokens or self.usd)

    def add(self, used: Usage, usd: float, estimated: int) -> None:
        """One more paid attempt (``paid_by``'s figures)."""
        self.tokens += used.total_tokens
        self.usd += usd
        self.estimated += estimated

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": self.tokens, "usd": self.usd}
        if self.estimated:  # (of ``tokens``: a reader of the record tells the estimate)
            out["estimated"] = self.estimated
        return out

    def mark(self, exc: BaseException) -> None:
        """Carry the figures on the error a failed attempt raises (journaled with it:
        the next attempt reads them back, ``before``); nothing when nothing was paid."""
        if self:
            try:
                setattr(exc, FAILED_ATTEMPTS, self.to_dict())
            except (AttributeError, TypeError):  # (an exception that takes no attribute)
                pass

    async def attempt(self, attempt: Awaitable[_T], *, spending: Any, claim: Any,
                      price: Any, estimate_input: int) -> _T:
        """Await one attempt of a metered call (``LLM``, ``MeteredModel``) and account for
        its failure: a paid one (``paid_by``: a ``ProviderError`` that says so, or the
        ``TurnInterrupted`` of a request an interrupt cut after its answer began; the
        prompt estimated at ``estimate_input``) is added here and to the budget's ledger
        (``spending.failed``), an unpaid one lets the calls waiting on ``claim`` go
        (``spending.ended``); either way the error carries the figures (``mark``). The
        caller settles a success (``spending.answered``)."""
        try:
            return await attempt
        except Exception as exc:  # (a provider's error, or an interrupted turn's)
            cut = paid_by(exc, price, estimate_input)
            if cut is not None:
                self.add(*cut)
                spending.failed(claim, cut[0].total_tokens, cut[1])
            else:  # nothing to count: let the calls waiting go
                spending.ended(claim)
            self.mark(exc)
            raise
        except BaseException as exc:  # (cancelled: nothing known to count)
            spending.ended(claim)  # let the calls waiting go
            self.mark(exc)
            raise

    def record(self, value: dict[str, Any]) -> dict[str, Any]:
        """The call record ``value`` with the figures (``failed``), when any."""
        if self:
            value["failed"] = self.to_dict()
        return value
