"""``LLM(...)`` refuses the arguments its client cannot work with when it is made, not
at its first call (inside a run that was a failed step, long after the mistake), and
says what to write instead."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tether import RetryPolicy
from tether.ai import LLM, CircuitBreaker
from tether.errors import ConfigError

LOCAL = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(("spec", "kwargs", "said"), [
    ("anthropic:claude-sonnet-4-5", {"api": "responses"},
     r"Anthropic models take no api= option \(they are served by the Messages API only, "
     r"api='messages'\), got api='responses'; the Responses API is OpenAI's"),
    ("openai:gpt-4.1", {"api": "completions"},
     r"api= must be 'chat' \(Chat Completions\) or 'responses' \(the Responses API\), "
     r"got 'completions'"),
    ("gemini:pro", {}, r"unknown provider 'gemini'.*known providers: openai, anthropic"),
    ("openai:gpt-4.1", {"background": True},
     r"background= is not an option of LLM.*in the foreground.*openai_background=True"),
    ("openai:gpt-4.1", {"api": "responses", "stream": True},
     r"stream= is not an option of LLM: call llm\.stream\(messages\)"),
    ("openai:gpt-4.1", {"temperature": 0.2},
     r"unknown option temperature= \(the options of openai models: api=, extra_headers=, "
     r"and base_url=.*request fields \(temperature=, max_tokens=, \.\.\.\) go to each "
     r"call: llm\.chat\(messages, temperature=0\.2\)"),
    ("openai:gpt-4.1", {"max_tokens": 100}, r"unknown option max_tokens= \(the options of "
     r"openai models"),
    ("anthropic:claude-sonnet-4-5", {"max_tokens": 0},
     r"max_tokens= must be a positive whole number of tokens, got 0"),
    ("openai:gpt-4.1", {"timeout": -1}, r"timeout= must be a positive number of seconds "
     r"\(or None for no limit\), got -1"),
    ("openai:gpt-4.1", {"timeout": 0}, r"timeout= must be a positive number"),
    ("openai:gpt-4.1", {"timeout": float("nan")}, r"timeout= must be a positive number"),
    ("openai:gpt-4.1", {"timeout": httpx2.Timeout(30.0, connect=-2.0)},
     r"timeout= must be a positive number"),
    ("openai:gpt-4.1", {"timeout": "600"}, r"timeout= must be seconds \(timeout=600\) or "
     r"an httpx2\.Timeout, got str"),
    ("openai:gpt-4.1", {"base_url": "api.example.com/v1"},
     r"base_url 'api\.example\.com/v1' is not an http\(s\) URL: write it whole"),
    ("openai:gpt-4.1", {"extra_headers": {"X-Team": 7}},
     r"extra_headers= must map header names to string values"),
    ("openai:gpt-4.1", {"retry": 3}, r"retry= must be a tether\.RetryPolicy, got int"),
    ("openai:gpt-4.1", {"breaker": True},
     r"breaker= must be a tether\.ai\.CircuitBreaker or None, got bool"),
], ids=["anthropic-responses", "unknown-api", "unknown-provider", "background", "stream",
        "request-field", "openai-max-tokens", "anthropic-max-tokens", "negative-timeout",
        "zero-timeout", "nan-timeout", "negative-connect-timeout", "text-timeout",
        "relative-base-url", "header-value", "retry", "breaker"])
def test_bad_arguments_are_refused_when_the_model_is_made(spec: str, kwargs: dict[str, Any],
                                                          said: str) -> None:
    """Each is a ``ConfigError`` from ``LLM(...)`` itself, naming the model. Before, the
    unknown option (a request field given to the model, ``background=``), the API
    Anthropic does not serve, the relative base URL and the bad timeout type failed the
    first call (a ``TypeError`` for an unknown option), inside a run as a failed step;
    a negative or zero timeout failed every request, retried for ever."""
    kwargs = {"base_url": LOCAL, "api_key": "k", **kwargs}
    with pytest.raises(ConfigError, match=said) as caught:
        LLM(spec, **kwargs)
    if not spec.startswith("gemini"):
        assert str(caught.value).startswith(f"LLM({spec!r}): "), caught.value


def test_good_arguments_are_taken() -> None:
    """What each provider's models take is still taken, and makes a client."""
    LLM("openai:gpt-4.1", base_url=LOCAL, api_key="k", api="responses",
        extra_headers={"X-Team": "a"}, timeout=httpx2.Timeout(600.0, connect=10.0),
        retry=RetryPolicy(max_attempts=3), breaker=None)
    LLM("openai:gpt-4.1", base_url=LOCAL, api_key="k", api="chat", timeout=30)
    LLM("anthropic:claude-sonnet-4-5", base_url="http://127.0.0.1:9", api_key="k",
        api="messages", max_tokens=8_000, breaker=CircuitBreaker(), timeout=2.5)
    LLM("openai-compatible:llama3.1:8b", base_url=LOCAL, api="responses")
