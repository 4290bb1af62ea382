"""``tether serve``: the HTTP API, the web UI, MCP at ``/mcp``, ``/metrics`` and
``/healthz`` over a store.

Stateless: every request reads and writes the store the workers use, so any number of
``serve`` processes can stand behind a load balancer. Needs the ``serve`` extra
(``pip install 'tether[serve]'``); ``tether.serve.mcp`` alone needs only the ``mcp`` extra,
so this package imports the HTTP server lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.serve._auth import Tokens, check_bind
    from tether.serve._metrics import DEFAULT_METRICS_INTERVAL
    from tether.serve._server import (
        ACCEPT_BACKLOG,
        DEFAULT_MAX_BODY,
        DEFAULT_REQUEST_TIMEOUT,
        ConnectionLimit,
        StoreOpener,
        create_app,
        default_max_connections,
        end_streams,
        http_protocol,
    )

__all__ = ["ACCEPT_BACKLOG", "DEFAULT_CLIENT_TIMEOUT", "DEFAULT_MAX_BODY",
           "DEFAULT_METRICS_INTERVAL", "DEFAULT_REQUEST_TIMEOUT", "ConnectionLimit",
           "StoreOpener", "Tokens", "check_bind", "create_app", "default_max_connections",
           "end_streams", "http_protocol"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'tether.serve' has no attribute {name!r}")
    try:
        from tether.serve import _auth, _metrics, _server
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"tether serve needs the serve extra: pip install 'tether[serve]' ({exc})") from None
    if name == "DEFAULT_METRICS_INTERVAL":
        return _metrics.DEFAULT_METRICS_INTERVAL
    return getattr(_auth if name in ("Tokens", "check_bind") else _server, name)
