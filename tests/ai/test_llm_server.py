"""The scripted LLM server speaks both wire protocols, fails on cue, and records what it
received. Real HTTP over loopback: raw ``httpx`` requests, no client library."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import forked
from tether.testing import Fault, Outage, Reply, ScriptedLLMServer
from tether.testing.llm_server import RecordedRequest, load_script, parse_step, slow_stream

OPENAI_BODY: dict[str, Any] = {"model": "gpt-4.1-mini",
                               "messages": [{"role": "user", "content": "Hi"}]}
ANTHROPIC_BODY: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 100,
                                  "messages": [{"role": "user", "content": "Hi"}]}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def sse(text: str) -> list[tuple[str | None, Any]]:
    """``(event, parsed data)`` for each SSE event of a response body."""
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        raw = "\n".join(data)
        events.append((event, raw if raw == "[DONE]" else json.loads(raw)))
    return events


async def test_openai_reply_has_the_real_shape() -> None:
    """A text reply comes back as a chat.completion with choices, finish_reason, usage."""
    async with ScriptedLLMServer([Reply("Hello!", input_tokens=12, output_tokens=3)]) as server, \
            httpx.AsyncClient() as http:
        resp = await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-4.1-mini"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello!", "refusal": None,
                                 "annotations": []}
    assert choice["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens"] == 12
    assert data["usage"]["completion_tokens"] == 3
    assert data["usage"]["total_tokens"] == 15


async def test_openai_tool_call_arguments_are_a_json_string() -> None:
    """A scripted tool call becomes tool_calls with function.arguments as JSON text."""
    script = [Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}])]
    async with ScriptedLLMServer(script) as server, httpx.AsyncClient() as http:
        data = (await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}


async def test_openai_stream_is_sse_chunks_with_usage_and_done() -> None:
    """Streaming sends chat.completion.chunk deltas, tool-call deltas with an index, a
    usage chunk when asked, and [DONE]."""
    script = [Reply("one two three", tool_calls=[{"name": "f", "arguments": {"x": 1}}],
                    input_tokens=7, output_tokens=9)]
    body = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with ScriptedLLMServer(script) as server, httpx.AsyncClient() as http:
        resp = await http.post(server.base_url + "/chat/completions", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse(resp.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    arg_pieces = [tc["function"]["arguments"] for c in chunks if c["choices"]
                  for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert json.loads("".join(arg_pieces)) == {"x": 1}
    first_call = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"]
                      .get("tool_calls"))["choices"][0]["delta"]["tool_calls"][0]
    assert first_call["index"] == 0 and first_call["function"]["name"] == "f"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 7
    assert chunks[-1]["usage"]["completion_tokens"] == 9


async def test_anthropic_reply_has_the_real_shape() -> None:
    """A reply to /v1/messages is a message with content blocks, stop_reason and usage."""
    script = [Reply("Let me check.", tool_calls=[{"name": "weather", "arguments": {"c": 1}}],
                    input_tokens=20, output_tokens=8)]
    async with ScriptedLLMServer(script) as server, httpx.AsyncClient() as http:
        resp = await http.post(server.url + "/v1/messages", json=ANTHROPIC_BODY,
                               headers=ANTHROPIC_HEADERS)
    data = resp.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["id"].startswith("msg_")
    assert data["content"][0] == {"type": "text", "text": "Let me check."}
    tool_use = data["content"][1]
    assert tool_use["type"] == "tool_use" and tool_use["id"].startswith("toolu_")
    assert tool_use["name"] == "weather" and tool_use["input"] == {"c": 1}
    assert data["stop_reason"] == "tool_use"
    assert data["usage"]["input_tokens"] == 20 and data["usage"]["output_tokens"] == 8


async def test_anthropic_stream_has_the_real_event_sequence() -> None:
    """Streaming sends message_start, block start/delta/stop, message_delta, message_stop."""
    script = [Reply("Hi there", tool_calls=[{"name": "f", "arguments": {"a": "b"}}],
                    output_tokens=11, finish_reason=None)]
    async with ScriptedLLMServer(script) as server, httpx.AsyncClient() as http:
        resp = await http.post(server.url + "/v1/messages",
                               json={**ANTHROPIC_BODY, "stream": True},
                               headers=ANTHROPIC_HEADERS)
    events = sse(resp.text)
    names = [e for e, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == 2 == names.count("content_block_stop")
    deltas = [d["delta"] for e, d in events if e == "content_block_delta"]
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == "Hi there"
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == {"a": "b"}
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"]["output_tokens"] == 11


async def test_models_endpoint_lists_models_in_each_shape() -> None:
    """GET /v1/models answers OpenAI's list, or Anthropic's when anthropic-version is sent."""
    async with ScriptedLLMServer(models=["m1", "m2"]) as server, httpx.AsyncClient() as http:
        openai = (await http.get(server.base_url + "/models")).json()
        anthropic = (await http.get(server.base_url + "/models",
                                    headers=ANTHROPIC_HEADERS)).json()
    assert openai["object"] == "list" and [m["id"] for m in openai["data"]] == ["m1", "m2"]
    assert [m["id"] for m in anthropic["data"]] == ["m1", "m2"]
    assert anthropic["data"][0]["type"] == "model" and anthropic["has_more"] is False


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_http_faults_have_each_providers_error_shape(protocol: str) -> None:
    """429 carries Retry-After; 400 carries the scripted message; shapes are the real ones."""
    script = [Fault.rate_limit(retry_after=2), Fault.http(400, "max_tokens is too large"),
              Fault.http(503)]
    async with ScriptedLLMServer(script) as server, httpx.AsyncClient() as http:
        if protocol == "openai":
            url, body, headers = server.base_url + "/chat/completions", OPENAI_BODY, {}
        else:
            url, body, headers = server.url + "/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS
        r429, r400, r503 = [await http.post(url, json=body, headers=headers) for _ in range(3)]
    assert (r429.status_code, r400.status_code, r503.status_code) == (429, 400, 503)
    assert r429.headers["retry-after"] == "2"
    if protocol == "openai":
        assert r400.json()["error"]["message"] == "max_tokens is too large"
        assert r400.json()["error"]["type"] == "invalid_request_error"
        assert r429.json()["error"]["code"] == "rate_limit_exceeded"
    else:
        assert r400.json()["type"] == "error"
        assert r400.json()["error"] == {"type": "invalid_request_error",
                                        "message": "max_tokens is too large"}
        assert r429.json()["error"]["type"] == "rate_limit_error"
        assert r503.json()["error"]["type"] == "overloaded_error"


async def test_exhausted_script_answers_500_and_says_so() -> None:
    """A request beyond the script gets a clear 500, so a test notices the extra call."""
    async with ScriptedLLMServer([Reply("only one")]) as server, httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        assert (await http.post(url, json=OPENAI_BODY)).status_code == 200
        extra = await http.post(url, json=OPENAI_BODY)
    assert extra.status_code == 500
    assert "script exhausted" in extra.json()["error"]["message"]
    assert server.requests[-1].outcome == "exhausted"


async def test_times_repeats_a_step() -> None:
    """A step with times=N answers N requests."""
    async with ScriptedLLMServer([Fault.http(500, times=2), Reply("ok")]) as server, \
            httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        codes = [(await http.post(url, json=OPENAI_BODY)).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert [r.step for r in server.requests] == [0, 0, 1]
    assert server.remaining == 0


async def test_callable_steps_and_responder_see_the_request() -> None:
    """A callable step, and the responder after the script, answer from the request."""
    def echo(req: RecordedRequest) -> Reply:
        return Reply(f"you said {req.last_user_text()!r} to {req.protocol}")

    async def rate_limit_then_ok(req: RecordedRequest) -> dict[str, Any]:
        return {"status": 429, "retry_after": 1}

    async with ScriptedLLMServer([rate_limit_then_ok], responder=echo) as server, \
            httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        first = await http.post(url, json=OPENAI_BODY)
        second = await http.post(url, json=OPENAI_BODY)
        third = await http.post(server.url + "/v1/messages", json=ANTHROPIC_BODY,
                                headers=ANTHROPIC_HEADERS)
    assert first.status_code == 429
    assert second.json()["choices"][0]["message"]["content"] == "you said 'Hi' to openai"
    assert third.json()["content"][0]["text"] == "you said 'Hi' to anthropic"


async def test_a_raising_callable_step_is_reported() -> None:
    """A callable step that raises gets a 500 naming the exception, not a dropped socket."""
    def broken(req: RecordedRequest) -> Reply:
        raise KeyError("no such fixture")

    async with ScriptedLLMServer([broken]) as server, httpx.AsyncClient() as http:
        resp = await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)
    assert resp.status_code == 500
    assert "KeyError" in resp.json()["error"]["message"]
    assert server.requests[0].outcome == "step_error"


async def test_outage_window_after_first_request() -> None:
    """During an outage every chat request gets 503 without consuming steps; after it the
    script resumes."""
    outage = Outage(seconds=0.4, since="first_request", retry_after=1)
    now = [1000.0]  # the server's clock, moved by hand: no wall-clock race
    async with ScriptedLLMServer([Reply("back")], outage=outage,
                                 clock=lambda: now[0]) as server, httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        during = [await http.post(url, json=OPENAI_BODY) for _ in range(2)]
        now[0] += 0.45
        after = await http.post(url, json=OPENAI_BODY)
    assert [r.status_code for r in during] == [503, 503]
    assert during[0].headers["retry-after"] == "1"
    assert after.status_code == 200
    assert [r.outcome for r in server.requests] == ["outage", "outage", "reply"]


async def test_outage_window_since_start() -> None:
    """An outage counted from start is already running before the first request."""
    now = [1000.0]  # the server's clock, moved by hand: no wall-clock race
    async with ScriptedLLMServer([Reply("ok")], outage={"seconds": 0.3, "since": "start"},
                                 clock=lambda: now[0]) as server, httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        assert (await http.post(url, json=OPENAI_BODY)).status_code == 503
        now[0] += 0.31  # just past the window
        assert (await http.post(url, json=OPENAI_BODY)).status_code == 200


async def test_reset_closes_the_connection_without_a_response() -> None:
    """A reset fault cuts the connection; the next request is served normally."""
    async with ScriptedLLMServer([Fault.reset(), Reply("fine")]) as server, \
            httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.post(url, json=OPENAI_BODY)
        assert (await http.post(url, json=OPENAI_BODY)).status_code == 200
    assert server.requests[0].outcome == "fault:reset" and server.requests[0].status is None


async def test_hang_never_answers_until_the_client_gives_up() -> None:
    """A hang fault holds the request open; the client's timeout fires."""
    async with ScriptedLLMServer([Fault.hang()]) as server, \
            httpx.AsyncClient(timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):  # the client's 0.3 s, not an answer
            await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)
    assert server.requests[0].outcome == "fault:hang"


async def test_stop_cuts_a_hung_connection() -> None:
    """Stopping the server ends a request it is hanging on."""
    server = await ScriptedLLMServer([Fault.hang()]).start()
    async with httpx.AsyncClient(timeout=5) as http:
        request = asyncio.create_task(
            http.post(server.base_url + "/chat/completions", json=OPENAI_BODY))
        while not server.requests:
            await asyncio.sleep(0.01)
        await server.stop()
        with pytest.raises(httpx.TransportError):
            await request


async def test_slow_stream_delays_each_chunk() -> None:
    """slow_stream spaces the content chunks out."""
    async with ScriptedLLMServer([slow_stream("a b c d", chunk_delay=0.1)]) as server, \
            httpx.AsyncClient() as http:
        started = time.monotonic()
        resp = await http.post(server.base_url + "/chat/completions",
                               json={**OPENAI_BODY, "stream": True})
        elapsed = time.monotonic() - started
    assert elapsed >= 0.3  # sleeps never end early; no upper bound (the load decides it)
    assert resp.status_code == 200


async def test_request_log_records_headers_body_and_status() -> None:
    """Each request is recorded with its headers (Idempotency-Key), parsed body and the
    status given."""
    async with ScriptedLLMServer([Reply("x"), Fault.http(401, "bad key")]) as server, \
            httpx.AsyncClient() as http:
        url = server.base_url + "/chat/completions"
        await http.post(url, json=OPENAI_BODY, headers={"Idempotency-Key": "run1-step3"})
        await http.post(url, json=OPENAI_BODY)
        log = (await http.get(server.url + "/_tether/requests")).json()
    first, second = server.requests
    assert first.method == "POST" and first.path == "/v1/chat/completions"
    assert first.headers["idempotency-key"] == "run1-step3"
    assert first.body == OPENAI_BODY and first.model == "gpt-4.1-mini"
    assert first.status == 200 and second.status == 401
    assert first.time <= second.time
    assert [r["status"] for r in log] == [200, 401]
    assert log[0]["headers"]["idempotency-key"] == "run1-step3"


async def test_control_endpoint_replaces_and_appends_the_script() -> None:
    """POST /_tether/script replaces the rest of the script or appends to it."""
    async with ScriptedLLMServer([Reply("old")]) as server, httpx.AsyncClient() as http:
        ok = await http.post(server.url + "/_tether/script", json=[{"text": "new"}])
        assert ok.json() == {"ok": True, "remaining": 1}
        await http.post(server.url + "/_tether/script",
                        json={"mode": "append", "steps": [{"status": 503}]})
        url = server.base_url + "/chat/completions"
        texts = [await http.post(url, json=OPENAI_BODY) for _ in range(2)]
        bad = await http.post(server.url + "/_tether/script", json=[{"fault": "explode"}])
        cleared = await http.delete(server.url + "/_tether/requests")
    assert texts[0].json()["choices"][0]["message"]["content"] == "new"
    assert texts[1].status_code == 503
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    assert cleared.status_code == 200 and server.requests == []


async def test_strict_mode_rejects_what_the_real_apis_reject() -> None:
    """Orphan tool results, system roles in Anthropic messages and a missing max_tokens get
    400 with the real APIs' kind of message, and consume no step."""
    async with ScriptedLLMServer([Reply("ok")]) as server, httpx.AsyncClient() as http:
        orphan = {"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_9", "content": "42"}]}
        r1 = await http.post(server.base_url + "/chat/completions", json=orphan)
        unanswered = {"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": "y"}]}
        r2 = await http.post(server.base_url + "/chat/completions", json=unanswered)
        r3 = await http.post(server.url + "/v1/messages", headers=ANTHROPIC_HEADERS, json={
            **ANTHROPIC_BODY, "messages": [{"role": "system", "content": "x"}]})
        r4 = await http.post(server.url + "/v1/messages", headers=ANTHROPIC_HEADERS,
                             json={"model": "m", "messages": ANTHROPIC_BODY["messages"]})
        r5 = await http.post(server.url + "/v1/messages", headers=ANTHROPIC_HEADERS, json={
            **ANTHROPIC_BODY, "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": "no result"}]})
        r6 = await http.post(server.base_url + "/chat/completions", content=b"{not json")
    assert [r.status_code for r in (r1, r2, r3, r4, r5, r6)] == [400] * 6
    assert "preceeding message with 'tool_calls'" in r1.json()["error"]["message"]
    assert "c1" in r2.json()["error"]["message"]
    assert "top-level `system`" in r3.json()["error"]["message"]
    assert "max_tokens" in r4.json()["error"]["message"]
    assert "t1" in r5.json()["error"]["message"]
    assert server.remaining == 1


async def test_api_key_is_checked_per_protocol() -> None:
    """With api_key set, a request without it gets 401 in the provider's shape."""
    async with ScriptedLLMServer([Reply("ok")], api_key="sk-test") as server, \
            httpx.AsyncClient() as http:
        bad = await http.post(server.url + "/v1/messages", json=ANTHROPIC_BODY,
                              headers={**ANTHROPIC_HEADERS, "x-api-key": "wrong"})
        good = await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY,
                               headers={"Authorization": "Bearer sk-test"})
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
    assert good.status_code == 200


def test_json_script_format() -> None:
    """The JSON form maps onto Reply / Fault / Outage; unknown keys are refused."""
    steps, outage = load_script({"steps": [
        {"text": "hi", "input_tokens": 3},
        {"json": {"a": 1}},
        {"tool_calls": [{"name": "f", "arguments": "{bad"}], "times": 2},
        {"status": 429, "retry_after": 1.5},
        {"fault": "hang"}, {"fault": "reset"},
        {"fault": "slow_stream", "text": "x y", "chunk_delay": 0.2},
    ], "outage": {"seconds": 3}})
    assert steps[0] == Reply("hi", input_tokens=3)
    assert steps[1] == Reply('{"a": 1}')
    assert steps[2] == Reply(tool_calls=({"name": "f", "arguments": "{bad"},), times=2)
    assert steps[3] == Fault("status", 429, None, 1.5)
    assert steps[4] == Fault.hang() and steps[5] == Fault.reset()
    assert steps[6] == Reply("x y", chunk_delay=0.2)
    assert outage == Outage(3.0)
    with pytest.raises(ValueError, match="unknown keys"):
        parse_step({"text": "x", "colour": "red"})
    # An error in a 200 answer, and an answer without usage (both added 2026-12-06).
    assert parse_step({"fault": "error_body", "status": 402, "message": "no credit"}) \
        == Fault.error_body(402, "no credit")
    assert parse_step({"text": "hi", "no_usage": True}) == Reply("hi", no_usage=True)
    with pytest.raises(ValueError, match="status must be an HTTP error status"):
        parse_step({"fault": "error_body", "status": 200})


def test_subprocess_mode(tmp_path: Path) -> None:
    """``python -m tether.testing.llm_server`` prints its URL, serves the script, exposes
    the request log, and ends cleanly when its PID gets SIGTERM."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from a subprocess"}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.testing.llm_server", "--script", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"})
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with httpx.Client(timeout=5) as http:
            resp = http.post(base_url + "/chat/completions", json=OPENAI_BODY,
                             headers={"Idempotency-Key": "k-1"})
            assert resp.json()["choices"][0]["message"]["content"] == "from a subprocess"
            root = base_url.removesuffix("/v1")
            log = http.get(root + "/_tether/requests").json()
            assert len(log) == 1 and log[0]["headers"]["idempotency-key"] == "k-1"
            # The Responses API too (the Agents SDK's and pydantic-ai's default).
            http.post(root + "/_tether/script", json=[{"text": "responses too"}])
            resp = http.post(base_url + "/responses", json={"model": "gpt-4.1-mini",
                                                            "input": "hi"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["output"][-1]["content"][0]["text"] == "responses too"
            http.post(root + "/_tether/script", json=[{"status": 429, "retry_after": 3}])
            assert http.post(base_url + "/chat/completions", json=OPENAI_BODY).status_code == 429
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stderr == ""


def test_subprocess_mode_bad_invocations_are_one_line(tmp_path: Path) -> None:
    """A script file that cannot be read (exit 2) and a port already taken (exit 1) are
    one line on stderr, like a malformed script; both were a traceback."""
    import socket

    argv = [sys.executable, "-m", "tether.testing.llm_server"]
    missing = forked.run([*argv, "--script", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == f"bad script {tmp_path / 'nope.json'}: cannot read it: No such " \
                             "file or directory\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = forked.run([*argv, "--port", str(port)], capture_output=True, text=True,
                          timeout=60)
    assert busy.returncode == 1 and busy.stdout == ""
    assert busy.stderr.startswith(f"cannot listen on 127.0.0.1:{port}: ") \
        and "Traceback" not in busy.stderr and len(busy.stderr.splitlines()) == 1
