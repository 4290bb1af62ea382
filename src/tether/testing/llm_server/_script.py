"""The script: replies, faults, outages, and the record of each request.

Shared by both providers: a step is rendered in the protocol of the request that takes
it (``_openai``, ``_anthropic``).
"""

from __future__ import annotations

import json as _json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_MODELS = ("gpt-4.1-mini", "gpt-4.1", "claude-sonnet-4-5", "claude-haiku-4-5")


class ScriptStep:
    """The common base of ``Reply`` and ``Fault``; a script takes only those two (and
    dicts and callables), never a bare ``ScriptStep``.

    It is there for type checkers: mypy types a list of both, ``[Fault.rate_limit(),
    Reply("hi")]``, as a list of their closest common base, which was ``object`` and
    which ``TestEnv(llm=...)`` and ``set_script`` refused (the example of
    docs/testing.md failed a user's ``mypy --strict``); it is now ``ScriptStep``.
    """

    __slots__ = ()


@dataclass(frozen=True)
class Reply(ScriptStep):
    """A scripted answer. See the package docstring for the meaning of each field.

    ``json=`` is a value whose JSON dump becomes the text (for output schemas); give
    ``text`` or ``json``, not both.
    """

    text: str | None = None
    tool_calls: Sequence[Mapping[str, Any]] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    finish_reason: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_words: int = 1
    reset_after_chunks: int | None = None
    error_after_chunks: int | None = None
    times: int = 1
    json: Any = field(default=None, compare=False, repr=False)
    refusal: str | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    no_usage: bool = False

    def __post_init__(self) -> None:
        if self.json is not None:
            if self.text is not None:
                raise ValueError("a Reply takes text or json, not both")
            object.__setattr__(self, "text", _json.dumps(self.json))
        for name in ("reset_after_chunks", "error_after_chunks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        _check_reply(self)


def _check_reply(reply: Reply) -> None:
    """A mistyped field is refused when the script is set (a script file: "bad
    script"): it was taken, and the request that met it got a dropped connection
    (RemoteProtocolError, retried as a transport error) and the server a traceback."""
    for name in ("text", "refusal", "model", "finish_reason"):
        value = getattr(reply, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Reply: {name} must be a string or None, got {value!r}")
    # Token counts may be amiss on purpose (negative, infinite: a provider's bad report,
    # which the client must survive); they must be numbers.
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens"):
        value = getattr(reply, name)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, float))):
            raise ValueError(f"Reply: {name} must be a number, got {value!r}")
    if isinstance(reply.chunk_words, bool) or not isinstance(reply.chunk_words, int):
        raise ValueError(f"Reply: chunk_words must be an integer, got {reply.chunk_words!r}")
    for name in ("delay", "chunk_delay"):
        value = getattr(reply, name)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise ValueError(f"Reply: {name} must be a finite number of seconds >= 0, "
                             f"got {value!r}")
    calls = reply.tool_calls
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise ValueError(f"Reply: tool_calls must be a list of {{\"name\", \"arguments\"}} "
                         f"objects, got {calls!r}")
    for i, call in enumerate(calls):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"Reply: tool_calls[{i}] must be an object with a string "
                             f"\"name\", got {call!r}")


FaultKind = Literal["status", "hang", "reset", "truncate", "out_of_credit", "error_body"]


@dataclass(frozen=True)
class Fault(ScriptStep):
    """A scripted failure: an HTTP error (``kind="status"``), or ``hang``, ``reset``,
    ``truncate``, ``out_of_credit``, ``error_body`` (the error of ``status`` in an HTTP
    200 answer). Build one with the class methods.

    ``error_type`` is the error's type in the body (OpenAI: its ``type`` and ``code``;
    Anthropic: its ``type``), in place of the one the status usually has."""

    kind: FaultKind = "status"
    status: int = 500
    message: str | None = None
    retry_after: float | str | None = None
    delay: float = 0.0
    times: int = 1
    error_type: str | None = None

    def __post_init__(self) -> None:
        if self.kind in ("status", "error_body"):
            _error_status(self.status, "Fault.http" if self.kind == "status"
                          else "Fault.error_body")

    @classmethod
    def http(cls, status: int, message: str | None = None, *,
             retry_after: float | str | None = None, times: int = 1,
             error_type: str | None = None) -> Fault:
        return cls("status", status, message, retry_after, times=times,
                   error_type=error_type)

    @classmethod
    def out_of_credit(cls, *, times: int = 1) -> Fault:
        """The provider's answer to an account out of credit: OpenAI's HTTP 429
        ``insufficient_quota`` ("You exceeded your current quota..."), Anthropic's HTTP
        402 ``billing_error``."""
        return cls("out_of_credit", 0, times=times)

    @classmethod
    def error_body(cls, status: int = 400, message: str | None = None, *, times: int = 1,
                   error_type: str | None = None) -> Fault:
        """An HTTP **200** whose body is the provider's error for ``status``, as
        OpenAI-compatible gateways answer a provider's failure (OpenAI's shape with the
        status as its ``code``: ``{"error": {"message", "type", "code": 400}}``;
        Anthropic's ``{"type": "error", "error": {...}}``); a streamed request gets it
        as the stream's one event."""
        return cls("error_body", status, message, times=times, error_type=error_type)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 1.0, message: str | None = None,
                   *, times: int = 1) -> Fault:
        return cls("status", 429, message, retry_after, times=times)

    @classmethod
    def hang(cls, *, times: int = 1) -> Fault:
        return cls("hang", times=times)

    @classmethod
    def reset(cls, *, times: int = 1) -> Fault:
        return cls("reset", times=times)

    @classmethod
    def truncate(cls, *, times: int = 1) -> Fault:
        return cls("truncate", times=times)


def _error_status(status: object, what: str) -> None:
    """An HTTP error status, 400-599: a 200 sent an error body as a success, and a 0 or
    a negative one a response no client could read (``RemoteProtocolError``)."""
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"{what}: status must be an HTTP error status (400-599), "
                         f"got {status!r}")


def slow_stream(text: str, chunk_delay: float = 0.1, **kwargs: Any) -> Reply:
    """A reply streamed one word every ``chunk_delay`` seconds."""
    return Reply(text, chunk_delay=chunk_delay, **kwargs)


@dataclass(frozen=True)
class Outage:
    """Answer ``status`` to every chat request for ``seconds`` after the server started
    (``since="start"``) or after the first chat request (``since="first_request"``)."""

    seconds: float
    since: Literal["start", "first_request"] = "first_request"
    status: int = 503
    retry_after: float | str | None = None

    def __post_init__(self) -> None:
        _error_status(self.status, "Outage")
        if (isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float))
                or not math.isfinite(self.seconds) or self.seconds < 0):
            raise ValueError(f"Outage: seconds must be a finite number >= 0, "
                             f"got {self.seconds!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outage:
        since = d.get("since", "first_request")
        if since not in ("start", "first_request"):
            raise ValueError(f"outage.since must be 'start' or 'first_request', not {since!r}")
        return cls(float(d["seconds"]), since, int(d.get("status", 503)), d.get("retry_after"))


@dataclass
class RecordedRequest:
    """One request the server received, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    protocol: str = ""
    status: int | None = None
    outcome: str = ""
    step: int | None = None
    #: The request's query string (without ``?``), where the server records it.
    query: str = ""

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    def last_user_text(self) -> str:
        """The text of the last user message (either protocol), or ``""``."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        for msg in reversed(messages or []):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return text_of(msg.get("content"))
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers,
                "body": self.body, "time": self.time, "protocol": self.protocol,
                "status": self.status, "outcome": self.outcome, "step": self.step,
                "query": self.query}


StepLike = Reply | Fault | ScriptStep | Mapping[str, Any]
Step = StepLike | Callable[[RecordedRequest], StepLike | Awaitable[StepLike]]


def parse_step(d: Mapping[str, Any]) -> Reply | Fault:
    """A step from its JSON form (see the module docstring).

    Raises:
        ValueError: unknown keys or an unknown fault.
    """
    d = dict(d)
    times = int(d.pop("times", 1))
    fault = d.pop("fault", None)
    if fault == "slow_stream":
        d.setdefault("chunk_delay", 0.1)
        fault = None
    if fault == "error_body":
        _no_extra(d, {"status", "message", "delay", "error_type"}, "fault 'error_body'")
        return Fault("error_body", int(d.get("status", 400)), d.get("message"),
                     delay=float(d.get("delay", 0.0)), times=times,
                     error_type=d.get("error_type"))
    if fault is not None:
        if fault not in ("hang", "reset", "truncate", "out_of_credit"):
            raise ValueError(f"unknown fault {fault!r} (hang, reset, truncate, out_of_credit, "
                             "error_body, slow_stream)")
        _no_extra(d, {"delay"}, f"fault {fault!r}")
        return Fault(fault, 0 if fault == "out_of_credit" else 500,
                     delay=float(d.get("delay", 0.0)), times=times)
    if "status" in d:
        _no_extra(d, {"status", "message", "retry_after", "delay", "error_type"},
                  "an HTTP fault")
        return Fault("status", int(d["status"]), d.get("message"), d.get("retry_after"),
                     float(d.get("delay", 0.0)), times, d.get("error_type"))
    known = {f for f in Reply.__dataclass_fields__ if f != "times"}
    _no_extra(d, known, "a reply")
    if "tool_calls" in d:
        d["tool_calls"] = tuple(d["tool_calls"])
    return Reply(**d, times=times)


def _no_extra(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise ValueError(f"unknown keys for {what}: {', '.join(sorted(extra))} "
                         f"(allowed: {', '.join(sorted(allowed))})")


def load_script(data: Any) -> tuple[list[Reply | Fault], Outage | None]:
    """Steps and outage from the JSON form (a list, or ``{"steps", "outage"}``)."""
    outage = None
    if isinstance(data, Mapping):
        if data.get("outage") is not None:
            outage = Outage.from_dict(data["outage"])
        data = data.get("steps", [])
    if not isinstance(data, list):
        raise ValueError("a script is a JSON list of steps, or {\"steps\": [...]}")
    return [parse_step(s) for s in data], outage



def usage(rec: RecordedRequest, reply: Reply) -> tuple[int, int]:
    """(input, output) tokens of a reply: the scripted counts, else an estimate of about
    4 characters per token."""
    body = rec.body
    inp = reply.input_tokens
    if inp is None:
        prompt = _json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
        inp = max(1, len(prompt) // 4)
    out = reply.output_tokens
    if out is None:
        size = len(reply.text or reply.refusal or "") + sum(
            len(raw_args(c)) + len(str(c.get("name", ""))) for c in reply.tool_calls)
        out = max(1, size // 4)
    return inp, out


def tool_calls(reply: Reply, prefix: str,
               next_id: Callable[[str], str]) -> list[tuple[str, str, Any]]:
    """``(id, name, arguments)`` of a reply's tool calls; ids drawn when not scripted."""
    return [(str(c.get("id") or next_id(prefix)), str(c["name"]), c.get("arguments", {}))
            for c in reply.tool_calls]


def finish_reason(reply: Reply) -> str:
    """The OpenAI-style reason (``stop``, ``tool_calls``, ``length``)."""
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def chunks(reply: Reply, *, refusal: bool = False) -> list[str]:
    """The stream pieces of the reply's text (its refusal with ``refusal=True``)."""
    text = reply.refusal if refusal else reply.text
    if not text:
        return []
    words = re.findall(r"\S+\s*|\s+", text)
    size = max(1, reply.chunk_words)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


def split_json(raw: str) -> list[str]:
    """Argument text in small pieces, as providers stream it."""
    if not raw:
        return []
    step = max(4, math.ceil(len(raw) / 4))
    return [raw[i:i + step] for i in range(0, len(raw), step)]


def raw_args(call: Mapping[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else _json.dumps(args)


def json_input(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return _json.loads(args)
        except ValueError:
            return args  # not what Anthropic would send; lets a client's guard be tested
    return args


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content
                       if isinstance(b, dict) and b.get("type") == "text")
    return ""

