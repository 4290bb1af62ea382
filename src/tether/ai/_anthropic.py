"""Anthropic Messages over plain HTTP (``httpx``), with the same interface as
``OpenAIChat``: messages in, ``ChatReply`` out, OpenAI-format messages converted here.

Conversion (``to_anthropic_messages``):

- ``system`` / ``developer`` messages become the top-level ``system`` text;
- an assistant's ``tool_calls`` become ``tool_use`` blocks (arguments parsed to ``input``);
- ``tool`` messages become ``tool_result`` blocks of a user turn (first in the turn, as
  the API requires), ``"is_error": True`` on a tool message marks a failed tool;
- consecutive turns of one role are merged, so user and assistant alternate;
- user content parts: ``text``; ``image_url`` (data URL or http URL) becomes an
  ``image`` block; Anthropic-native blocks pass through;
- extended thinking: a reply's ``thinking`` / ``redacted_thinking`` blocks are kept
  whole in ``ChatReply.reasoning`` (so journaled, and in the assistant message under
  ``reasoning``) and sent back first in that assistant turn, unchanged, signature
  included, as the API requires when thinking is on with tool use.

An ``output_schema`` becomes a tool named ``final_output`` that the model is made to
call (``tool_choice``); its input, as JSON text, is the reply's ``text``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import httpx2

from tether.ai._accounting import StreamProgress
from tether.ai._errors import (
    FatalProviderError,
    ProviderBillingError,
    ProviderError,
    RetryableProviderError,
    is_billing_error,
)
from tether.ai._openai import (
    _as_text,
    _emit,
    _HTTPChat,
    _is_loopback,
    _parse_json,
    warn_no_usage_answered,
)
from tether.ai._types import (
    DEFAULT_MAX_TOKENS,
    ChatReply,
    Message,
    OnChunk,
    ToolCall,
    ToolSpec,
    Usage,
)
from tether.errors import ConfigError

__all__ = ["OUTPUT_TOOL", "AnthropicChat", "to_anthropic_messages"]

DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
#: The tool an ``output_schema`` becomes.
OUTPUT_TOOL = "final_output"

#: Anthropic's ``stop_reason`` as OpenAI's ``finish_reason``: a reply cut because the
#: context window filled up (``model_context_window_exceeded``) is cut like one at
#: ``max_tokens`` (``length``: an agent does not take it for a whole answer).
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
           "max_tokens": "length", "model_context_window_exceeded": "length",
           "refusal": "content_filter"}
_RETRYABLE_TYPES = {"rate_limit_error", "api_error", "overloaded_error", "timeout_error"}


class AnthropicChat(_HTTPChat):
    """A chat model behind the Anthropic Messages API.

    Args:
        model: the model name (``"claude-sonnet-4-5"``).
        base_url: default ``$ANTHROPIC_BASE_URL``, else ``https://api.anthropic.com``
            (a base URL ending in ``/v1`` is accepted too).
        api_key: default ``$ANTHROPIC_API_KEY``; may be absent for a loopback
            ``base_url`` or with ``require_api_key=False``.
        max_tokens: the default ``max_tokens`` (the API requires one); a ``max_tokens=``
            given to ``chat`` wins.
        timeout, extra_headers, provider: as ``OpenAIChat``.

    Raises:
        ConfigError: no API key where one is needed, a bad ``base_url``.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | httpx2.Timeout | None = None,
                 extra_headers: Mapping[str, str] | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS,
                 require_api_key: bool = True, provider: str = "anthropic") -> None:
        url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key and require_api_key and not _is_loopback(url):
            raise ConfigError(
                f"{provider}: no API key: set the ANTHROPIC_API_KEY environment variable or "
                f"pass api_key= (base_url {url})")
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        headers.update(extra_headers or {})
        super().__init__(model, provider=provider, base_url=url, headers=headers,
                         timeout=timeout)
        self.max_tokens = max_tokens
        path = urlsplit(self.base_url).path.rstrip("/")
        self._path = "messages" if path.endswith("/v1") else "v1/messages"

    def _body(self, messages: Sequence[Message], tools: Sequence[Any] | None,
              tool_choice: str | None, output_schema: Mapping[str, Any] | None,
              params: Mapping[str, Any]) -> dict[str, Any]:
        system, converted = to_anthropic_messages(messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                "messages": converted}
        if system:
            body["system"] = system
        specs = [ToolSpec.of(t) for t in tools or ()]
        names = {s.name for s in specs}
        if tool_choice is not None and tool_choice not in ("auto", "none", "required"):
            if tool_choice not in names:
                raise ConfigError(f"tool_choice {tool_choice!r} is not 'auto', 'none', "
                                  "'required' or the name of a tool given")
        tool_dicts = [s.to_anthropic() for s in specs]
        if output_schema is not None:
            tool_dicts.append({"name": OUTPUT_TOOL, "input_schema": dict(output_schema),
                               "description": "Give the final answer in this structure."})
            if tool_choice is None and not _thinking(params):
                tool_choice = "required" if specs else OUTPUT_TOOL
            # (With thinking on, the API refuses a forced tool, "Thinking may not be
            # enabled when tool_choice forces tool use": the choice stays the model's,
            # and an answer given as text instead is read as the JSON answer.)
        if tool_dicts:
            body["tools"] = tool_dicts
        if tool_choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif tool_choice in ("auto", "none"):
            body["tool_choice"] = {"type": tool_choice}
        elif tool_choice is not None:
            body["tool_choice"] = {"type": "tool", "name": tool_choice}
        body.update(params)
        return body

    def _reply(self, blocks: list[dict[str, Any]], *, usage: Usage, model: str,
               stop_reason: str | None, raw_id: str, output: bool,
               usage_reported: bool = True) -> ChatReply:
        """The reply from content blocks (``text`` / ``tool_use`` with ``raw`` text)."""
        texts = [b["text"] for b in blocks if b.get("type") == "text" and b.get("text")]
        calls: list[ToolCall] = []
        output_text = None
        for b in blocks:
            if b.get("type") != "tool_use":
                continue
            if output and b.get("name") == OUTPUT_TOOL and output_text is None:
                output_text = b["raw"]
                continue
            calls.append(_tool_call(str(b.get("id", "")), str(b.get("name", "")), b["raw"]))
        finish = _FINISH.get(stop_reason or "end_turn", stop_reason or "stop")
        if output_text is not None and not calls and finish == "tool_calls":
            finish = "stop"
        text = output_text if output_text is not None else ("".join(texts) if texts else None)
        # Extended thinking: kept whole (text and signature) to be sent back unchanged.
        thinking = [{k: v for k, v in b.items() if k != "raw"} for b in blocks
                    if b.get("type") in _THINKING_BLOCKS]
        return ChatReply(text=text, tool_calls=calls, usage=usage, model=model,
                         finish_reason=finish, provider=self.provider, raw_id=raw_id,
                         reasoning=thinking, usage_reported=usage_reported)

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None,
                   output_schema: Mapping[str, Any] | None = None,
                   idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """One Messages call; arguments as ``OpenAIChat.chat`` (``max_tokens``,
        ``temperature``... go in ``params``).

        Raises:
            RetryableProviderError, FatalProviderError: see ``ChatClient``.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        data = await self._post(self._path, body, self._headers(idempotency_key))
        content = data.get("content")
        if not isinstance(content, list):
            raise self._bad_answer("no content in the message")
        blocks = []
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "tool_use":
                value = b.get("input")
                raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                b = {**b, "raw": raw}
            blocks.append(b)
        warn_no_usage_answered(self.provider, self.base_url, data.get("usage"))
        return self._reply(blocks, usage=_anthropic_usage(data.get("usage")),
                           model=str(data.get("model") or self.model),
                           stop_reason=data.get("stop_reason"), raw_id=str(data.get("id", "")),
                           output=output_schema is not None,
                           usage_reported=isinstance(data.get("usage"), dict))

    async def stream(self, messages: Sequence[Message], *, on_chunk: OnChunk | None = None,
                     tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """Like ``chat``, streamed; ``on_chunk`` receives each text delta (with
        ``output_schema``, the pieces of the JSON answer).

        Raises:
            RetryableProviderError: as ``chat``, an ``error`` event (overloaded...), a
                stream that ends before ``message_stop``.
            FatalProviderError: as ``chat``, an ``error`` event that retrying cannot fix.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        body["stream"] = True
        blocks: dict[int, dict[str, Any]] = {}
        told_usage: dict[str, Any] = {}  # (the usage fields told so far, merged)
        usage = Usage()
        model, raw_id, stop_reason, done = self.model, "", None, False
        progress = StreamProgress()
        events = self._events(self._path, body, self._headers(idempotency_key), progress)
        told = False  # (the usage was told: a failure from here on was paid for)
        try:
            async with aclosing(events) as stream:
                async for event, data in stream:
                    msg = _parse_json(data)
                    if not isinstance(msg, dict):
                        raise self._bad_answer(f"an event is not a JSON object: {data[:200]}")
                    kind = msg.get("type", event)
                    if kind == "message_start":
                        start = msg.get("message") or {}
                        model = str(start.get("model") or model)
                        raw_id = str(start.get("id") or raw_id)
                        if isinstance(start.get("usage"), dict):
                            told_usage.update(start["usage"])
                        usage = _anthropic_usage(told_usage)
                        told = True
                        progress.told = usage  # (billed if cancelled from here)
                    elif kind == "content_block_start":
                        block = dict(msg.get("content_block") or {})
                        block["parts"] = [block["text"]] if block.get("text") else []
                        blocks[int(msg.get("index", len(blocks)))] = block
                    elif kind == "content_block_delta":
                        block = blocks.setdefault(int(msg.get("index", 0)),
                                                  {"type": "text", "parts": []})
                        delta = msg.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            piece = str(delta.get("text", ""))
                            block["parts"].append(piece)
                            progress.chars += len(piece)
                            await _emit(on_chunk, piece)
                        elif delta.get("type") == "thinking_delta":
                            piece = str(delta.get("thinking", ""))
                            block["parts"].append(piece)
                            progress.chars += len(piece)
                        elif delta.get("type") == "signature_delta":
                            block["signature"] = (str(block.get("signature") or "")
                                                  + str(delta.get("signature", "")))
                        elif delta.get("type") == "input_json_delta":
                            piece = str(delta.get("partial_json", ""))
                            block["parts"].append(piece)
                            progress.chars += len(piece)
                            if output_schema is not None and block.get("name") == OUTPUT_TOOL:
                                await _emit(on_chunk, piece)
                    elif kind == "message_delta":
                        stop_reason = (msg.get("delta") or {}).get("stop_reason") or stop_reason
                        usage_delta = msg.get("usage") or {}
                        if isinstance(usage_delta, dict):  # (cumulative; null: not told)
                            told_usage.update((k, v) for k, v in usage_delta.items()
                                              if v is not None)
                        usage = _anthropic_usage(told_usage)
                        told = True
                        progress.told = usage
                    elif kind == "message_stop":
                        done = True
                        break
                    elif kind == "error":
                        raise self._stream_error(msg.get("error") or {})
            if not done:
                raise RetryableProviderError("connection dropped: the stream ended before "
                                             "message_stop", provider=self.provider)
        except ProviderError as exc:
            if told:  # (paid for: counted by the caller)
                exc.usage = usage
            progress.mark(exc)  # (begun, so billed: what was not told is estimated)
            raise
        finished = []
        for _, block in sorted(blocks.items()):
            joined = "".join(block.pop("parts"))
            if block.get("type") == "text":
                block["text"] = joined
            elif block.get("type") == "thinking":
                block["thinking"] = str(block.get("thinking") or "") + joined
            elif block.get("type") == "tool_use":
                block["raw"] = joined
            finished.append(block)
        return self._reply(finished, usage=usage, model=model,
                           stop_reason=stop_reason, raw_id=raw_id,
                           output=output_schema is not None, usage_reported=bool(told_usage))

    def _stream_error(self, err: Mapping[str, Any]) -> RetryableProviderError | FatalProviderError:
        kind = str(err.get("type") or "api_error")
        message = str(err.get("message") or "error event in the stream")
        if kind in _RETRYABLE_TYPES:
            return RetryableProviderError(message, provider=self.provider, code=kind)
        if is_billing_error(0, message, kind):
            return ProviderBillingError(message, provider=self.provider, code=kind)
        return FatalProviderError(message, provider=self.provider, code=kind)


def _thinking(params: Mapping[str, Any]) -> bool:
    """Whether the request turns extended thinking on (``thinking={"type": "enabled",
    ...}``, or any kind but ``disabled``)."""
    thinking = params.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled")


#: Anthropic's extended-thinking content blocks.
_THINKING_BLOCKS = ("thinking", "redacted_thinking")


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    """A tool call from its input text; normalized so that ``chat`` and ``stream`` give
    equal calls for one answer."""
    call = ToolCall.parse(call_id, name, raw)
    if call.arguments is not None:
        return ToolCall(call_id, name, call.arguments,
                        json.dumps(call.arguments, ensure_ascii=False))
    return call


def _anthropic_usage(usage: Any) -> Usage:
    """The usage Anthropic told: ``cache_creation_input_tokens`` is all the prompt
    written to the cache, and ``cache_creation`` splits it by the cache's lifetime
    (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``), priced apart."""
    if not isinstance(usage, dict):
        return Usage()
    inp = sum(Usage.reported(usage.get(k), 0).input_tokens for k in
              ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    creation = usage.get("cache_creation")
    written_1h = creation.get("ephemeral_1h_input_tokens") if isinstance(
        creation, dict) else 0
    return Usage(inp, Usage.reported(0, usage.get("output_tokens")).output_tokens).cached(
        usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens"),
        written_1h)


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """User or tool content (a string or OpenAI content parts) as Anthropic blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            image = part.get("image_url")
            url = str(image.get("url", "") if isinstance(image, dict) else image or "")
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                blocks.append({"type": "image", "source": {
                    "type": "base64", "media_type": media_type, "data": data}})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        else:  # an Anthropic-native block (image, document...) passes through
            blocks.append(dict(part))
    return blocks


def _tool_use_input(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    parsed = _parse_json(raw) if isinstance(raw, str) and raw.strip() else {}
    # The API wants an object; keep arguments that were not one (from another provider)
    # visible to the model rather than dropping them.
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": raw}


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str | None,
                                                                 list[dict[str, Any]]]:
    """OpenAI-format messages as Anthropic's ``(system, messages)``.

    Raises:
        ConfigError: a message without a known role.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for i, msg in enumerate(messages):
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _as_text(content)
            if text:
                system.append(text)
        elif role == "user":
            add("user", _content_blocks(content))
        elif role == "assistant":
            # Thinking blocks first, unchanged (the API checks their signatures).
            blocks = [dict(b) for b in msg.get("reasoning") or []
                      if isinstance(b, dict) and b.get("type") in _THINKING_BLOCKS]
            blocks += [b for b in _content_blocks(content) if b.get("type") == "text"]
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"),
                               "name": fn.get("name"),
                               "input": _tool_use_input(fn.get("arguments"))})
            add("assistant", blocks)
        elif role == "tool":
            result: dict[str, Any] = {"type": "tool_result",
                                      "tool_use_id": msg.get("tool_call_id")}
            if isinstance(content, str):
                result["content"] = content
            else:
                result["content"] = _content_blocks(content)
            if msg.get("is_error"):
                result["is_error"] = True
            add("user", [result])
        else:
            raise ConfigError(f"message {i} has role {role!r}: expected system, developer, "
                              "user, assistant or tool")
    for turn in turns:
        if turn["role"] == "user":  # tool results first in a user turn, as the API requires
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
        if len(turn["content"]) == 1 and turn["content"][0].get("type") == "text":
            turn["content"] = turn["content"][0]["text"]
    return ("\n\n".join(system) if system else None), turns
