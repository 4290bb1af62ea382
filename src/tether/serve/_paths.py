"""Where ``tether serve`` is: the root path (a prefix such as ``/tether``) a reverse
proxy publishes it under, and a request's path within the application."""

from __future__ import annotations

from urllib.parse import quote

from starlette.types import Scope

#: The scope key holding a request's path within the application: the part after the
#: root path (``create_app(root_path=...)``), whether the proxy stripped it or not.
ROUTE = "tether.route"


def route_path(scope: Scope) -> str:
    """The path of a request within the application (``/runs``, ``/api/v1/runs``),
    without the root path: what the routes and the guard's rules are written for."""
    route = scope.get(ROUTE)
    return route if isinstance(route, str) else _within_server_root(scope)


def root_of(scope: Scope) -> str:
    """The root path the application is served under (``""``, or ``/tether``): the
    prefix of every address it sends out. (Inside a ``Mount`` Starlette makes the
    scope's ``root_path`` the mount's; ``app_root_path`` keeps the application's.)"""
    return str(scope.get("app_root_path", scope.get("root_path", ""))).rstrip("/")


def check_root_path(value: str | None, reserved: tuple[str, ...] = ()) -> str:
    """``value`` as a root path: ``""`` (none), or ``/seg[/seg...]`` without a trailing
    slash (``"/tether/"`` is ``"/tether"``), of letters, digits and ``-._~`` only, so it
    is the same text in a URL as in a page. Its first segment may not be one of
    ``reserved`` (the application's own first segments: ``runs``, ``api``...): a request
    under ``/runs/...`` could not then be told apart from one with the prefix.

    Raises:
        ValueError: what is wrong with it.
    """
    text = (value or "").strip()
    if text in ("", "/"):
        return ""
    if not text.startswith("/"):
        raise ValueError(f"the root path must start with /, as /tether does, not {text!r}")
    text = text.rstrip("/")
    segments = text[1:].split("/")
    for segment in segments:
        if not segment or segment in (".", "..") or not all(
                c.isascii() and (c.isalnum() or c in "-._~") for c in segment):
            raise ValueError(f"the root path {text!r} must be segments of letters, digits "
                             "and -._~ separated by single slashes")
    if segments[0] in reserved:
        raise ValueError(f"the root path {text!r} cannot start with /{segments[0]}: the "
                         "server has addresses of its own there")
    return text


def _within_server_root(scope: Scope) -> str:
    """The path without the ``root_path`` the ASGI server put in front of it (as
    Starlette's routing reads it)."""
    path: str = scope["path"]
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path or "/"


def rooted(scope: Scope, root: str) -> Scope:
    """``scope`` under the root path ``root``: its ``root_path`` is ``root``, its
    ``path`` (and ``raw_path``) the root plus the path within the application, whether
    the proxy stripped the prefix (``/runs``, the usual setup) or passed it on
    (``/tether/runs``: nginx's ``proxy_pass`` without a URI), and whether or not the
    ASGI server put its own ``root_path`` (uvicorn ``--root-path``) in front."""
    route = _within_server_root(scope)
    raw = _under(scope.get("raw_path") or scope["path"].encode(),
                 str(scope.get("root_path", "")).rstrip("/").encode())
    if root and (route == root or route.startswith(root + "/")):
        route = route[len(root):] or "/"
        # (a client may have percent-encoded the prefix's letters: then the raw path
        # is made again from the decoded one)
        stripped = _under(raw, root.encode())
        raw = stripped if stripped is not raw else quote(route).encode()
    return {**scope, "root_path": root, "path": root + route,
            "raw_path": root.encode() + raw, ROUTE: route}


def _under(raw: bytes, prefix: bytes) -> bytes:
    """``raw`` without ``prefix`` when it is one of its leading segments, else ``raw``
    itself."""
    if prefix and (raw == prefix or raw.startswith(prefix + b"/")):
        return raw[len(prefix):] or b"/"
    return raw
