"""``tether.ai.LLM``: a chat call inside a workflow is one durable operation, journaled
with references to content-addressed messages, replayed without a request, accounted,
retried by policy; refusals and bad configuration fail at once with a recorded error."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy
from tether.ai import (
    LLM,
    Budget,
    BudgetExceeded,
    ChatReply,
    FatalProviderError,
    OutputValidationError,
    ProviderConfigError,
    user_message,
)
from tether.ai._messages import load_conversation
from tether.errors import ConfigError, RunFailed
from tether.testing import Fault, Reply, ScriptedLLMServer

PROTOCOLS = ["openai", "anthropic"]
FAST = RetryPolicy(initial_interval=0.01, backoff=1.0, max_interval=0.01, max_attempts=None)


def make_llm(server: ScriptedLLMServer, protocol: str, **kwargs: Any) -> LLM:
    if protocol == "openai":
        return LLM("openai:gpt-4.1-mini", base_url=server.base_url, **kwargs)
    return LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url, **kwargs)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as srv:
        yield srv


def chats(server: ScriptedLLMServer) -> list[Any]:
    return [r for r in server.requests if r.protocol in ("openai", "anthropic")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_chat_is_one_operation_replayed_without_a_request(
        store_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """Two calls around a released wait: the second execution replays the first call
    from the journal (no request), the journal holds references, not the prompt, and
    the metrics count spent and saved tokens and cost."""
    server.set_script([Reply("Paris.", input_tokens=1000, output_tokens=10),
                       Reply("About 2.1 million.", input_tokens=2000, output_tokens=20)])
    app = App(store_url)
    llm = make_llm(server, protocol)
    system = {"role": "system", "content": "Be terse. " * 50}

    @app.workflow
    async def ask() -> list[str]:
        messages = [system, user_message("Capital of France?")]
        first = await llm.chat(messages)
        await tether.wait_for_signal("go")
        messages += [first.to_message(), user_message("Its population?")]
        second = await llm.chat(messages)
        return [first.text or "", second.text or ""]

    async with app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(ask, run_id="r1")
        await wait_for(lambda: status_is(app, "r1", "waiting"), timeout=15)
        await app.signal("r1", "go")
        assert await handle.result(timeout=15) == ["Paris.", "About 2.1 million."]
    assert len(chats(server)) == 2
    assert [r.headers["idempotency-key"] for r in chats(server)] == ["r1:0", "r1:2"]

    info = await app.get_run("r1")
    op = llm.operation
    assert op == ("llm:openai:gpt-4.1-mini" if protocol == "openai"
                  else "llm:anthropic:claude-sonnet-4-5")
    entries = [e for e in info.journal if e["kind"] == "step"]
    assert [e["name"] for e in entries] == [op, op]
    (refs,) = entries[1]["args"]
    assert refs["count"] == 4 and refs["model"] == llm.spec
    assert "Be terse" not in json.dumps(info.journal)  # the prompt is not journaled
    assert await load_conversation(app.store, refs["messages"]) == [
        system, user_message("Capital of France?"),
        {"role": "assistant", "content": "Paris."}, user_message("Its population?")]
    assert entries[0]["result"]["reply"]["text"] == "Paris."

    price_in, price_out = llm.prices.price(llm.model).input_per_million, \
        llm.prices.price(llm.model).output_per_million
    cost1 = (1000 * price_in + 10 * price_out) / 1e6
    cost2 = (2000 * price_in + 20 * price_out) / 1e6
    m = info.metrics
    assert m["llm.calls"] == 2 and m["tokens.input"] == 3000 and m["tokens.output"] == 30
    assert m["cost.usd"] == pytest.approx(cost1 + cost2)
    # The first call was answered from the journal once, after the signal's release.
    assert m["saved.calls"] == 1 and m["saved.tokens.input"] == 1000
    assert m["saved.cost.usd"] == pytest.approx(cost1)
    await llm.aclose()
    await app.close()


async def test_a_calls_cost_is_committed_with_its_entry(
        store_url: str, server: ScriptedLLMServer) -> None:
    """Each call's metrics go in its journal entry's transaction (one write, not two):
    the store is asked for no separate metrics write, and each entry carries the totals
    that include its own call."""
    server.set_script([Reply("a", input_tokens=10, output_tokens=1, times=3)])
    app = App(store_url)
    llm = make_llm(server, "openai")
    store = app.store
    carried: list[float] = []
    separate: list[str] = []
    append, metrics_set = store.journal_append, store.run_metrics_set

    async def spy_append(**kw: Any) -> None:
        if kw.get("metrics") is not None:
            carried.append(json.loads(kw["metrics"])["llm.calls"])
        await append(**kw)

    async def spy_metrics_set(**kw: Any) -> None:
        separate.append(kw["metrics"])
        await metrics_set(**kw)

    store.journal_append = spy_append  # type: ignore[method-assign]
    store.run_metrics_set = spy_metrics_set  # type: ignore[method-assign]

    @app.workflow
    async def talk() -> int:
        messages = [user_message("hi")]
        for _ in range(3):
            reply = await llm.chat(messages)
            messages += [reply.to_message(), user_message("more")]
        return len(messages)

    async with app.worker():
        assert await (await app.start(talk, run_id="r1")).result(timeout=15) == 7
    assert carried == [1, 2, 3] and separate == []
    m = (await app.get_run("r1")).metrics
    assert m["llm.calls"] == 3 and m["tokens.input"] == 30
    await llm.aclose()
    await app.close()


async def test_a_calls_texts_are_committed_with_its_entry(
        store_url: str, server: ScriptedLLMServer) -> None:
    """A call's new texts go in the transaction of the entry its step writes, whatever
    that entry records (a retried attempt's pending entry, the reply, a refusal, a
    budget refused): the store is asked for no write of texts of their own before the
    request, a text goes out once per execution, and every entry's references name
    stored texts. Two calls made at once with one prompt both store it."""
    server.set_script([Fault.http(500), Reply("a", times=4), Fault.http(400, "no")])
    app = App(store_url)
    llm = make_llm(server, "openai", retry=FAST)
    store = app.store
    appends: list[tuple[int, str, int]] = []  # (position, status, texts carried)
    separate: list[dict[str, str]] = []
    append, blob_put = store.journal_append, store.blob_put

    async def spy_append(**kw: Any) -> None:
        appends.append((kw["entry"].position, kw["entry"].status, len(kw.get("blobs") or {})))
        await append(**kw)

    async def spy_blob_put(**kw: Any) -> None:
        separate.append(kw["blobs"])
        await blob_put(**kw)

    store.journal_append = spy_append  # type: ignore[method-assign]
    store.blob_put = spy_blob_put  # type: ignore[method-assign]
    sys_msg = {"role": "system", "content": "terse"}

    @app.workflow
    async def talk() -> str:
        messages = [sys_msg, user_message("hi")]
        reply = await llm.chat(messages)  # 500, then "a"
        messages += [reply.to_message(), user_message("more")]
        await llm.chat(messages)
        both = [*messages, user_message("twice")]
        await asyncio.gather(llm.chat(both), llm.chat(both))
        try:
            await llm.chat([sys_msg, user_message("refused")])
        except FatalProviderError:
            pass
        try:
            await llm.chat([sys_msg, user_message("far too long " * 50)],
                           budget=Budget(tokens=10, on_exceed="fail"))
        except BudgetExceeded:
            return "done"
        return "not refused"

    async with app.worker():
        assert await (await app.start(talk, run_id="r1")).result(timeout=15) == "done"
    assert separate == []
    # Position 0: the 500's pending entry carries the 4 texts (2 messages, 2 nodes);
    # its reply, none. Then 2 new messages and nodes; both concurrent calls store the
    # one new message and node; the refusal 1 + 1; the budget refused 1 + 1.
    assert appends == [(0, "pending", 4), (0, "ok", 0), (1, "ok", 4), (2, "ok", 2),
                       (3, "ok", 2), (4, "error", 2), (5, "error", 2)]
    entries = [e for e in (await app.get_run("r1")).journal if e["kind"] == "step"]
    assert [e["status"] for e in entries] == ["ok"] * 4 + ["error"] * 2
    for e in entries:
        (refs,) = e["args"]
        conversation = await load_conversation(app.store, refs["messages"])
        assert len(conversation) == refs["count"] and conversation[0] == sys_msg
    assert len(chats(server)) == 6
    await llm.aclose()
    await app.close()


async def test_a_call_answered_while_the_store_is_down_is_paid_once(
        store_url: str, server: ScriptedLLMServer) -> None:
    """The store refuses the entry (with its texts and cost) of a call the provider
    answered, three times (unavailable): the worker writes it again with the reply it
    holds; the provider got one request, and the entry, its texts and the cost are in
    the store once it answers. The run was never claimed again (fencing token 1)."""
    from tether import StoreUnavailable

    server.set_script([Reply("kept", input_tokens=7, output_tokens=2)])
    app = App(store_url)
    llm = make_llm(server, "openai")
    await app._open()
    store = app.store
    real_append = store.journal_append
    refused: list[int] = []

    async def flaky_append(**kw: Any) -> None:
        if kw.get("blobs") and len(refused) < 3:
            refused.append(len(kw["blobs"]))
            raise StoreUnavailable("connection dropped (injected)")
        await real_append(**kw)

    store.journal_append = flaky_append  # type: ignore[method-assign]

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("once")])).text or ""

    async with app.worker():
        assert await (await app.start(wf, run_id="o")).result(timeout=20) == "kept"
    assert refused == [2, 2, 2] and len(chats(server)) == 1
    info = await app.get_run("o")
    (entry,) = info.journal
    (refs,) = entry["args"]
    assert await load_conversation(app.store, refs["messages"]) == [user_message("once")]
    assert info.metrics["llm.calls"] == 1 and info.metrics["tokens.input"] == 7
    run = await store.run_get("o")
    assert run is not None and run.fencing_token == 1
    await llm.aclose()
    await app.close()


async def test_outside_a_workflow_it_is_a_plain_call(server: ScriptedLLMServer) -> None:
    """No run: the provider is called, nothing is journaled, no idempotency key."""
    server.set_script([Reply("hi")])
    async with make_llm(server, "openai") as llm:
        reply = await llm.chat([user_message("hello")], temperature=0)
    assert isinstance(reply, ChatReply) and reply.text == "hi"
    (req,) = chats(server)
    assert "idempotency-key" not in req.headers and req.body["temperature"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_transient_failures_are_retried_and_recorded(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """500, a reset connection and a 429 are retried; the journal shows the attempts;
    every attempt carries the same idempotency key."""
    server.set_script([Fault.http(500), Fault.reset(), Fault.rate_limit(retry_after=0.05),
                       Reply("ok")])
    app = App(sqlite_url)
    llm = make_llm(server, protocol, retry=FAST)

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("x")])).text or ""

    async with app.worker():
        assert await (await app.start(wf, run_id="t")).result(timeout=15) == "ok"
    (entry,) = (await app.get_run("t")).journal
    assert entry["status"] == "ok" and entry["attempts"] == 4
    assert {r.headers["idempotency-key"] for r in chats(server)} == {"t:0"}
    await llm.aclose()
    await app.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_refusal_fails_at_once_with_the_providers_message(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A 400 is not retried: the run fails with the provider's own message, and the
    request id the provider gave the answer (``x-request-id``, Anthropic's
    ``request-id``), which its support asks for: the journal keeps an error's type and
    message only, and the id was an attribute alone, lost there."""
    server.set_script([Fault.http(400, "max_tokens: 99999999 > 8192, the maximum")])
    app = App(sqlite_url)
    llm = make_llm(server, protocol, retry=FAST)

    @app.workflow
    async def wf() -> str:
        try:
            await llm.chat([user_message("x")])
        except FatalProviderError as exc:
            return f"caught {type(exc).__name__}: {exc}"
        return "no error"

    async with app.worker():
        outcome = await (await app.start(wf, run_id="f")).result(timeout=15)
    assert outcome.startswith("caught StepError[FatalProviderError]")
    assert "HTTP 400" in outcome and "max_tokens: 99999999 > 8192" in outcome
    (entry,) = (await app.get_run("f")).journal
    assert entry["status"] == "error" and entry["attempts"] == 1
    assert "max_tokens: 99999999 > 8192" in entry["error"]["message"]
    assert re.search(r"\[request req_[0-9a-f]{24}\]$", entry["error"]["message"])
    assert len(chats(server)) == 1
    await llm.aclose()
    await app.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_account_out_of_credit_fails_the_call_at_once(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """Under a retry policy without end, an account out of credit (OpenAI's 429
    ``insufficient_quota``, Anthropic's 402 ``billing_error``) fails the call at its
    first attempt, and the journal says what to do. Before, OpenAI's 429 was retried as
    a rate limit: here until the next step of the script answered, in production for as
    long as the policy allowed, without a word."""
    server.set_script([Fault.out_of_credit(), Reply("never asked for")])
    entry = await _one_failed_call(sqlite_url, server, protocol)
    assert entry["status"] == "error" and entry["attempts"] == 1
    assert entry["error"]["type"].endswith("ProviderBillingError")
    assert "add credit or check the plan and billing" in entry["error"]["message"]
    assert re.search(r"\[request req_[0-9a-f]{24}\]", entry["error"]["message"])
    assert len(chats(server)) == 1


async def _one_failed_call(sqlite_url: str, server: ScriptedLLMServer,
                           protocol: str) -> dict[str, Any]:
    """The journal entry of a run's one LLM call (retried without end: ``FAST``), which
    failed the run, against ``server``'s script."""
    app = App(sqlite_url)
    llm = make_llm(server, protocol, retry=FAST)

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("x")])).text or ""

    try:
        async with app.worker():
            handle = await app.start(wf, run_id="failed")
            with pytest.raises(RunFailed):
                await handle.result(timeout=15)
        (entry,) = (await app.get_run("failed")).journal
        return entry
    finally:
        await llm.aclose()
        await app.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_error_in_a_200_answer_fails_the_call_at_once(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A gateway's HTTP 200 carrying the provider's 400 (``{"error": {"code": 400,
    ...}}``) fails the call at its first attempt with the provider's message, under a
    retry policy without end. Before, it was "no choices in the chat completion",
    retried: here until the script's next step answered, in production for ever, each
    attempt a request, and the provider's message in no journal."""
    server.set_script([Fault.error_body(400, "This model's maximum context length is "
                                             "128000 tokens"), Reply("never asked for")])
    entry = await _one_failed_call(sqlite_url, server, protocol)
    assert entry["status"] == "error" and entry["attempts"] == 1
    assert entry["error"]["type"].endswith("FatalProviderError")
    assert "maximum context length is 128000 tokens" in entry["error"]["message"]
    assert len(chats(server)) == 1


async def test_a_missing_api_key_is_a_recorded_error_naming_the_variable(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, server: ScriptedLLMServer) -> None:
    """No OPENAI_API_KEY for a non-loopback endpoint: the step fails once, recorded,
    naming the variable; nothing is sent anywhere."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="https://llm.invalid/v1", retry=FAST)

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("x")])).text or ""

    async with app.worker():
        with pytest.raises(RunFailed, match="OPENAI_API_KEY"):
            await (await app.start(wf, run_id="k")).result(timeout=15)
    (entry,) = (await app.get_run("k")).journal
    assert entry["attempts"] == 1
    assert entry["error"]["type"] == "tether.ai.ProviderConfigError"
    with pytest.raises(ProviderConfigError, match="OPENAI_API_KEY"):
        await llm.chat([user_message("x")])  # outside a workflow: raised directly
    await app.close()


def test_bad_specs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown provider 'gemini'.*openai, anthropic"):
        LLM("gemini:pro")
    with pytest.raises(ConfigError, match="names no provider"):
        LLM("gpt-4.1")
    with pytest.raises(ConfigError, match="needs base_url"):
        LLM("openai-compatible:llama3.1:8b")
    with pytest.raises(ConfigError, match="rpm= must be > 0"):
        LLM("openai:gpt-4.1", rpm=0)


async def test_bad_messages_are_a_clear_error(server: ScriptedLLMServer, sqlite_url: str) -> None:
    """A message that is not a dict with a role fails the run with a message naming it."""
    app = App(sqlite_url)
    llm = make_llm(server, "openai")

    @app.workflow
    async def wf() -> None:
        await llm.chat([user_message("ok"), "not a message"])  # type: ignore[list-item]

    async with app.worker():
        with pytest.raises(RunFailed, match="message 1 must be a dict with a 'role'"):
            await (await app.start(wf, run_id="b")).result(timeout=15)
    assert chats(server) == []
    await app.close()


async def test_unknown_model_counts_tokens_at_no_cost_and_prices_are_overridable(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """A model missing from the price table: tokens counted, cost 0, noted as unpriced;
    a user price table prices it."""
    server.set_script([Reply("a", input_tokens=100, output_tokens=10),
                       Reply("b", input_tokens=100, output_tokens=10)])
    app = App(sqlite_url)
    unknown = LLM("openai:my-finetune", base_url=server.base_url)
    priced = LLM("openai:my-finetune", base_url=server.base_url,
                 prices={"my-finetune": (10.0, 100.0)})

    @app.workflow
    async def wf() -> None:
        await unknown.chat([user_message("x")])
        await priced.chat([user_message("x")])

    async with app.worker():
        await (await app.start(wf, run_id="u")).result(timeout=15)
    m = (await app.get_run("u")).metrics
    assert m["tokens.input"] == 200 and m["llm.unpriced_calls"] == 1
    assert m["cost.usd"] == pytest.approx((100 * 10.0 + 10 * 100.0) / 1e6)
    for llm in (unknown, priced):
        await llm.aclose()
    await app.close()


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_structured_output_is_validated_and_retried_with_the_error(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """An answer that does not validate is sent back with the error; the second answer
    validates; both tries are journaled operations and both are accounted."""
    server.set_script([Reply('{"name": "Paris", "population": "many"}'),
                       Reply('{"name": "Paris", "population": 2100000}')])
    app = App(sqlite_url)
    llm = make_llm(server, protocol)

    @app.workflow
    async def wf() -> City:
        return await llm.chat([user_message("Describe Paris.")], output=City)

    async with app.worker():
        city = await (await app.start(wf, run_id="o")).result(timeout=15)
    assert city == City(name="Paris", population=2100000)
    first, second = chats(server)
    if protocol == "openai":
        fmt = first.body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"
        assert fmt["json_schema"]["schema"]["required"] == ["name", "population"]
    else:
        assert first.body["tool_choice"] == {"type": "tool", "name": "final_output"}
    assert "population: Input should be a valid integer" in json.dumps(second.body)
    info = await app.get_run("o")
    assert len(info.journal) == 2 and info.metrics["llm.calls"] == 2
    await llm.aclose()
    await app.close()


async def test_structured_output_gives_up_after_the_retries(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    server.set_script([Reply("not json", times=2)])
    app = App(sqlite_url)
    llm = make_llm(server, "openai")

    @app.workflow
    async def wf() -> City:
        return await llm.chat([user_message("Describe Paris.")], output=City,
                              output_retries=1)

    async with app.worker():
        with pytest.raises(RunFailed, match="did not validate as City after 2 tries"):
            await (await app.start(wf, run_id="g")).result(timeout=15)
    assert len(chats(server)) == 2
    with pytest.raises(ConfigError, match="pydantic model class"):
        await llm.chat([user_message("x")], output=dict)  # type: ignore[type-var]
    await llm.aclose()
    await app.close()
    assert issubclass(OutputValidationError, tether.TetherError)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_structured_output_that_never_validates_says_why(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """An answer cut at max_tokens, then a refusal: the model is told the first was
    cut, and the run's recorded error quotes the refusal. Before, a refusal's error was
    the JSON parser's ("(root): Invalid JSON: expected ident at line 1 column 2"): the
    journal keeps the message only, and the model's reason was lost there."""
    server.set_script([Reply('{"name": "Par', finish_reason="length"),
                       Reply(refusal="I can't share that.")])
    app = App(sqlite_url)
    llm = make_llm(server, protocol)

    @app.workflow
    async def wf() -> City:
        return await llm.chat([user_message("Describe Paris.")], output=City,
                              output_retries=1)

    async with app.worker():
        with pytest.raises(RunFailed, match="last error: the model refused: \"I can't share"):
            await (await app.start(wf, run_id="v")).result(timeout=15)
    assert "the answer was cut at max_tokens" in json.dumps(chats(server)[1].body)
    await llm.aclose()
    await app.close()


async def test_prompt_cache_figures_price_an_answered_call_and_a_cut_one(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """Anthropic tells a stream's prompt, cache figures included, in ``message_start``:
    a stream cut after it was billed its 8,000 cache-written tokens at the write price
    (1.25 times the input price), and the retry's 8,000 cache reads at the read price
    (a tenth). Both are in the run's cost (before, both at the input price)."""
    server.set_script([
        Reply("alpha beta gamma", input_tokens=10_000, output_tokens=3,
              cache_write_tokens=8_000, error_after_chunks=1),
        Reply("ok", input_tokens=10_000, output_tokens=1, cache_read_tokens=8_000)])
    app = App(sqlite_url)
    llm = make_llm(server, "anthropic", retry=FAST)  # claude-sonnet-4-5: $3 / $15

    @app.workflow
    async def wf() -> str:
        return (await llm.stream([user_message("x")])).text or ""

    async with app.worker():
        assert await (await app.start(wf, run_id="cache")).result(timeout=15) == "ok"
    m = (await app.get_run("cache")).metrics
    cut = (2_000 * 3.0 + 8_000 * 3.75 + 2 * 15.0) / 1e6  # ("alpha ": 2 tokens estimated)
    answered = (2_000 * 3.0 + 8_000 * 0.30 + 1 * 15.0) / 1e6
    assert m["tokens.input"] == 20_000
    assert m["cost.usd"] == pytest.approx(cut + answered)
    await llm.aclose()
    await app.close()


async def test_1_hour_cache_writes_count_in_the_runs_cost_its_budget_and_tether_show(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """A call writing 100,000 prompt tokens to Anthropic's 1-hour cache costs $0.60 on
    claude-sonnet-4-5 (twice the $3 input price), not the $0.375 of 5-minute writes:
    the run's cost says $0.60, ``tether show`` too, and a $0.50 budget refuses the next
    call. Before, the run was counted $0.375 and the budget let the next call through."""
    server.set_script([Reply("first", input_tokens=100_000, output_tokens=0,
                             cache_write_tokens=100_000, cache_write_1h_tokens=100_000),
                       Reply("second", input_tokens=10, output_tokens=1)])
    app = App(sqlite_url)
    llm = make_llm(server, "anthropic", retry=FAST)

    @app.workflow
    async def wf() -> str:
        budget = Budget(usd=0.5, on_exceed="fail")
        first = await llm.chat([user_message("x")], budget=budget)
        try:
            await llm.chat([user_message("y")], budget=budget)
        except BudgetExceeded as exc:
            return f"{first.text}, then refused: {exc}"
        return f"{first.text}, then asked again"

    async with app.worker():
        outcome = await (await app.start(wf, run_id="hour")).result(timeout=15)
    assert outcome.startswith("first, then refused:")
    m = (await app.get_run("hour")).metrics
    assert m["cost.usd"] == pytest.approx(0.60)
    assert len(chats(server)) == 1
    await llm.aclose()
    await app.close()
    from tests.cli.test_cli import tether_cli

    shown = tether_cli("show", "hour", db=sqlite_url).stdout
    assert "$0.60" in shown and "$0.375" not in shown, shown


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_publishes_chunks_and_journals_the_final_reply_once(
        store_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """Observers receive the chunks live; the journal has one entry with the whole text;
    replay returns it and publishes nothing."""
    import asyncio

    server.set_script([Reply("one two three four", chunk_delay=0.05)])
    app = App(store_url)
    llm = make_llm(server, protocol)

    @app.workflow
    async def wf() -> str:
        await tether.wait_for_signal("go")
        reply = await llm.stream([user_message("count")])
        await tether.wait_for_signal("go")
        return reply.text or ""

    events: list[dict[str, Any]] = []

    async def observe() -> None:
        async for data in app.events("s"):
            events.append(json.loads(data))

    async def probe(mark: str) -> None:
        """Publish a marker event until the watcher has it (not a fixed sleep): the
        subscription is live, and every event published before it was delivered."""
        async def seen() -> bool:
            if any(e.get("probe") == mark for e in events):
                return True
            await app.store.run_publish(run_id="s", data=json.dumps({"probe": mark}))
            return False
        await wait_for(seen, timeout=15, interval=0.02)

    async with app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(wf, run_id="s")
        watcher = asyncio.create_task(observe())
        await probe("live")  # the subscription is live before the stream starts
        await app.signal("s", "go")
        await wait_for(lambda: any(e.get("type") == "llm.end" for e in events), timeout=15)
        await wait_for(lambda: status_is(app, "s", "waiting"), timeout=15)
        await app.signal("s", "go")
        assert await handle.result(timeout=15) == "one two three four"
        await probe("end")  # whatever the replay published has arrived by now
        watcher.cancel()
    events = [e for e in events if "probe" not in e]
    chunks = [e["text"] for e in events if e["type"] == "llm.chunk"]
    assert "".join(chunks) == "one two three four" and len(chunks) == 4
    assert [e["type"] for e in events].count("llm.end") == 1  # the replay sent nothing
    assert {e["position"] for e in events} == {1}
    info = await app.get_run("s")
    (llm_entry,) = [e for e in info.journal if e["kind"] == "step"]
    assert llm_entry["result"]["reply"]["text"] == "one two three four"
    assert len(chats(server)) == 1 and chats(server)[0].stream
    await llm.aclose()
    await app.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_run_id_outside_ascii_makes_an_ascii_idempotency_key(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A run named ``shopper-αβγ``: its call's Idempotency-Key is the step key
    percent-encoded (a header is ASCII; every call failed with UnicodeEncodeError and
    retried for ever), the same on every attempt; ``idempotency_headers`` agrees."""
    from tether.ai import idempotency_headers

    server.set_script([Fault.http(500), Reply("ok")])
    app = App(sqlite_url)
    llm = make_llm(server, protocol)
    seen: list[dict[str, str]] = []

    @app.step
    async def headers() -> dict[str, str]:
        return idempotency_headers()

    @app.workflow
    async def ask() -> str:
        seen.append(await headers())
        return (await llm.chat([user_message("hi")])).text or ""

    async with app.worker(sticky_wait=0.01, poll_interval=0.05):
        assert await (await app.start(ask, run_id="shopper-αβγ")).result(timeout=15) == "ok"
    keys = [r.headers["idempotency-key"] for r in chats(server)]
    assert keys == ["shopper-%CE%B1%CE%B2%CE%B3:1"] * 2, keys
    assert seen and all(h == {"Idempotency-Key": "shopper-%CE%B1%CE%B2%CE%B3:0"} for h in seen)
    await llm.aclose()
    await app.close()
