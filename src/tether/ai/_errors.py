"""Errors of the LLM provider clients, and the rule that says which ones to retry.

```
TetherError
└── ProviderError                 (provider, status, message, code, request_id)
    ├── RetryableProviderError    (retry_after): 408, 409, 429, 5xx, timeouts, refused,
    │                             reset or dropped connections, a garbled response
    └── FatalProviderError        (also a NonRetryable): 400, 401, 403, 404, 413, 422, ...
        └── ProviderBillingError  out of credit: OpenAI's 429 insufficient_quota,
                                  Anthropic's 402 billing_error or 400 "credit balance"
ConfigError
└── ProviderConfigError           (also a NonRetryable): no API key, a bad base URL
```

The clients translate every ``httpx`` exception and every non-2xx answer into one of
these at the boundary, so the code above them (the durable ``LLM`` step) decides with
one ``isinstance`` and never sees ``httpx``. A ``FatalProviderError`` is also a
``tether.NonRetryable``, so a step that lets it escape fails at once under any retry
policy; a ``RetryableProviderError`` is retried by the step's policy, and its
``retry_after`` (from the provider's ``Retry-After`` header) says how long the provider
asked us to wait.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

from tether.errors import ConfigError, NonRetryable, TetherError

__all__ = [
    "BILLING_CODES",
    "FatalProviderError",
    "ProviderBillingError",
    "ProviderConfigError",
    "ProviderError",
    "RetryableProviderError",
    "error_for_status",
    "error_in_answer",
    "http_status_in_body",
    "is_billing_error",
    "is_error_body",
    "is_retryable_status",
    "parse_retry_after",
    "status_in_error_body",
]


class ProviderError(TetherError):
    """An LLM provider call failed.

    Attributes:
        provider: ``"openai"``, ``"anthropic"``, ... (the client's provider name).
        status: the HTTP status, or ``None`` when no response arrived.
        message: the provider's own error message (or what went wrong on the wire).
        code: the provider's error type or code (``"rate_limit_error"``,
            ``"invalid_api_key"``), when it sent one.
        request_id: the provider's request id header, for its support desk.
        usage: what the provider reported as used before the call failed (a stream cut
            after its usage was told: Anthropic tells a stream's input tokens in its
            first event), or ``None``; it was paid, so it is counted (``LLM``).
        delivered: for a stream the provider had accepted (a 2xx answer began) and that
            then failed (cut, an error event, ended early): the characters of answer it
            delivered before (text, tool-call arguments, reasoning), 0 if none; ``None``
            when no answer began (refused, reset before an answer, an error status),
            which providers do not bill. A stream that began was billed its prompt and
            the output so far, told or not: ``LLM`` counts an estimate of what was not
            told (``tether.ai._accounting.cut_usage``). A plain (not streamed) answer
            whose body was cut says 0: it was billed whole, and its prompt is counted.
        refused_by: for a 401 or 403, the base URL of the endpoint that refused the
            call's credentials (said in the error's text), else ``None``.
    """

    __module__ = "tether.ai"

    #: (Set on the error after it is made: ``Usage | None``.)
    usage: Any = None
    #: (Set on the error after it is made: ``int | None``.)
    delivered: int | None = None
    #: The endpoint that refused the call's credentials (a 401 or 403), said in the
    #: error's text: ``(refused by https://api.openai.com/v1)``. Set with ``refused``.
    refused_by: str | None = None

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 code: str | None = None, request_id: str | None = None) -> None:
        self.message = message
        self.provider = provider
        self.status = status
        self.code = code
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        code = f" ({self.code})" if self.code else ""
        refused = f" (refused by {self.refused_by})" if self.refused_by else ""
        # The request id is what the provider's support asks for; the journal keeps an
        # error's type and message only, so it goes in the message.
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.provider}: {where}{code}: {self.message}{refused}{request}"

    def refused(self, base_url: str) -> None:
        """Say in the error's text that ``base_url`` refused the call's credentials
        (which endpoint: a key meant for another, a base URL left at the provider's
        where a proxy or a test's server was meant)."""
        self.refused_by = base_url
        self.args = (self._describe(),)


class RetryableProviderError(ProviderError):
    """A provider call failed in a way that trying again later may fix.

    Attributes:
        retry_after: seconds the provider asked us to wait (``Retry-After``), or ``None``.
    """

    __module__ = "tether.ai"

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 code: str | None = None, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status=status, code=code,
                         request_id=request_id)

    def _describe(self) -> str:
        text = super()._describe()
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        return text


class FatalProviderError(ProviderError, NonRetryable):
    """A provider refused the call for a reason that retrying cannot fix (bad request,
    bad key, no such model). The provider's message says what to change."""

    __module__ = "tether.ai"

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message, provider=provider, status=status, code=code,
                         request_id=request_id)
        self.data: Any = {"provider": provider, "status": status, "code": code}


class ProviderBillingError(FatalProviderError):
    """The provider refused the call because the account is out of credit or over its
    spending limit: OpenAI's HTTP 429 with the type or code ``insufficient_quota`` (or
    ``credit_balance_exhausted``), Anthropic's HTTP 402 ``billing_error``, or its 400
    "Your credit balance is too low". Retrying cannot fix it until a person adds
    credit, so it is fatal: OpenAI's answer is a 429, which was retried as a rate
    limit, for as long as the step's retry policy allowed (days), without a word.

    Its text says so after the provider's message and request id: ``openai: HTTP 429
    (insufficient_quota): You exceeded your current quota, ... [request req_...]: the
    openai account is out of credit or over its spending limit: add credit or check
    the plan and billing (https://platform.openai.com/settings/organization/billing);
    not retried``.
    """

    __module__ = "tether.ai"

    def _describe(self) -> str:
        page = _BILLING_PAGES.get(self.provider)
        where = f" ({page})" if page else ""
        return (f"{super()._describe()}: the {self.provider} account is out of credit or "
                f"over its spending limit: add credit or check the plan and billing{where}; "
                "not retried")


#: The error types and codes that say an account is out of credit or over its spending
#: limit: OpenAI's ``insufficient_quota`` (its type, and its code until the code became
#: ``credit_balance_exhausted``) and Anthropic's ``billing_error``.
BILLING_CODES = frozenset({"insufficient_quota", "credit_balance_exhausted", "billing_error"})

#: Where each provider's account takes credit.
_BILLING_PAGES = {"openai": "https://platform.openai.com/settings/organization/billing",
                  "anthropic": "https://console.anthropic.com/settings/billing"}


def is_billing_error(status: int, message: str, code: str | None = None,
                     error_type: str | None = None) -> bool:
    """Whether an error answer says the account is out of credit: HTTP 402 (Payment
    Required), a type or code of ``BILLING_CODES``, or a 400 whose message says the
    credit balance is too low (Anthropic's answer before its 402)."""
    return (status == 402 or code in BILLING_CODES or error_type in BILLING_CODES
            or (status == 400 and "credit balance is too low" in message.lower()))


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 409, 429 and every 5xx
    (Anthropic's 529 "overloaded" included)."""
    return status in (408, 409, 429) or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI), or ``retry-after`` as seconds
    or as an HTTP-date. ``None`` when absent or unreadable; never negative.

    ``headers`` is looked up with lower-case names (``httpx.Headers`` is case-blind).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT by definition
            return None
        value = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(value):
        return None
    return max(value, 0.0)


def error_for_status(provider: str, status: int, message: str, *, code: str | None = None,
                     headers: Mapping[str, str] | None = None,
                     request_id: str | None = None,
                     error_type: str | None = None) -> ProviderError:
    """The error for a non-2xx answer: retryable (with ``retry_after``) or fatal; a
    ``ProviderBillingError`` (fatal, whatever the status) when the answer says the
    account is out of credit (``is_billing_error``: ``code`` and ``error_type`` are the
    error body's code and type)."""
    if is_billing_error(status, message, code, error_type):
        return ProviderBillingError(message, provider=provider, status=status, code=code,
                                    request_id=request_id)
    if is_retryable_status(status):
        retry_after = parse_retry_after(headers) if headers is not None else None
        return RetryableProviderError(message, provider=provider, status=status, code=code,
                                      request_id=request_id, retry_after=retry_after)
    return FatalProviderError(message, provider=provider, status=status, code=code,
                              request_id=request_id)


def http_status_in_body(code: Any) -> int | None:
    """An error body's ``code`` when it is an HTTP error status (``400``, ``"429"``), as
    OpenAI-compatible gateways (OpenRouter ...) give the status they would have
    answered; else ``None``."""
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


#: The HTTP status of each error type OpenAI and Anthropic name in an error body.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "rate_limit_exceeded": 429, "insufficient_quota": 429,
    "api_error": 500, "server_error": 500, "timeout_error": 504, "overloaded_error": 529,
}


def status_in_error_body(code: Any, kind: Any) -> int | None:
    """The HTTP status an error body in a 2xx answer stands for: its ``code`` when that
    is an HTTP error status, else its type's (``_STATUS_OF_TYPE``), else ``None``."""
    told = http_status_in_body(code)
    if told is not None:
        return told
    for name in (kind, code):
        if isinstance(name, str) and name in _STATUS_OF_TYPE:
            return _STATUS_OF_TYPE[name]
    return None


def is_error_body(body: Mapping[str, Any]) -> bool:
    """Whether a 2xx answer's JSON object is an error (``error_in_answer``'s shapes):
    an ``error`` member (OpenAI's, a gateway's, a failed Responses response's) or
    Anthropic's ``"type": "error"``."""
    return bool(body.get("error")) or body.get("type") == "error"


def error_in_answer(provider: str, body: Mapping[str, Any], *, status: int = 200,
                    headers: Mapping[str, str] | None = None,
                    request_id: str | None = None) -> ProviderError:
    """The error a 2xx answer stands for when its body is an error: OpenAI's shape
    ``{"error": {"message", "type", "code"}}`` (as OpenAI-compatible gateways answer a
    provider's failure with a 200, their ``code`` the status they meant), Anthropic's
    ``{"type": "error", "error": {...}}``, a Responses API response that ``failed``.

    Classified as the HTTP status the body names (``"code": 400``), else as its type's
    (``invalid_request_error`` a 400, ``rate_limit_error`` a 429, ``server_error`` a
    500 ...), else retryable; an account out of credit is a ``ProviderBillingError``.
    The message is the provider's, followed by "(an error in an HTTP 200 answer)".
    Until 2026-12-06 such an answer was "no choices in the chat completion" (or
    pydantic-ai's "validation errors for ChatCompletion"): the message lost, and a bad
    request or an account out of credit retried for as long as the policy allowed.
    """
    err = body.get("error")
    detail: Mapping[str, Any] = (err if isinstance(err, Mapping)
                                 else {"message": err} if isinstance(err, str) else {})
    message = str(detail.get("message") or body)[:2000]
    message += f" (an error in an HTTP {status} answer)"
    kind = detail.get("type")
    code = detail.get("code")
    kind = str(kind) if kind else None
    named = None if http_status_in_body(code) is not None else (str(code) if code else None)
    told = status_in_error_body(code, kind)
    if told is not None:
        return error_for_status(provider, told, message, code=named or kind, headers=headers,
                                request_id=request_id, error_type=kind)
    if is_billing_error(0, message, named, kind):
        return ProviderBillingError(message, provider=provider, status=status,
                                    code=named or kind, request_id=request_id)
    return RetryableProviderError(message, provider=provider, status=status,
                                  code=named or kind, request_id=request_id)


class ProviderConfigError(ConfigError, NonRetryable):
    """An LLM cannot be called as configured (a missing API key, a bad base URL).

    Raised inside the durable LLM step, so it is recorded in the run's journal and fails
    the step at once: retrying cannot supply a key.
    """

    __module__ = "tether.ai"
