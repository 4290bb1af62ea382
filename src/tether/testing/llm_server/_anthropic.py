"""Anthropic Messages as the scripted server speaks it: the request checks the real
API makes, responses and SSE events, error bodies, the model list."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tether.testing.llm_server._script import (
    RecordedRequest,
    Reply,
    chunks,
    finish_reason,
    json_input,
    split_json,
    tool_calls,
    usage,
)

PATHS = ("/v1/messages", "/messages")
REQUEST_ID_HEADER = "request-id"

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                402: "billing_error", 403: "permission_error", 404: "not_found_error",
                409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error",
                500: "api_error", 504: "timeout_error", 529: "overloaded_error",
                503: "overloaded_error"}


def error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    kind = error_type or _ERROR_TYPES.get(status, "api_error" if status >= 500
                                          else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}"}


#: An account out of credit: its status, error type and message (the documented 402
#: ``billing_error``; before it, Anthropic answered 400 ``invalid_request_error``, "Your
#: credit balance is too low to access the Anthropic API...", which ``Fault.http(400,
#: ...)`` gives).
OUT_OF_CREDIT = (402, "billing_error",
                 "Your credit balance is too low to access the Anthropic API. Please go to "
                 "Plans & Billing to upgrade or purchase credits.")


def stream_error() -> str:
    """The SSE event of an error in the middle of a stream."""
    data = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


def models(names: Sequence[str]) -> dict[str, Any]:
    return {"data": [{"type": "model", "id": m, "display_name": m,
                      "created_at": "2025-01-01T00:00:00Z"} for m in names],
            "has_more": False, "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None}


def stop_reason(reply: Reply) -> str:
    if reply.refusal is not None and not reply.finish_reason:
        return "refusal"
    reason = finish_reason(reply)
    return {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}.get(reason,
                                                                                       reason)


def _usage(reply: Reply, inp: int, out: int) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` are the prompt's tokens not read from or
    written to the cache (the scripted input count is the whole prompt);
    ``cache_creation`` splits the written ones by the cache's lifetime (of
    ``cache_write_tokens``, ``cache_write_1h_tokens`` to the 1-hour cache)."""
    read, written = reply.cache_read_tokens, reply.cache_write_tokens
    written_1h = min(reply.cache_write_1h_tokens, written)
    return {"input_tokens": max(0, inp - read - written), "output_tokens": out,
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written - written_1h,
                               "ephemeral_1h_input_tokens": written_1h}}


def render(rec: RecordedRequest, reply: Reply, next_id: Callable[[str], str]) -> dict[str, Any]:
    """A non-streaming ``message``."""
    model = reply.model or rec.model or "unknown"
    inp, out = usage(rec, reply)
    content: list[dict[str, Any]] = []
    if isinstance(rec.body, dict) and rec.body.get("compaction") is not None:
        # On-demand compaction (the ``compaction`` parameter): the reply's text is the
        # summary, in a ``compaction`` block.
        content.append({"type": "compaction", "content": reply.text,
                        "signature": next_id("sig_")})
    elif reply.text or reply.refusal:  # (a refusal is text, with stop_reason "refusal")
        content.append({"type": "text", "text": reply.text or reply.refusal})
    for call_id, name, args in tool_calls(reply, "toolu_", next_id):
        content.append({"type": "tool_use", "id": call_id, "name": name,
                        "input": json_input(args)})
    return {"id": next_id("msg_"), "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop_reason(reply),
            "stop_sequence": None,
            "usage": _usage(reply, inp, out)}


def events(rec: RecordedRequest, reply: Reply,
           next_id: Callable[[str], str]) -> Iterable[tuple[str, str]]:
    """``(kind, SSE text)`` pairs; kind ``content`` marks the chunks that faults and
    delays count."""
    model = reply.model or rec.model or "unknown"
    inp, out = usage(rec, reply)

    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

    yield "meta", event("message_start", {"message": {
        "id": next_id("msg_"), "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": _usage(reply, inp, 1)}})
    index = 0
    if isinstance(rec.body, dict) and rec.body.get("compaction") is not None:
        # On-demand compaction: the summary in one ``compaction_delta``, as the API
        # sends it.
        yield "meta", event("content_block_start", {"index": index, "content_block": {
            "type": "compaction", "content": None, "signature": next_id("sig_")}})
        yield "content", event("content_block_delta", {"index": index, "delta": {
            "type": "compaction_delta", "content": reply.text, "encrypted_content": None}})
        yield "meta", event("content_block_stop", {"index": index})
    elif reply.text or reply.refusal:
        yield "meta", event("content_block_start", {
            "index": index, "content_block": {"type": "text", "text": ""}})
        yield "meta", event("ping", {})
        for piece in chunks(reply, refusal=not reply.text):
            yield "content", event("content_block_delta", {
                "index": index, "delta": {"type": "text_delta", "text": piece}})
        yield "meta", event("content_block_stop", {"index": index})
        index += 1
    for call_id, name, args in tool_calls(reply, "toolu_", next_id):
        yield "content", event("content_block_start", {"index": index, "content_block": {
            "type": "tool_use", "id": call_id, "name": name, "input": {}}})
        raw = args if isinstance(args, str) else json.dumps(args)
        for piece in split_json(raw):
            yield "content", event("content_block_delta", {
                "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})
        yield "meta", event("content_block_stop", {"index": index})
        index += 1
    yield "meta", event("message_delta", {
        "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": out}})
    yield "meta", event("message_stop", {})


def check(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a messages request, or ``None``."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or a list of text blocks"
    previous_tool_uses: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i}: Input should be an object"
        role = msg.get("role")
        if role not in ("user", "assistant"):
            return (f"messages.{i}.role: Unexpected role \"{role}\". The Messages API accepts "
                    "a top-level `system` parameter, not \"system\" as an input message role.")
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a valid string or list"
        results = set()
        uses = set()
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    return f"messages.{i}.content.{j}: text content blocks must be non-empty"
            elif kind == "tool_use":
                if role != "assistant":
                    return f"messages.{i}.content.{j}: tool_use blocks belong to the assistant"
                if not isinstance(block.get("input"), dict):
                    return f"messages.{i}.content.{j}.input: Input should be a valid dictionary"
                uses.add(str(block.get("id")))
            elif kind == "tool_result":
                if role != "user":
                    return f"messages.{i}.content.{j}: tool_result blocks belong to the user"
                results.add(str(block.get("tool_use_id")))
            elif kind not in ("image", "document", "thinking", "redacted_thinking",
                              "compaction"):
                return f"messages.{i}.content.{j}.type: unknown content block type {kind!r}"
        unexpected = results - previous_tool_uses
        if unexpected:
            return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {', '.join(sorted(unexpected))}. Each `tool_result` block must "
                    "have a corresponding `tool_use` block in the previous message.")
        missing = previous_tool_uses - results
        if missing:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message.")
        previous_tool_uses = uses
    for i, tool in enumerate(body.get("tools") or []):
        if (not isinstance(tool, dict) or not isinstance(tool.get("name"), str)
                or not isinstance(tool.get("input_schema"), dict)
                or tool["input_schema"].get("type") != "object"):
            return f"tools.{i}: a tool needs a name and an input_schema of type 'object'"
    thinking = body.get("thinking")
    choice = body.get("tool_choice")
    if (isinstance(thinking, dict) and thinking.get("type") == "enabled"
            and isinstance(choice, dict) and choice.get("type") in ("any", "tool")):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None

