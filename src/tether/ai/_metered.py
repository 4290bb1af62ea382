"""``MeteredModel``: Tether's accounting, budget, breaker and rate limits around a model
request that another library's client makes.

Agent frameworks (pydantic-ai, the OpenAI Agents SDK) bring their own model clients and
message formats. Their integrations keep the framework's client for the request itself
and wrap each request in ``MeteredModel.call``, which makes it one durable operation
and gives it everything ``tether.ai.LLM`` gives its own calls:

1. budget admission (the run's ``set_budget`` or ``budget=``), a reservation shared with
   the run's other calls in flight (``_budget``): ``BudgetExceeded`` in the step,
   journaled; policy ``wait`` waits (released) for the ``budget`` signal and asks again;
2. the shared circuit breaker of the provider (``llm.breaker:<provider>:<base_url>``) and
   RPM/TPM limits (``llm.rate:...``): ``Postpone`` while closed to us;
3. the request (the framework's client); it raises ``RetryableProviderError`` /
   ``FatalProviderError`` for provider failures, which the breaker counts as ``LLM``'s do;
4. usage priced by the ``PriceTable`` and added to the run's metrics (``llm.calls``,
   ``tokens.*``, ``cost.usd``), so ``tether show`` reports the run as it reports an
   ``LLM``'s; replay adds ``saved.*`` instead, and the spending tally counts both.

The journaled result is ``{"result": <the request's JSON>, "usage": {...}, "model":
<model that answered>, "cost_usd": x, "priced": bool}``, with ``"failed": {"tokens",
"usd", "estimated"}`` when earlier attempts were paid; ``call`` returns ``result``. A
record journaled before the operation was metered (``call(unmetered=)`` tells it) is
returned as it is and counts nothing.

A provider that runs a request as a job (OpenAI's background mode: the request answers
at once ``queued``, polls of the job answer it later, their usage the job's so far)
is metered as one call: the request that queued the job is the call (admitted by the
budget, counted in ``llm.calls``), its answer without usage yet (``call(pending=)``
tells it) says nothing of it; each poll is a ``call(polls=True)``, not a new call
(no ``llm.calls``, no ``saved.calls``, not refused by the budget: the job runs and is
paid whether or not it is read), that counts the tokens and cost its answer tells
beyond what the earlier polls told (its ``usage`` reader subtracts them); its record
says ``"poll": true``.

A failed attempt counts what it was paid as ``LLM``'s do (``_accounting.paid_by``):
nothing for an error with no answer begun (a 429, a 5xx, a refused connection);
for a stream that failed after it began, what the provider told
(``ProviderError.usage``) and an estimate of the rest from ``estimate_tokens`` and the
characters delivered (``ProviderError.delivered``), which the integration sets on
the error it raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tether import RetryPolicy, _inflight, ext
from tether.ai._accounting import PaidAttempts, failed_cost, failed_metrics, paid_by
from tether.ai._breaker import CircuitBreaker, ProviderGate, RateLimits
from tether.ai._budget import (
    Budget,
    BudgetExceeded,
    Claim,
    output_bound,
    require_price,
    spending_of,
    wait_out_budget,
    with_limits,
)
from tether.ai._errors import FatalProviderError, RetryableProviderError
from tether.ai._pricing import PriceTable
from tether.ai._types import Usage
from tether.errors import ConfigError

__all__ = ["MeteredModel", "UsageOf"]

log = logging.getLogger("tether.ai")


#: From a request's JSON result: the tokens it used and the model that answered
#: (``None``: the model asked for).
UsageOf = Callable[[Any], tuple[Usage, str | None]]

_RETRY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=60.0, max_attempts=None)


class MeteredModel:
    """A provider endpoint whose requests, made by someone else's client, are metered,
    budgeted, rate-limited and guarded by Tether's shared circuit breaker.

    Args:
        provider: the provider's name (``"openai"``, ``"anthropic"``...), for errors,
            the breaker's key and metrics.
        base_url: the endpoint; with ``provider`` it keys the breaker (one per endpoint).
        api_key: the key, only to tell RPM/TPM buckets of different keys apart (a
            fingerprint is used, never the key). Default ``$<PROVIDER>_API_KEY``.
        prices: a ``PriceTable`` or ``{model: (usd_in, usd_out)}`` per 1M tokens.
        retry: the retry policy of provider failures (default: forever, backoff to 60 s).
        rpm: requests per minute for this key, shared by every worker.
        tpm: tokens per minute for this key, likewise.
        breaker: the circuit breaker's settings, or ``None`` for none.

    Raises:
        ConfigError: no provider, a bad limit.
    """

    def __init__(self, provider: str, *, base_url: str = "", api_key: str | None = None,
                 prices: PriceTable | Mapping[str, tuple[float, ...]] | None = None,
                 retry: RetryPolicy = _RETRY, rpm: float | None = None,
                 tpm: float | None = None,
                 breaker: CircuitBreaker | None = CircuitBreaker()) -> None:
        if not provider:
            raise ConfigError("MeteredModel needs a provider name")
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.retry = retry
        self.rate = RateLimits(rpm, tpm) if rpm is not None or tpm is not None else None
        self.breaker = breaker
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"MeteredModel({self.provider!r}, base_url={self.base_url!r})"

    @property
    def provider_key(self) -> str:
        """What the breaker is shared by: provider and endpoint (as ``LLM``'s)."""
        return f"{self.provider}:{self.base_url}"

    async def call(self, name: str, request: Callable[[], Awaitable[Any]], *, model: str,
                   usage: UsageOf, estimate_tokens: int = 0, max_output_tokens: int = 0,
                   args: Mapping[str, Any] | None = None,
                   budget: Budget | None = None,
                   unmetered: Callable[[Any], bool] | None = None,
                   pending: Callable[[Any], bool] | None = None,
                   polls: bool = False) -> Any:
        """Make ``request()`` one durable, metered operation named ``name``.

        Args:
            name: the journal's operation name (keep it stable across deploys).
            request: makes the request; returns its result as JSON (what is journaled
                and what replay returns). Provider failures should be raised as
                ``RetryableProviderError`` / ``FatalProviderError``.
            model: the model asked for (priced if the answer does not name one).
            usage: reads the tokens and the answering model from the result.
            estimate_tokens: the prompt's estimated size, for budgets and TPM limits.
            max_output_tokens: the answer's limit, for TPM limits and the budget's
                reservation (0: none given; the reservation counts
                ``DEFAULT_OUTPUT_BOUND``).
            args: journaled with the operation (small JSON: the call's identity).
            budget: this call's budget (default: the run's, see ``set_budget``).
            unmetered: tells a record of the operation journaled before it was metered
                (by a plain step of an earlier version: the request's own result, not
                a metered record): replay returns such a record as it is and counts
                nothing for it (no ``saved.*``, nothing against the budget).
            pending: tells an answer whose usage the provider tells later (a job it
                queued or still runs, OpenAI's background mode): no "answered without
                usage" warning for it; the poll that completes the job counts it.
            polls: this call polls a job that an earlier call of the run sent (that
                call was counted): it is no new call (no ``llm.calls``, no
                ``saved.calls`` on replay), is not refused by the budget (nor needs a
                price for it), takes no prompt estimate from a TPM limit (the
                breaker and RPM count it as a request), and counts the tokens
                and cost its answer tells (``usage`` should tell those beyond what the
                earlier polls of the job told: the job's usage is cumulative).

        Outside a workflow (or inside a step) it is ``await request()``.

        Raises:
            BudgetExceeded: over budget with policy ``fail``.
            FatalProviderError: the provider refused the request.
            StepError: what ``request`` raised last, once the retries are exhausted.
        """
        run = ext.current_run()
        if run is None or not ext.in_workflow():
            return await request()
        spending = spending_of(run)
        journaled = dict(args or {})
        journaled.setdefault("model", model)
        claim = Claim()
        metered = _metered_records(unmetered)

        def on_replay(value: Any) -> dict[str, float] | None:
            return saved_metrics(value) if metered(value) else None

        def on_recorded(value: Any) -> None:
            if metered(value):
                spending.recorded(claim, *_cost(value))

        try:
            while True:
                limit = spending.effective(budget)
                body = self._body(run, request, model=model, usage=usage, limit=limit,
                                  claim=claim, estimate=estimate_tokens,
                                  max_out=max_output_tokens, pending=pending, polls=polls)
                try:
                    record = await ext.step(name, body, journaled, retry=self.retry,
                                            on_replay=on_replay, on_recorded=on_recorded)
                except BudgetExceeded as exc:
                    paid = PaidAttempts.of_error(exc)
                    spending.settle(claim, paid.tokens, paid.usd)
                    await wait_out_budget(spending, limit, exc)
                    continue
                except Exception as exc:  # (failed for good: its paid attempts count)
                    paid = PaidAttempts.of_error(exc)
                    spending.settle(claim, paid.tokens, paid.usd)
                    raise
                if not metered(record):  # (journaled unmetered: as it was recorded)
                    return record
                spending.tally(claim, *_cost(record))
                return record.get("result")
        finally:
            spending.drop(claim)

    def _body(self, run: ext.Run, request: Callable[[], Awaitable[Any]], *, model: str,
              usage: UsageOf, limit: Budget | None, claim: Claim, estimate: int,
              max_out: int, pending: Callable[[Any], bool] | None = None,
              polls: bool = False
              ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        spending = spending_of(run)

        async def metered_call(journaled: dict[str, Any]) -> dict[str, Any]:
            # What the call's earlier attempts were paid, by this execution or one
            # before it (carried on the previous attempt's journaled error).
            paid = PaidAttempts.before()
            spending.carry(claim, paid.tokens, paid.usd)
            price = self.prices.price(model)
            bound = output_bound(max_out or None)  # (0: none given)
            try:
                if polls:  # (the job is sent and paid: its poll is not refused)
                    await spending.admit(None, claim, estimate_tokens=0, estimate_usd=0.0,
                                         bound_tokens=0, bound_usd=0.0)
                else:
                    require_price(spending, limit, model=model, priced=price.known)
                    await spending.admit(
                        limit, claim, estimate_tokens=estimate,
                        estimate_usd=estimate * price.input_per_million / 1_000_000,
                        bound_tokens=estimate + bound,
                        bound_usd=(estimate * price.input_per_million
                                   + bound * price.output_per_million) / 1_000_000)
            except BaseException as exc:  # (refused: journaled with what was paid)
                paid.mark(exc)
                raise
            record = await paid.attempt(
                self._attempt(run, request, model=model, usage=usage, estimate=estimate,
                              max_out=max_out, pending=pending, polls=polls),
                spending=spending, claim=claim, price=price, estimate_input=estimate)
            spending.answered(claim, *_cost(record))
            return paid.record(with_limits(record, spending, limit))

        return metered_call

    async def _attempt(self, run: ext.Run, request: Callable[[], Awaitable[Any]], *,
                       model: str, usage: UsageOf, estimate: int, max_out: int,
                       pending: Callable[[Any], bool] | None = None,
                       polls: bool = False) -> dict[str, Any]:
        """One admitted attempt: breaker, rate limits, the request, its price (a poll of
        a job: no new call, no prompt estimate taken from a TPM limit)."""
        gate = await ProviderGate.enter(
            run.shared, self.provider_key, breaker=self.breaker, rate=self.rate,
            api_key=lambda: self._api_key or os.environ.get(
                f"{self.provider.upper().replace('-', '_')}_API_KEY", ""),
            tokens=0 if polls else estimate + max_out, clock=run.clock)
        try:
            with self._listed(run):
                result = await request()
        except (RetryableProviderError, FatalProviderError) as exc:
            if exc.status in (401, 403) and exc.refused_by is None and self.base_url:
                exc.refused(self.base_url)  # (which endpoint refused the key, as LLM's)
            cut = paid_by(exc, self.prices.price(model), estimate)
            if cut is not None:  # (paid: told, or a stream begun)
                run.add_metrics(failed_metrics(*cut))
            if isinstance(exc, RetryableProviderError):
                await gate.failed(exc.status)
            else:
                await gate.answered()  # it answered: it is up
            raise
        except BaseException:  # cancelled, or no provider error: nothing learned
            await gate.abandoned()
            raise
        await gate.answered()
        used, answered = usage(result)
        if used.total_tokens <= 0 and (pending is None or not pending(result)):
            _warn_no_usage(self.provider_key)
        price = self.prices.price(answered) if answered else self.prices.price(model)
        if not price.known:
            price = self.prices.price(model)
        cost = price.cost(used)
        record: dict[str, Any] = {"result": result, "usage": used.to_dict(),
                                  "model": answered or model, "cost_usd": cost,
                                  "priced": price.known}
        deltas = {"tokens.input": float(used.input_tokens),
                  "tokens.output": float(used.output_tokens), "cost.usd": cost}
        if polls:  # (the call that sent the job counted it)
            record["poll"] = True
        else:
            deltas["llm.calls"] = 1.0
            if not price.known:
                deltas["llm.unpriced_calls"] = 1.0
        run.add_metrics(deltas)
        return record

    @staticmethod
    def began() -> None:
        """Say, from ``call``'s ``request`` (or inside ``watched``), that the request's
        answer began: its first streamed event came. A test environment
        (``tether.testing.TestEnv``) ends a wait on a run whose model call to an
        endpoint other than its scripted server's has had no answer for two seconds
        (``RunStuck``); a call whose answer began is answering, however slowly it
        streams, and is left to go on. Nothing outside a test environment."""
        _inflight.began()

    def watched(self) -> contextlib.AbstractContextManager[None]:
        """Around one attempt of a request to this endpoint that ``call`` does not make
        (a free one, not metered: a token count, the cancellation of a job): lists it
        among the model calls a test environment watches, as ``call`` lists its own,
        so that one whose endpoint reaches nothing or never answers ends the wait on
        its run with ``RunStuck`` rather than waiting out the client's own timeout.
        Nothing outside a workflow's step, or outside a test environment."""
        run = ext.current_run()
        if run is None or not _inflight.watchers:
            return contextlib.nullcontext()
        return self._listed(run)

    def _listed(self, run: ext.Run) -> contextlib.AbstractContextManager[None]:
        """List the attempt among the process's model calls in flight while a test
        environment watches them (``tether._inflight``); else nothing."""
        if not _inflight.watchers:
            return contextlib.nullcontext()
        step = ext.current_step()
        return _inflight.listed(_inflight.metered(
            run.run_id, step.name if step is not None else "",
            step.position if step is not None else -1, self.base_url))


#: The endpoints already warned of answers without usage, in this process.
_NO_USAGE: set[str] = set()


def _warn_no_usage(endpoint: str) -> None:
    """Warn once per endpoint that an answer told no usage: its call counts no tokens
    and no cost, and budgets do not see it (as ``tether.ai.LLM``'s clients warn).
    Until 2026-12-06 such calls were counted 0 without a word."""
    if endpoint in _NO_USAGE:
        return
    _NO_USAGE.add(endpoint)
    log.warning("%s answered without the usage of the call (no tokens told): its calls "
                "count no tokens and no cost, and budgets do not see them", endpoint)


def _metered_records(unmetered: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    """Whether a journaled record of a call is a metered one (not one that ``unmetered``
    tells was journaled before the call was metered)."""
    if unmetered is None:
        return lambda value: True
    return lambda value: not unmetered(value)


def saved_metrics(value: Any) -> dict[str, float] | None:
    """What a metered call answered from the journal saved (the engine's ``on_replay``)."""
    if not isinstance(value, Mapping) or "usage" not in value:
        return None
    used = Usage.from_dict(value.get("usage") or {})
    # (a job's poll is no call of its own: the call that sent the job is counted)
    return {"saved.calls": 0.0 if value.get("poll") else 1.0,
            "saved.tokens.input": float(used.input_tokens),
            "saved.tokens.output": float(used.output_tokens),
            "saved.cost.usd": float(value.get("cost_usd", 0.0))}


def _cost(record: Mapping[str, Any]) -> tuple[int, float]:
    """The tokens and USD of a journaled metered call: its answer's, and what its
    failed attempts were paid (``failed``)."""
    tokens, usd = failed_cost(record)
    return (Usage.from_dict(record.get("usage") or {}).total_tokens + tokens,
            float(record.get("cost_usd", 0.0)) + usd)
