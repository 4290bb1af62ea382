"""The provider-neutral shapes of a chat call: messages, tool specs, tool calls, usage
and the reply.

Messages are plain dicts in the OpenAI chat format, whatever the provider::

    {"role": "system", "content": "You are terse."}
    {"role": "user", "content": "Weather in Paris?"}
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}
    {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"}

The Anthropic client converts them (system messages to ``system``, tool results to
``tool_result`` blocks of a user turn, assistant ``tool_calls`` to ``tool_use`` blocks).
``ChatReply.to_message()`` gives the assistant message to append after a reply.

Every value here is JSON-serializable through ``to_dict()`` / ``from_dict()``, so a reply
can be journaled as a step result and restored on replay.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from tether.errors import ConfigError

if TYPE_CHECKING:
    from tether.ai._openai import OpenAIChat

__all__ = [
    "PROVIDERS",
    "ChatClient",
    "ChatReply",
    "Message",
    "OnChunk",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "chat_client",
    "parse_model_spec",
    "system_message",
    "tool_message",
    "user_message",
]

#: A chat message: a plain dict in the OpenAI chat format.
Message = dict[str, Any]

#: Receives each text delta of a streamed reply; may be sync or async.
OnChunk = Callable[[str], Awaitable[None] | None]

#: The provider prefixes ``parse_model_spec`` knows.
PROVIDERS = ("openai", "anthropic", "openai-compatible")

#: The ``max_tokens`` of an Anthropic request that gives none (its API requires one).
DEFAULT_MAX_TOKENS = 4096


def system_message(content: str) -> Message:
    return {"role": "system", "content": content}


def user_message(content: str) -> Message:
    return {"role": "user", "content": content}


def tool_message(tool_call_id: str, content: str) -> Message:
    """The result of a tool call, to send back to the model."""
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for.

    A model may write arguments that are not valid JSON (or not a JSON object). That
    does not raise: ``arguments`` is ``None``, ``raw_arguments`` keeps the text and
    ``parse_error`` says what is wrong, so an agent can hand the error back to the
    model.

    Attributes:
        id: the provider's id of the call, to quote in the tool result.
        name: the tool's name.
        arguments: the parsed arguments, or ``None`` if they could not be parsed.
        raw_arguments: the arguments as the model wrote them (JSON text).
        parse_error: why ``raw_arguments`` is not a JSON object, or ``None``.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str
    parse_error: str | None = None

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """A tool call from the model's argument text (empty text means no arguments)."""
        if not raw_arguments.strip():
            return cls(id, name, {}, raw_arguments)
        try:
            value = json.loads(raw_arguments)
        except ValueError as exc:
            return cls(id, name, None, raw_arguments, f"arguments are not valid JSON: {exc}")
        if not isinstance(value, dict):
            return cls(id, name, None, raw_arguments,
                       f"arguments are not a JSON object (got {type(value).__name__})")
        return cls(id, name, value, raw_arguments)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments,
                "raw_arguments": self.raw_arguments, "parse_error": self.parse_error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToolCall:
        return cls(id=d["id"], name=d["name"], arguments=d.get("arguments"),
                   raw_arguments=d.get("raw_arguments", ""), parse_error=d.get("parse_error"))

    def to_openai(self) -> dict[str, Any]:
        """This call as an entry of an assistant message's ``tool_calls``."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.raw_arguments}}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call consumed.

    ``input_tokens`` counts the whole prompt, cached parts included (for Anthropic, the
    sum of ``input_tokens``, ``cache_creation_input_tokens`` and
    ``cache_read_input_tokens``), so the figure means the same for every provider.

    ``cache_read_tokens`` and ``cache_write_tokens`` say how many of ``input_tokens``
    were read from the provider's prompt cache (OpenAI's
    ``prompt_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens``)
    and written to it (Anthropic's ``cache_creation_input_tokens``), which are priced
    apart (``Price``). Of ``cache_write_tokens``, ``cache_write_1h_tokens`` were written
    to Anthropic's 1-hour cache (``cache_creation.ephemeral_1h_input_tokens``; the rest
    to its 5-minute cache), which costs more (twice the input price, against 1.25
    times). They are in ``to_dict`` only when not 0, so a reply without them journals
    as it did.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cache_read_tokens + other.cache_read_tokens,
                     self.cache_write_tokens + other.cache_write_tokens,
                     self.cache_write_1h_tokens + other.cache_write_1h_tokens)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input_tokens": self.input_tokens,
                               "output_tokens": self.output_tokens}
        if self.cache_read_tokens:
            out["cache_read_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            out["cache_write_tokens"] = self.cache_write_tokens
        if self.cache_write_1h_tokens:
            out["cache_write_1h_tokens"] = self.cache_write_1h_tokens
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        return cls(int(d.get("input_tokens", 0)), int(d.get("output_tokens", 0)),
                   int(d.get("cache_read_tokens", 0)), int(d.get("cache_write_tokens", 0)),
                   int(d.get("cache_write_1h_tokens", 0)))

    @classmethod
    def reported(cls, input_tokens: Any, output_tokens: Any) -> Usage:
        """The usage a provider reported, each figure a token count: a number >= 0 (a
        fraction rounded down; at most ``MAX_REPORTED_TOKENS``), or a text of digits;
        anything else (``null``, a negative count, ``Infinity``, other text) counts 0.
        A figure read as it came raised in the step once the provider had answered
        (the call failed after it was paid, and was retried, and paid, without end),
        or took a negative count off the run's spending (its budget with it)."""
        return cls(_token_count(input_tokens), _token_count(output_tokens))

    def cached(self, read: Any, written: Any = 0, written_1h: Any = 0) -> Usage:
        """This usage with the prompt-cache figures a provider reported (each read as
        ``reported`` reads a count), bounded by ``input_tokens``: cached tokens are part
        of the prompt, so no report makes them more than it; and ``written_1h`` (of
        ``written``, those written to the 1-hour cache) by ``written``."""
        read_n = min(_token_count(read), self.input_tokens)
        write_n = min(_token_count(written), self.input_tokens - read_n)
        return Usage(self.input_tokens, self.output_tokens, read_n, write_n,
                     min(_token_count(written_1h), write_n))


#: The most tokens one reported figure counts: past any real call, and small enough that
#: its price is a finite float.
MAX_REPORTED_TOKENS = 2**53


def _token_count(value: Any) -> int:
    """``value`` as a count of tokens, 0 when it is none (see ``Usage.reported``)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    try:
        return min(max(0, int(value)), MAX_REPORTED_TOKENS)
    except (OverflowError, ValueError):  # an infinity, NaN
        return 0


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A model's answer to one chat call.

    Attributes:
        text: the text of the answer (with ``output_schema``: the JSON text), or ``None``.
        tool_calls: the tool calls the model asked for, in order.
        usage: tokens consumed.
        model: the model that answered, as the provider names it (often dated).
        finish_reason: in OpenAI's words whatever the provider: ``stop``,
            ``tool_calls``, ``length``, ``content_filter`` (others passed through).
        provider: the client's provider name.
        raw_id: the provider's id of the response.
        reasoning: the model's reasoning as the provider sent it (OpenAI Responses
            ``reasoning`` items, Anthropic ``thinking``/``redacted_thinking`` blocks with
            their signatures), to be sent back with the next request; kept
            in the journal and in the assistant message (key ``reasoning``, which the
            Chat Completions client leaves out of its requests).
        usage_reported: ``False`` when the provider answered without the usage of the
            call (no ``usage`` object): ``usage`` is then 0 tokens for want of a figure,
            not a count (the journal says ``"usage_reported": false``; a record without
            the key was reported, or predates it).
    """

    text: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "stop"
    provider: str = ""
    raw_id: str = ""
    reasoning: list[dict[str, Any]] = field(default_factory=list)
    usage_reported: bool = True

    def to_message(self) -> Message:
        """The assistant message to append to the conversation after this reply."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.reasoning:
            msg["reasoning"] = list(self.reasoning)
        return msg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text, "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": self.usage.to_dict(), "model": self.model,
            "finish_reason": self.finish_reason, "provider": self.provider,
            "raw_id": self.raw_id}
        if self.reasoning:
            out["reasoning"] = list(self.reasoning)
        if not self.usage_reported:
            out["usage_reported"] = False
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChatReply:
        return cls(text=d.get("text"),
                   tool_calls=[ToolCall.from_dict(c) for c in d.get("tool_calls", [])],
                   usage=Usage.from_dict(d.get("usage", {})), model=d.get("model", ""),
                   finish_reason=d.get("finish_reason", "stop"),
                   provider=d.get("provider", ""), raw_id=d.get("raw_id", ""),
                   reasoning=list(d.get("reasoning") or []),
                   usage_reported=d.get("usage_reported") is not False)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is told about it.

    Attributes:
        name: the name the model calls it by.
        description: what it does, for the model.
        parameters: JSON schema (``type: object``) of its arguments.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}})

    @classmethod
    def of(cls, tool: Any) -> ToolSpec:
        """A ``ToolSpec`` from a ``ToolSpec``, a ``tether.ai`` ``Tool`` (anything with
        ``name``, ``description``, ``parameters``), or a dict in neutral
        (``{"name", "description", "parameters"}``), OpenAI
        (``{"type": "function", "function": {...}}``) or Anthropic (``input_schema``)
        form.

        Raises:
            ConfigError: none of those.
        """
        if isinstance(tool, ToolSpec):
            return tool
        if isinstance(tool, Mapping):
            d: Mapping[str, Any] = tool
            if d.get("type") == "function" and isinstance(d.get("function"), Mapping):
                d = d["function"]
            if isinstance(d.get("name"), str):
                params = d.get("parameters", d.get("input_schema"))
                return cls(d["name"], str(d.get("description") or ""),
                           dict(params) if params is not None
                           else {"type": "object", "properties": {}})
        elif isinstance(getattr(tool, "name", None), str) and hasattr(tool, "parameters"):
            return cls(tool.name, str(getattr(tool, "description", "") or ""),
                       dict(tool.parameters))
        raise ConfigError(f"cannot use {tool!r} as a tool: expected a ToolSpec, a Tool, or a "
                          "dict with 'name' and 'parameters'")

    def to_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}

    def to_anthropic(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "input_schema": self.parameters}


class ChatClient(Protocol):
    """What ``OpenAIChat`` and ``AnthropicChat`` both are.

    Raises (both methods):
        RetryableProviderError: 408/409/429/5xx, timeout, connection refused, reset or
            dropped mid-response, a garbled answer.
        FatalProviderError: the provider refused the request (400/401/403/404/422...).
    """

    provider: str
    model: str

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None,
                   output_schema: Mapping[str, Any] | None = None,
                   idempotency_key: str | None = None, **params: Any) -> ChatReply: ...

    async def stream(self, messages: Sequence[Message], *, on_chunk: OnChunk | None = None,
                     tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **params: Any) -> ChatReply: ...

    def request_body(self, messages: Sequence[Message], *,
                     tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     **params: Any) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split ``"provider:model"`` (``"openai:gpt-4.1-mini"``) into its two parts.

    The split is at the first colon, so ``"openai-compatible:llama3.1:8b"`` keeps the
    tag in the model name.

    Raises:
        ConfigError: no prefix, an unknown one, or no model name.
    """
    known = ", ".join(PROVIDERS)
    provider, sep, model = spec.partition(":")
    if not sep:
        raise ConfigError(f"model {spec!r} names no provider: write 'provider:model', "
                          f"e.g. 'openai:gpt-4.1-mini' (providers: {known})")
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r} in model {spec!r} "
                          f"(known providers: {known})")
    if not model.strip():
        raise ConfigError(f"model {spec!r} names no model after {provider!r}:")
    return provider, model.strip()


def chat_client(spec: str, **options: Any) -> ChatClient:
    """The client for ``"provider:model"``; ``options`` go to its constructor.

    ``openai-compatible`` is ``OpenAIChat`` against ``base_url`` (Ollama, vLLM,
    llama.cpp, Azure...), which may run without an API key. ``api="responses"`` (OpenAI
    and compatible) uses the Responses API (``OpenAIResponses``) instead of Chat
    Completions.

    Raises:
        ConfigError: a bad spec, a missing API key or base URL.
    """
    provider, model = parse_model_spec(spec)
    if provider == "anthropic":
        from tether.ai._anthropic import AnthropicChat

        if options.pop("api", "messages") != "messages":
            raise ConfigError(f"model {spec!r}: Anthropic models take no api= option")
        return AnthropicChat(model, **options)
    from tether.ai._openai import OpenAIChat

    api = options.pop("api", "chat")
    if api not in ("chat", "responses"):
        raise ConfigError(f"model {spec!r}: api= must be 'chat' (Chat Completions) or "
                          f"'responses' (the Responses API), got {api!r}")
    if api == "responses":
        if provider == "openai-compatible":
            options.setdefault("require_api_key", False)
            options.setdefault("provider", "openai-compatible")
        from tether.ai._responses import OpenAIResponses

        return OpenAIResponses(model, **options)
    if provider == "openai-compatible":
        if not options.get("base_url"):
            raise ConfigError(f"model {spec!r}: an openai-compatible provider needs base_url=")
        options.setdefault("require_api_key", False)
        options.setdefault("provider", "openai-compatible")
    client: OpenAIChat = OpenAIChat(model, **options)
    return client


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: as it is if it is printable ASCII, else its
    UTF-8 percent-encoded (a run id may be any text, a header is ASCII: a run named in
    Greek failed every call with UnicodeEncodeError). The same text gives the same value
    on every retry, so it still de-duplicates."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=_HEADER_SAFE)


#: What ``header_value`` leaves as it is: visible ASCII but ``%`` (its escape).
_HEADER_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) != "%")
