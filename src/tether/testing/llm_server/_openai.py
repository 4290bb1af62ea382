"""OpenAI Chat Completions as the scripted server speaks it: the request checks the
real API makes, responses and SSE chunks, error bodies, the model list."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tether.testing.llm_server._script import (
    RecordedRequest,
    Reply,
    chunks,
    finish_reason,
    raw_args,
    split_json,
    tool_calls,
    usage,
)

PATHS = ("/v1/chat/completions", "/chat/completions")
REQUEST_ID_HEADER = "x-request-id"

_ERROR_TYPES = {400: ("invalid_request_error", None),
                401: ("invalid_request_error", "invalid_api_key"),
                403: ("invalid_request_error", "model_not_available"),
                404: ("invalid_request_error", "model_not_found"),
                429: ("requests", "rate_limit_exceeded")}


def error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500
                                           else "invalid_request_error", None))
    if error_type is not None:  # (as insufficient_quota: the type and the code)
        kind = code = error_type
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


#: An account out of credit: its status, error type and message, as OpenAI sends them.
OUT_OF_CREDIT = (429, "insufficient_quota",
                 "You exceeded your current quota, please check your plan and billing "
                 "details. For more information on this error, read the docs: "
                 "https://platform.openai.com/docs/guides/error-codes/api-errors.")


def stream_error() -> str:
    """The SSE event of an error in the middle of a stream."""
    data = {"error": {"message": "The server had an error while processing your request.",
                      "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(data)}\n\n"


def models(names: Sequence[str]) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created,
                                        "owned_by": "tether"} for m in names]}


def _usage_dict(inp: int, out: int, cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def render(rec: RecordedRequest, reply: Reply, next_id: Callable[[str], str]) -> dict[str, Any]:
    """A non-streaming ``chat.completion``."""
    model = reply.model or rec.model or "unknown"
    inp, out = usage(rec, reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text,
                               "refusal": reply.refusal, "annotations": []}
    calls = tool_calls(reply, "call_", next_id)
    if calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function",
             "function": {"name": name, "arguments": raw_args({"arguments": args})}}
            for call_id, name, args in calls]
    answer = {"id": next_id("chatcmpl-"), "object": "chat.completion",
              "created": int(time.time()), "model": model,
              "choices": [{"index": 0, "message": message, "logprobs": None,
                           "finish_reason": finish_reason(reply)}],
              "usage": _usage_dict(inp, out, reply.cache_read_tokens),
              "service_tier": "default", "system_fingerprint": "fp_tether"}
    if reply.no_usage:
        del answer["usage"]
    return answer


def events(rec: RecordedRequest, reply: Reply,
           next_id: Callable[[str], str]) -> Iterable[tuple[str, str]]:
    """``(kind, SSE text)`` pairs; kind ``content`` marks the chunks that faults and
    delays count."""
    model = reply.model or rec.model or "unknown"
    include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage")
                         and not reply.no_usage)
    base = {"id": next_id("chatcmpl-"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_tether"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    yield "meta", chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in chunks(reply):
        yield "content", chunk({"content": piece})
    for piece in chunks(reply, refusal=True):  # (a refusal: content stays null)
        yield "content", chunk({"refusal": piece})
    for index, (call_id, name, args) in enumerate(tool_calls(reply, "call_", next_id)):
        yield "content", chunk({"tool_calls": [{
            "index": index, "id": call_id, "type": "function",
            "function": {"name": name, "arguments": ""}}]})
        for piece in split_json(raw_args({"arguments": args})):
            yield "content", chunk({"tool_calls": [{
                "index": index, "function": {"arguments": piece}}]})
    yield "meta", chunk({}, finish_reason(reply))
    if include_usage:
        inp, out = usage(rec, reply)
        usage_chunk = {**base, "choices": [], "usage": _usage_dict(inp, out,
                                                                   reply.cache_read_tokens)}
        yield "meta", f"data: {json.dumps(usage_chunk)}\n\n"
    yield "meta", "data: [DONE]\n\n"


def check(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a chat completions request, or ``None``."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    pending: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] must be an object"
        role = msg.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return (f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    f"'user', 'tool', 'function', and 'developer'. (messages[{i}].role)")
        if role != "tool" and pending:
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(pending)}")
        if role == "assistant":
            calls = msg.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"messages[{i}].tool_calls must be a non-empty array"
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if (not isinstance(fn, dict) or not isinstance(call.get("id"), str)
                            or call.get("type") != "function"
                            or not isinstance(fn.get("name"), str)
                            or not isinstance(fn.get("arguments"), str)):
                        return (f"messages[{i}].tool_calls: each call needs id, "
                                "type 'function' and function.name / function.arguments "
                                "(a string)")
                    pending.append(call["id"])
            elif msg.get("content") is None:
                return f"messages[{i}]: an assistant message needs content or tool_calls"
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id not in pending:
                return (f"Invalid parameter: messages with role 'tool' must be a response to a "
                        f"preceeding message with 'tool_calls' (messages[{i}].tool_call_id "
                        f"{call_id!r})")
            pending.remove(call_id)
        elif msg.get("content") is None:
            return f"messages[{i}].content is required for role '{role}'"
    if pending:
        return ("An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}")
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function"
                or not isinstance(fn, dict) or not isinstance(fn.get("name"), str)):
            return f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}"
    return None

