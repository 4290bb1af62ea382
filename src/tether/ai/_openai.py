"""OpenAI Chat Completions over plain HTTP (``httpx2``), for OpenAI and any compatible
endpoint (Azure, Ollama, vLLM, llama.cpp, ``tether.testing.llm_server``).

There is no hidden retry here: one call is one HTTP request. Every failure leaves as a
``RetryableProviderError`` (with ``retry_after``) or a ``FatalProviderError``, and the
durable step around the call owns the retry policy. ``docs/ai-providers.md`` says why
this is not the official SDK.

This module also holds ``_HTTPChat``, the transport both clients share: its
``httpx2.AsyncClient``s (one per 8 requests in flight), error translation at the
boundary, SSE reading.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import json
import logging
import os
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Self
from urllib.parse import urlsplit

try:
    import httpx2
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tether.ai's provider clients need httpx2: install tether[llm]") from exc

from tether.ai._accounting import StreamProgress
from tether.ai._errors import (
    ProviderBillingError,
    ProviderError,
    RetryableProviderError,
    error_for_status,
    error_in_answer,
    http_status_in_body,
    is_billing_error,
    is_error_body,
)
from tether.ai._types import (
    ChatReply,
    Message,
    OnChunk,
    ToolCall,
    ToolSpec,
    Usage,
    header_value,
)
from tether.errors import ConfigError

log = logging.getLogger("tether.ai")

__all__ = ["OpenAIChat"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)
#: Connections to the provider in all, as the OpenAI SDK's limit: an agent platform has
#: many calls in flight to one provider.
MAX_CONNECTIONS = 1000
#: Requests in flight on one ``httpx2.AsyncClient`` (one connection pool) before the
#: next request goes to another. httpcore2's pool visits every one of its connections
#: on each request and each release (~0.8 µs a connection): with one pool of 100
#: connections that was ~160-210 µs of a ~650 µs call at 100 calls in flight, and
#: grows with the concurrency. Each pool keeps all of its connections open between
#: calls (a connection closed after its answer costs the next call a TCP and TLS
#: handshake); they close after httpx2's 5 s keep-alive expiry.
REQUESTS_PER_POOL = 8
POOL_LIMITS = httpx2.Limits(max_connections=REQUESTS_PER_POOL,
                            max_keepalive_connections=REQUESTS_PER_POOL)
MAX_POOLS = MAX_CONNECTIONS // REQUESTS_PER_POOL


def _timeout(value: Any) -> httpx2.Timeout:
    """``timeout=`` as httpx2's: seconds, an ``httpx2.Timeout``, or another client's
    timeout object with the same four fields (an ``httpx.Timeout``)."""
    if isinstance(value, (int, float, httpx2.Timeout)):
        return httpx2.Timeout(value)
    try:
        return httpx2.Timeout(connect=value.connect, read=value.read, write=value.write,
                              pool=value.pool)
    except AttributeError:
        raise ConfigError(f"timeout must be seconds or an httpx2.Timeout, not "
                          f"{type(value).__name__}") from None


def _tls_context() -> ssl.SSLContext:
    """The TLS context of the process's chat clients, one per setting of the variables
    httpx2 reads to build it (``SSL_CERT_FILE``, ``SSL_CERT_DIR``; else the system's CA
    store, as the OpenAI SDK does).

    httpx2 builds a new context for each client unless given one, and building one loads
    the whole CA bundle: ~110 ms of CPU on a small machine, against ~5 ms for the rest
    of a client. A context is safe to share: it holds settings and trusted
    certificates, not connections.
    """
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx2.create_ssl_context()  # reads the same variables: they are the cache key


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _emit(on_chunk: OnChunk | None, text: str) -> None:
    if on_chunk is not None and text:
        result = on_chunk(text)
        if inspect.isawaitable(result):
            await result


class _HTTPChat:
    """The HTTP transport of a chat client: requests, error translation, SSE."""

    provider: str
    model: str

    def __init__(self, model: str, *, provider: str, base_url: str,
                 headers: Mapping[str, str], timeout: float | httpx2.Timeout | None) -> None:
        if not model:
            raise ConfigError(f"{provider}: a model name is required")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{provider}: base_url {base_url!r} is not an http(s) URL")
        self.model = model
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._timeout = DEFAULT_TIMEOUT if timeout is None else _timeout(timeout)
        self._client_headers = dict(headers)
        #: The connection pools, made as the requests in flight need them (the first
        #: now: a missing package or a bad TLS setting fails here), and how many
        #: requests each has in flight.
        self._pools = [self._new_pool()]
        self._in_flight = [0]

    def _new_pool(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base_url, headers=self._client_headers,
                                  timeout=self._timeout, verify=_tls_context(),
                                  limits=POOL_LIMITS)

    def _take(self) -> int:
        """The pool the next request goes to, counted as in flight until ``_done``: the
        one with fewest requests in flight (the first of them, so that calls one after
        another reuse one connection), or a new pool once each has
        ``REQUESTS_PER_POOL``. With ``MAX_POOLS`` full, the request waits in the least
        busy one for a connection (httpx2's pool timeout), as it waited for one of
        ``MAX_CONNECTIONS`` in a single pool."""
        busy = self._in_flight
        i = busy.index(min(busy))
        if busy[i] >= REQUESTS_PER_POOL and len(busy) < MAX_POOLS:
            self._pools.append(self._new_pool())
            busy.append(0)
            i = len(busy) - 1
        busy[i] += 1
        return i

    def _done(self, i: int) -> None:
        self._in_flight[i] -= 1

    async def aclose(self) -> None:
        """Close the connection pools. The client cannot be used afterwards."""
        for pool in self._pools:
            await pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def _body(self, messages: Sequence[Message], tools: Sequence[Any] | None,
              tool_choice: str | None, output_schema: Mapping[str, Any] | None,
              params: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def request_body(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                     tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     **params: Any) -> dict[str, Any]:
        """The JSON body ``chat`` sends for these arguments (``stream`` adds
        ``"stream": true``). Pure: use it to fingerprint a call.

        Raises:
            ConfigError: a bad tool or ``tool_choice``.
        """
        return self._body(messages, tools, tool_choice, output_schema, params)

    # -- errors -------------------------------------------------------------------------

    def _transport_error(self, exc: httpx2.HTTPError) -> ProviderError:
        """Translate an ``httpx2`` exception; all of them are worth retrying."""
        name = type(exc).__name__
        if isinstance(exc, httpx2.TimeoutException):
            message = f"request timed out ({name})"
        elif isinstance(exc, httpx2.ConnectError):
            message = f"cannot connect to {self.base_url} ({name}: {exc})"
        elif isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError,
                              httpx2.WriteError)):
            message = f"connection dropped ({name}: {exc or 'no detail'})"
        else:
            message = f"{name}: {exc}"
        return RetryableProviderError(message, provider=self.provider)

    def _response_error(self, resp: httpx2.Response) -> ProviderError:
        """The error for a non-2xx answer, with the provider's own message."""
        message, code, kind = _error_details(resp)
        request_id = resp.headers.get("x-request-id") or resp.headers.get("request-id")
        error = error_for_status(self.provider, resp.status_code, message, code=code,
                                 headers=resp.headers, request_id=request_id,
                                 error_type=kind)
        if resp.status_code in (401, 403):
            error.refused(self.base_url)
        return error

    def _bad_answer(self, what: str, resp: httpx2.Response | None = None) -> ProviderError:
        status = resp.status_code if resp is not None else None
        return RetryableProviderError(f"unexpected answer: {what}", provider=self.provider,
                                      status=status)

    # -- requests -----------------------------------------------------------------------

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": header_value(idempotency_key)} if idempotency_key else {}

    async def _post(self, path: str, body: Mapping[str, Any],
                    headers: Mapping[str, str]) -> dict[str, Any]:
        """POST JSON and return the JSON object answered.

        Raises:
            RetryableProviderError, FatalProviderError: see ``ChatClient``.
        """
        i = self._take()
        progress = StreamProgress()
        try:
            async with self._pools[i].stream("POST", path, json=body, headers=headers) as resp:
                progress.opened = resp.status_code < 300
                await resp.aread()
        except httpx2.HTTPError as exc:
            error = self._transport_error(exc)
            # An answer cut in its body was billed whole (the provider wrote it before
            # sending it): its prompt is estimated by the caller, its output unknown.
            progress.mark(error)
            raise error from exc
        finally:
            self._done(i)
        if resp.status_code >= 300:
            raise self._response_error(resp)
        try:
            data = resp.json()
        except ValueError as exc:
            raise self._bad_answer("the body is not JSON", resp) from exc
        if not isinstance(data, dict):
            raise self._bad_answer("the body is not a JSON object", resp)
        if is_error_body(data):
            raise self._error_in_answer(data, resp)
        return data

    def _error_in_answer(self, data: Mapping[str, Any], resp: httpx2.Response) -> ProviderError:
        """The error of a 2xx answer whose body is an error (``error_in_answer``)."""
        request_id = resp.headers.get("x-request-id") or resp.headers.get("request-id")
        return error_in_answer(self.provider, data, status=resp.status_code,
                               headers=resp.headers, request_id=request_id)

    async def _events(self, path: str, body: Mapping[str, Any],
                      headers: Mapping[str, str], progress: StreamProgress | None = None,
                      ) -> AsyncGenerator[tuple[str, str], None]:
        """POST JSON and yield the answer's server-sent events as ``(event, data)``
        (``event`` is ``"message"`` when the server names none). ``progress.opened`` is
        set once a 2xx answer began.

        Raises:
            RetryableProviderError, FatalProviderError: see ``ChatClient``.
        """
        i = self._take()
        try:
            async with self._pools[i].stream("POST", path, json=body, headers=headers) as resp:
                if resp.status_code >= 300:
                    await resp.aread()
                    raise self._response_error(resp)
                if resp.headers.get("content-type", "").startswith("application/json"):
                    # A JSON body where a stream was asked for: an error in a 200 answer
                    # (a gateway's), not a stream that ended before its first event.
                    await resp.aread()
                    try:
                        answer = resp.json()
                    except ValueError:
                        answer = None
                    if isinstance(answer, dict) and is_error_body(answer):
                        raise self._error_in_answer(answer, resp)
                    raise self._bad_answer("a JSON body where a stream was asked for: "
                                           f"{resp.text[:200]}", resp)
                if progress is not None:
                    progress.opened = True
                event = "message"
                data: list[str] = []
                async for line in resp.aiter_lines():
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
                if data:
                    yield event, "\n".join(data)
        except httpx2.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            self._done(i)


def _error_details(resp: httpx2.Response) -> tuple[str, str | None, str | None]:
    """The provider's error message, code (else type) and type from an error body, in
    either the OpenAI (``{"error": {"message", "type", "code"}}``) or the Anthropic
    (``{"type": "error", "error": {"type", "message"}}``) shape. (The type apart: OpenAI
    says an account is out of credit in the type, ``insufficient_quota``, whatever the
    code.)"""
    try:
        data = resp.json()
    except ValueError:
        text = resp.text.strip()
        return (text[:500] or resp.reason_phrase or f"HTTP {resp.status_code}"), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or resp.reason_phrase)
        kind = err.get("type")
        code = err.get("code") or kind
        return message, (str(code) if code else None), (str(kind) if kind else None)
    if isinstance(err, str):
        return err, None, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], None, None
    return (json.dumps(data)[:500], None, None)


def _in_stream_error(provider: str, err: Mapping[str, Any]) -> ProviderError:
    """The error of an error event inside a stream (the HTTP status was 200): retryable,
    but for an account out of credit (``ProviderBillingError``), and for one whose
    ``code`` is an HTTP status that retrying cannot fix (an OpenAI-compatible gateway's
    ``{"error": {"code": 400, ...}}`` before the first token)."""
    message = str(err.get("message") or "error in stream")
    code = err.get("code") or err.get("type")
    kind = err.get("type")
    named = str(code) if code else None
    if is_billing_error(0, message, named, str(kind) if kind else None):
        return ProviderBillingError(message, provider=provider, code=named)
    told = http_status_in_body(err.get("code"))
    if told is not None:
        return error_for_status(provider, told, message, code=str(kind) if kind else None,
                                error_type=str(kind) if kind else None)
    return RetryableProviderError(message, provider=provider, code=named)


def _parse_json(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _tools_and_choice(tools: Sequence[Any] | None,
                      tool_choice: str | None) -> tuple[list[ToolSpec], str | None]:
    specs = [ToolSpec.of(t) for t in tools or ()]
    if tool_choice is not None and tool_choice not in ("auto", "none", "required"):
        if tool_choice not in {s.name for s in specs}:
            raise ConfigError(f"tool_choice {tool_choice!r} is not 'auto', 'none', 'required' "
                              "or the name of a tool given")
    return specs, tool_choice


def openai_endpoint(*, base_url: str | None, api_key: str | None,
                    extra_headers: Mapping[str, str] | None, require_api_key: bool,
                    provider: str) -> tuple[str, dict[str, str]]:
    """The base URL and headers of an OpenAI-style endpoint (Chat Completions and
    Responses alike): arguments first, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

    Raises:
        ConfigError: no API key where one is needed (any non-loopback URL).
    """
    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key and require_api_key and not _is_loopback(url):
        raise ConfigError(
            f"{provider}: no API key: set the OPENAI_API_KEY environment variable or pass "
            f"api_key= (base_url {url})")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(extra_headers or {})
    return url, headers


class OpenAIChat(_HTTPChat):
    """A chat model behind the OpenAI Chat Completions API.

    Args:
        model: the model name (``"gpt-4.1-mini"``).
        base_url: default ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        api_key: default ``$OPENAI_API_KEY``; may be absent for a loopback ``base_url``
            or with ``require_api_key=False`` (local servers without auth).
        timeout: seconds for each of connect / read / write / pool (an
            ``httpx2.Timeout`` for finer control); default 600 s, connect 10 s.
        extra_headers: sent with every request (e.g. ``OpenAI-Organization``).
        provider: the name reported in replies and errors.

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
        body: dict[str, Any] = {"model": self.model,
                                "messages": [_outgoing(m) for m in messages]}
        specs, choice = _tools_and_choice(tools, tool_choice)
        if specs:
            body["tools"] = [s.to_openai() for s in specs]
        if choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        elif choice is not None:
            body["tool_choice"] = {"type": "function", "function": {"name": choice}}
        if output_schema is not None:
            name = str(output_schema.get("title") or "output")
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64],
                "schema": dict(output_schema)}}
        body.update(params)
        return body

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None,
                   output_schema: Mapping[str, Any] | None = None,
                   idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """One chat completion.

        Args:
            messages: the conversation, OpenAI chat format.
            tools: ``ToolSpec``s, ``Tool``s or tool dicts the model may call.
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a tool's name.
            output_schema: a JSON schema the answer must fit (``response_format``
                ``json_schema``); the reply's ``text`` is the JSON text.
            idempotency_key: sent as the ``Idempotency-Key`` header.
            params: more request fields (``temperature``, ``max_completion_tokens``...).

        Raises:
            RetryableProviderError, FatalProviderError: see ``ChatClient``.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        data = await self._post("chat/completions", body, self._headers(idempotency_key))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._bad_answer("no choices in the chat completion")
        message = choices[0].get("message") or {}
        calls = [ToolCall.parse(str(c.get("id", "")), str(c["function"].get("name", "")),
                                _as_text(c["function"].get("arguments")))
                 for c in message.get("tool_calls") or []
                 if isinstance(c, dict) and isinstance(c.get("function"), dict)]
        content = message.get("content")
        text = _as_text(content) if content is not None else None
        finish = str(choices[0].get("finish_reason") or "stop")
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal and not text:
            text, finish = _refused(refusal, finish)
        warn_no_usage_answered(self.provider, self.base_url, data.get("usage"))
        return ChatReply(
            text=text, tool_calls=calls, usage=_openai_usage(data.get("usage")),
            model=str(data.get("model") or self.model), finish_reason=finish,
            provider=self.provider, raw_id=str(data.get("id", "")),
            usage_reported=isinstance(data.get("usage"), dict))

    async def stream(self, messages: Sequence[Message], *, on_chunk: OnChunk | None = None,
                     tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                     output_schema: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **params: Any) -> ChatReply:
        """Like ``chat``, streamed: ``on_chunk`` receives each text delta as it arrives;
        the returned reply is the whole answer (text, tool calls, usage).

        Raises:
            RetryableProviderError: as ``chat``, and a stream that ends early.
            FatalProviderError: as ``chat``.
        """
        body = self._body(messages, tools, tool_choice, output_schema, params)
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
        text: list[str] = []
        refusal: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage()
        model, raw_id, finish, done, got_usage = self.model, "", None, False, False
        progress = StreamProgress()
        events = self._events("chat/completions", body, self._headers(idempotency_key),
                              progress)
        try:
            async with aclosing(events) as stream:
                async for _, data in stream:
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = _parse_json(data)
                    if not isinstance(chunk, dict):
                        raise self._bad_answer(f"a stream chunk is not a JSON object: {data[:200]}")
                    if isinstance(chunk.get("error"), dict):
                        raise _in_stream_error(self.provider, chunk["error"])
                    model = str(chunk.get("model") or model)
                    raw_id = str(chunk.get("id") or raw_id)
                    if chunk.get("usage"):
                        usage = _openai_usage(chunk["usage"])
                        got_usage = True
                        progress.told = usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece = delta.get("content")
                        if piece:
                            text.append(piece)
                            progress.chars += len(piece)
                            await _emit(on_chunk, piece)
                        piece = delta.get("refusal")
                        if isinstance(piece, str) and piece:
                            refusal.append(piece)
                            progress.chars += len(piece)
                            await _emit(on_chunk, piece)
                        for part in ("reasoning_content", "reasoning"):  # (compatible servers)
                            if isinstance(delta.get(part), str):
                                progress.chars += len(delta[part])
                        for tc in delta.get("tool_calls") or []:
                            entry = calls.setdefault(int(tc.get("index", len(calls))),
                                                     {"id": "", "name": "", "args": []})
                            fn = tc.get("function") or {}
                            entry["id"] = tc.get("id") or entry["id"]
                            entry["name"] = fn.get("name") or entry["name"]
                            if fn.get("arguments"):
                                entry["args"].append(fn["arguments"])
                                progress.chars += len(str(fn["arguments"]))
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            server = (self.provider, self.base_url)
            if got_usage:
                _USAGE_SENT.add(server)
            if not done and (finish is None
                             or (wants_usage and not got_usage and server in _USAGE_SENT)):
                # (Some compatible servers end a stream without "[DONE]". One that has
                # sent the usage asked for, which comes in a chunk after the finish
                # reason, and now ends without it dropped the connection before the
                # call's tokens were told; one that never sends it is taken at its
                # word, with a warning.)
                raise RetryableProviderError("connection dropped: the stream ended before "
                                             "its end", provider=self.provider)
        except ProviderError as exc:
            if got_usage:  # (told before the failure, so paid for: counted by the caller)
                exc.usage = usage
            progress.mark(exc)  # (begun, so billed, told or not: estimated by the caller)
            raise
        if wants_usage and not got_usage:
            _warn_no_usage(self.provider, self.base_url)
        answer = "".join(text) if text else None
        finish = finish or "stop"
        if refusal and not answer:
            answer, finish = _refused("".join(refusal), finish)
        return ChatReply(
            text=answer,
            tool_calls=[ToolCall.parse(c["id"], c["name"], "".join(c["args"]))
                        for _, c in sorted(calls.items())],
            usage=usage, model=model, finish_reason=finish,
            provider=self.provider, raw_id=raw_id, usage_reported=got_usage)


def _refused(refusal: str, finish: str) -> tuple[str, str]:
    """A refusal's reply text and finish reason: the model's refusal is the text (OpenAI
    sends it in ``refusal``, ``content`` null, with structured output or a safety
    refusal), and the reason ``content_filter``, as for Anthropic's ``stop_reason``
    ``refusal``. Read as ``content`` only, a refusal was an answer with no text and
    ``stop``: an agent ended with ``None``, structured output retried without the
    model's reason (2026-12-06)."""
    return refusal, ("content_filter" if finish == "stop" else finish)


def _outgoing(message: Message) -> Message:
    """A message as OpenAI accepts it (Tether's ``is_error`` on tool results is
    Anthropic-only, ``reasoning`` items are for the Responses API, and OpenAI refuses
    unknown fields)."""
    if "is_error" in message or "reasoning" in message:
        return {k: v for k, v in message.items() if k not in ("is_error", "reasoning")}
    return message


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return json.dumps(value)


#: The (provider, base URL) pairs already warned of streams without usage.
_NO_USAGE_TOLD: set[tuple[str, str]] = set()
#: The (provider, base URL) pairs that have sent a stream's usage, in this process.
_USAGE_SENT: set[tuple[str, str]] = set()


#: The (provider, base URL) pairs already warned of plain answers without usage.
_NO_USAGE_ANSWERED: set[tuple[str, str]] = set()


def _warn_no_usage(provider: str, base_url: str) -> None:
    """Warn once per server that its streams end without the usage they were asked for
    (``stream_options.include_usage``): their calls count no tokens and no cost."""
    if (provider, base_url) in _NO_USAGE_TOLD:
        return
    _NO_USAGE_TOLD.add((provider, base_url))
    log.warning("%s at %s ended a stream without the usage it was asked for "
                "(stream_options.include_usage): its streamed calls count no tokens and "
                "no cost, and budgets do not see them", provider, base_url)


def warn_no_usage_answered(provider: str, base_url: str, usage: Any) -> None:
    """Warn once per server that a plain (not streamed) answer came without its usage
    (no ``usage`` object): its call counts no tokens and no cost, and budgets do not
    see it. Until 2026-12-06 only streams said so; a plain answer was counted 0 without
    a word."""
    if isinstance(usage, dict) or (provider, base_url) in _NO_USAGE_ANSWERED:
        return
    _NO_USAGE_ANSWERED.add((provider, base_url))
    log.warning("%s at %s answered without the usage of the call (no \"usage\" in its "
                "answer): its calls count no tokens and no cost, and budgets do not see "
                "them", provider, base_url)


def _openai_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage.reported(usage.get("prompt_tokens"),
                          usage.get("completion_tokens")).cached(cached)

