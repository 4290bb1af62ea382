"""Who may do what: API tokens with a role (``admin`` changes, ``read`` only looks).

Tokens come from a file (``--token-file``) and/or ``TETHER_API_TOKENS``. Both hold
entries ``ROLE:TOKEN`` (the file one per line, ``#`` comments allowed; the variable
comma-separated). With no token configured, ``tether serve`` answers everyone, and
refuses to bind anywhere but loopback.

The API takes ``Authorization: Bearer TOKEN``. The web UI's login form sets an HttpOnly,
SameSite=Strict cookie holding the token's SHA-256 digest (never the token itself), so
any ``serve`` process configured with the same tokens recognizes it: nothing is kept in
one process's memory. Forms carry a CSRF token tied to the session (or, without tokens,
to a random cookie: double submit), compared in constant time.

The tokens themselves, and the loopback checks, are ``tether._tokens``'s (a worker's
``/metrics`` checks a scrape with them too, without importing ``tether.serve``); they
are importable from here as well.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from tether._tokens import (
    ENV_TOKENS,
    RELOAD_EVERY,
    ROLES,
    Principal,
    Tokens,
    digest,
    is_loopback,
    loopback_host_header,
)
from tether.errors import ConfigError

__all__ = ["CSRF_COOKIE", "ENV_TOKENS", "OPEN", "RELOAD_EVERY", "ROLES", "SESSION_COOKIE",
           "Principal", "Tokens", "check_bind", "csrf_ok", "digest", "is_loopback",
           "loopback_host_header", "new_csrf"]

SESSION_COOKIE = "tether_session"
CSRF_COOKIE = "tether_csrf"
log = logging.getLogger("tether.serve")


#: Who everyone is when no token is configured (loopback only).
OPEN = Principal("admin")


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse to serve beyond loopback without tokens. Raises: ConfigError."""
    if not tokens.enabled and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without API tokens: anyone who can reach it could "
            f"start and cancel runs; give --token-file FILE or {ENV_TOKENS} "
            "(entries admin:TOKEN or read:TOKEN), or bind to 127.0.0.1")


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(sent: str | None, expected: str | None) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(str(sent), str(expected))
