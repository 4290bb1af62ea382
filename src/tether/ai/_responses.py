"""The OpenAI Responses API over plain HTTP, as a ``ChatClient``:
``LLM("openai:gpt-5", api="responses")``.

The conversation stays in Tether's (OpenAI chat) message format, so agents, budgets,
content-addressed messages and the journal do not change with the API; this client
translates it into Responses ``input`` items on the way out and the response's output
items into a ``ChatReply`` on the way back:

- ``system``/``developer`` messages become ``instructions``;
- user and assistant texts become ``message`` items, an assistant's tool calls
  ``function_call`` items, tool results ``function_call_output`` items;
- ``reasoning`` output items are kept whole in ``ChatReply.reasoning`` (so in the
  journal and in the assistant message) and sent back, in place, with the next request,
  as reasoning models need between tool calls.

Requests are stateless (``store: false`` unless given): the whole conversation is sent
each time, as the journal has it, never a ``previous_response_id`` that would tie a
resumed run to state kept at the provider. With ``reasoning=`` in the parameters the
client asks for ``reasoning.encrypted_content``, which is what lets reasoning items be
sent back without server-side storage. One call is one HTTP request: no hidden retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx2

from tether.ai._accounting import StreamProgress
from tether.ai._errors import (
    ProviderConfigError,
    ProviderError,
    RetryableProviderError,
)
from tether.ai._openai import (
    _as_text,
    _emit,
    _HTTPChat,
    _in_stream_error,
    _parse_json,
    _tools_and_choice,
    openai_endpoint,
    warn_no_usage_answered,
)
from tether.ai._types import ChatReply, Message, OnChunk, ToolCall, Usage
from tether.errors import ConfigError

__all__ = ["OpenAIResponses", "to_responses_input"]


class OpenAIResponses(_HTTPChat):
    """A model behind the OpenAI Responses API (``POST /responses``).

    Args: as ``OpenAIChat``.

    Raises:
        ConfigError: no API key where one is needed, a bad ``base_url``.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | httpx2.Timeout | None = None,
                 extra_headers: Mapping[str, str] | None = None,
                 require_api_key: bool = True, provider: str = "openai") -> None:
        url, headers = openai_endpoint(base_url=base_url, api_key=api_key,
                                       extra_headers=extra_headers,
                                       require_api_key=require_api_key, provider=provider)
        super().__init__(model, provider=provider, base_url=url, headers=headers,
                         timeout=timeout)

    def _body(self, messages: Sequence[Message], tools: Sequence[Any] | None,
              tool_choice: str | None, output_schema: Mapping[str, Any] | None,
              params: Mapping[str, Any]) -> dict[str, Any]:
        instructions, items = to_responses_input(messages)
        body: dict[str, Any] = {"model": self.model, "input": items, "store": False}
        if instructions:
            body["instructions"] = instructions
        specs, choice = _tools_and_choice(tools, tool_choice)
        if specs:
            body["tools"] = [{"type": "function", "name": s.name,
                              "description": s.description, "parameters": s.parameters}
                             for s in specs]
        if choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        elif choice is not None:
            body["tool_choice"] = {"type": "function", "name": choice}
        if output_schema is not None:
            name = str(output_schema.get("title") or "output")
            body["text"] = {"format": {
                "type": "json_schema", "schema": dict(output_schema),
                "name": "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]}}
        extra = dict(params)
        if extra.get("background"):
            raise ProviderConfigError(
                f"{self.provider} responses: background=True is not supported by "
                "tether.ai.LLM: the request would be answered 'queued', with no output "
                "and no usage, and nothing here polls the job. Send it in the foreground "
                "(with a longer timeout= for a long job), or use the pydantic-ai "
                "integration (TetherAgent, openai_background=True), which queues the "
                "job and polls it as one durable call")
        if "max_tokens" in extra:  # the name every other client takes
            extra.setdefault("max_output_tokens", extra.pop("max_tokens"))
        body.update(extra)
        if body.get("reasoning") is not None and not body.get("store"):
            include = list(body.get("include") or [])
            if "reasoning.encrypted_content" not in include:
                body["include"] = [*include, "reasoning.encrypted_content"]
        return body

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None,
                   output_schema: Mapping[str, Any] | None = None,
                   idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """One response.

        Raises:
            RetryableProviderError, FatalProviderError: see ``ChatClient``.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        data = await self._post("responses", body, self._headers(idempotency_key))
        warn_no_usage_answered(self.provider, self.base_url, data.get("usage"))
        return self._reply(data)

    async def stream(self, messages: Sequence[Message], *, on_chunk: OnChunk | None = None,
                     tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """Like ``chat``, streamed: ``on_chunk`` receives each text delta; the reply is
        the ``response.completed`` event's response.

        Raises:
            RetryableProviderError: as ``chat``, an ``error`` event, and a stream that
                ends before ``response.completed``.
            FatalProviderError: as ``chat``.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        body["stream"] = True
        final: dict[str, Any] | None = None
        told: Usage | None = None
        progress = StreamProgress()
        events = self._events("responses", body, self._headers(idempotency_key), progress)
        try:
            async with aclosing(events) as stream:
                async for _, data in stream:
                    event = _parse_json(data)
                    if not isinstance(event, dict):
                        raise self._bad_answer(
                            f"a stream event is not a JSON object: {data[:200]}")
                    kind = event.get("type")
                    delta = event.get("delta")
                    if isinstance(kind, str) and kind.endswith(".delta") and isinstance(
                            delta, str):  # (text, tool-call arguments, reasoning: output)
                        progress.chars += len(delta)
                    if kind in ("response.output_text.delta", "response.refusal.delta"):
                        await _emit(on_chunk, str(delta or ""))
                    elif kind in ("response.completed", "response.incomplete") and isinstance(
                            event.get("response"), dict):
                        # (incomplete: cut at max_output_tokens, the stream's last event;
                        # it was read as a dropped stream, retried and paid again and
                        # again)
                        final = event["response"]
                    elif kind in ("error", "response.failed"):
                        response = event.get("response")
                        if isinstance(response, dict) and isinstance(response.get("usage"),
                                                                     dict):
                            used = response["usage"]  # (a failed response tells its usage)
                            told = _responses_usage(used)
                        error = event.get("error") or (response or {}).get("error")
                        detail = error if isinstance(error, dict) else event
                        # (retryable, but for an account out of credit and a
                        # gateway's code naming the HTTP status it meant)
                        raise _in_stream_error(self.provider, detail)
            if final is None:
                raise RetryableProviderError("connection dropped: the stream ended before "
                                             "response.completed", provider=self.provider)
        except ProviderError as exc:
            if told is not None and told.total_tokens > 0:
                exc.usage = told
            progress.mark(exc)  # (begun, so billed: what was not told is estimated)
            raise
        return self._reply(final)

    def _reply(self, data: Mapping[str, Any]) -> ChatReply:
        output = data.get("output")
        if not isinstance(output, list):
            raise self._bad_answer("no output in the response")
        texts: list[str] = []
        refusals: list[str] = []
        calls: list[ToolCall] = []
        reasoning: list[dict[str, Any]] = []
        for item in output:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                parts = [p for p in item.get("content") or [] if isinstance(p, dict)]
                texts.extend(str(p.get("text") or "") for p in parts
                             if p.get("type") == "output_text")
                refusals.extend(str(p.get("refusal") or "") for p in parts
                                if p.get("type") == "refusal")
            elif kind == "function_call":
                calls.append(ToolCall.parse(str(item.get("call_id") or item.get("id") or ""),
                                            str(item.get("name") or ""),
                                            _as_text(item.get("arguments"))))
            elif kind == "reasoning":
                reasoning.append({k: v for k, v in item.items() if v is not None})
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        incomplete = (data.get("incomplete_details") or {}) if data.get(
            "status") == "incomplete" else {}
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        # (Cut at the limit while calling tools is "length", as Chat Completions says:
        # the last call may hold half its arguments.)
        finish = ("length" if reason == "max_output_tokens" else "tool_calls" if calls
                  else "content_filter" if reason == "content_filter" else "stop")
        text = "".join(texts) if texts else None
        if not text and "".join(refusals):
            # A refusal part, as Chat Completions' ``refusal``: the text, content_filter.
            text, finish = "".join(refusals), "content_filter"
        return ChatReply(
            text=text, tool_calls=calls,
            usage=_responses_usage(usage),
            model=str(data.get("model") or self.model), finish_reason=finish,
            provider=self.provider, raw_id=str(data.get("id") or ""), reasoning=reasoning,
            usage_reported=isinstance(data.get("usage"), dict))


def to_responses_input(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat-format messages as the Responses API's ``(instructions, input)``.

    Raises:
        ConfigError: a message without a known role.
    """
    system: list[str] = []
    items: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _as_text(content)
            if text:
                system.append(text)
        elif role == "user":
            items.append({"role": "user", "content": content if isinstance(content, str)
                          else _user_parts(content)})
        elif role == "assistant":
            items.extend(dict(r) for r in msg.get("reasoning") or []
                         if isinstance(r, dict) and r.get("type") == "reasoning")
            text = _as_text(content)
            if text:
                items.append({"role": "assistant", "content": text})
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": fn.get("name"),
                              "arguments": _as_text(fn.get("arguments"))})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": msg.get("tool_call_id"),
                          "output": _as_text(content)})
        else:
            raise ConfigError(f"message {i} has role {role!r}: expected system, developer, "
                              "user, assistant or tool")
    return ("\n\n".join(system) if system else None), items


def _user_parts(content: Any) -> list[dict[str, Any]]:
    """Chat content parts (``text``, ``image_url``) as Responses input parts."""
    parts: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"type": "input_text", "text": str(part.get("text") or "")})
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            parts.append({"type": "input_image", "image_url": url})
        else:
            parts.append(dict(part))
    return parts


def _responses_usage(usage: Mapping[str, Any]) -> Usage:
    """The usage of a response, its cached input (``input_tokens_details``) included."""
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage.reported(usage.get("input_tokens"), usage.get("output_tokens")).cached(cached)
