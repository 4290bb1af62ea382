"""The ASGI application of ``tether serve``: API, UI, ``/metrics``, ``/healthz`` and,
when installed, the MCP face at ``/mcp``, all behind one guard (auth, body limit)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import App
from tether.errors import InvalidName, StoreUnavailable, shown
from tether.serve import _api, _control, _metrics, _ui
from tether.serve._auth import OPEN, SESSION_COOKIE, Tokens, loopback_host_header
from tether.serve._openapi import document
from tether.serve._paths import ROUTE, check_root_path, root_of, rooted, route_path
from tether.store._port import FAIL_FAST, REQUEST_TIMEOUT

log = logging.getLogger("tether.serve")

#: Largest request body accepted (bytes), unless ``create_app(max_body=...)``.
DEFAULT_MAX_BODY = 1 << 20

#: Seconds each store operation of a request waits for the server's answer, unless
#: ``create_app(request_timeout=...)`` (``tether serve --request-timeout``): a server
#: that hangs costs the request that meets it this long before its 503, not the store's
#: ``query_timeout`` (30 s), which workers keep.
DEFAULT_REQUEST_TIMEOUT = 5.0

#: Seconds a client has to send a request's headers (from its first byte), and its body
#: (from the headers' end, plus a second per ``MIN_BODY_RATE`` bytes received), unless
#: ``create_app(client_timeout=...)`` (``tether serve --client-timeout``): a slower
#: client gets 408 and its connection is closed. Without it a client that sends half a
#: request and then a byte now and then (slow loris) held its connection, and a file
#: descriptor, for ever.
DEFAULT_CLIENT_TIMEOUT = 20.0
#: Bytes a second a request's body must keep coming at, past ``client_timeout``.
MIN_BODY_RATE = 1024

#: Connections past ``max_connections`` (``tether serve --max-connections``) whose
#: request is still read and answered, one answer each, before they are closed: the 503
#: ``too_many_connections``, or ``/healthz`` and ``/metrics`` served (the operator sees
#: the server at its limit). Past these, a connection gets that 503 written at once and
#: is closed without its request being read: every one read holds a descriptor.
SPARE_CONNECTIONS = 16
#: File descriptors the default ``max_connections`` leaves to the rest of the process
#: (the store's pool, 10 by default, its SQLite files, log files, the listening sockets,
#: the ``SPARE_CONNECTIONS``, MCP's and Python's own).
FD_RESERVE = 100
#: The listening socket's queue of connections not accepted yet (uvicorn's ``backlog``,
#: 2048 by default). asyncio accepts up to this many in one pass, before the protocol of
#: the first has seen its connection (and closed it, past the limit): a flood took up to
#: 2048 descriptors at once, past any limit, and on running out asyncio logs a traceback
#: per failed ``accept`` of the pass (1 GB of log in two minutes, measured on an
#: unbounded server). With 128: 58 and 243 such tracebacks (two runs) in a flood of 400
#: connections against ``ulimit -n 256``, 8,028 with 2048; every connection answered.
ACCEPT_BACKLOG = 128
#: Seconds a client refused for the connection limit is told to wait (``Retry-After``).
RETRY_AFTER = 1
#: What a connection past the limit is still answered, for its operator.
_OPERATOR_PATHS = ("/healthz", "/metrics")
#: The scope key under which ``http_protocol`` names a request's connection.
CONNECTION = "tether.connection"

_PUBLIC = ("/healthz", "/login", "/static/")
#: Seconds after which a web page that found the store unavailable loads itself again.
UI_RETRY = 5


def _utf8_address(scope: Scope) -> bool:
    """Whether the request's path and query string are UTF-8 once %-decoded (the API
    takes ids, names and filters as UTF-8 text)."""
    raw = scope.get("raw_path")
    try:
        if raw is not None:
            unquote_to_bytes(raw).decode("utf-8")
        query: bytes = scope.get("query_string", b"")
        if query:
            unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _for_machines(path: str) -> bool:
    """Whether ``path`` answers programs (JSON, errors as JSON), not a person's browser:
    the API, the MCP face, ``/metrics`` and ``/openapi.json`` (``/healthz`` too, though it
    needs no token)."""
    return path.startswith(("/api/", "/mcp")) or path in ("/metrics", "/openapi.json")


def _page_form(scope: Scope, path: str) -> bool:
    """Whether the request is a form a person's browser posts from a page (the signal,
    approval, cancel, fork... forms, ``/login``): a refusal is answered with a page
    that says why, not the API's JSON, which the browser showed in the page's place."""
    return scope["method"] == "POST" and not _for_machines(path) and path != "/healthz"


def default_max_connections(url: str = "") -> int:
    """``tether serve``'s connection limit unless ``--max-connections``: the process's
    file-descriptor limit (``RLIMIT_NOFILE``, its soft value: ``ulimit -n``) less
    ``FD_RESERVE``, halved for a SQLite store ``url`` (an event stream there holds a
    second descriptor, the Unix socket it listens on for the run's live events:
    measured 1.98 a stream on SQLite, 1.04 on PostgreSQL, whose one LISTEN connection
    serves them all), at least ``SPARE_CONNECTIONS``. Past the descriptor limit every
    ``accept``, store connection and file open fails, each in its own way; the limit
    refuses connections first, with a 503 that says so."""
    try:
        import resource
    except ImportError:  # pragma: no cover - (not POSIX: no such limit to derive from)
        return 1000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    per_connection = 2 if url.startswith("sqlite") else 1
    return max((soft - FD_RESERVE) // per_connection, SPARE_CONNECTIONS)


class ConnectionLimit:
    """How many connections ``tether serve`` serves at once (``--max-connections``).

    A connection is admitted when it opens if fewer than ``limit`` are; an event stream
    holds its connection, and so its place, for as long as it is open. The next
    ``spare`` connections wait, unserved, for their request: if an admitted connection
    has closed meanwhile, it is admitted then; else it is answered 503
    ``too_many_connections`` with ``Retry-After`` (``/healthz`` and ``/metrics`` are
    served instead) and closed. Past those, a connection is answered the 503 at once
    and closed (``http_protocol``).

    ``refused`` counts the 503s (``tether_serve_connections_refused_total`` in
    ``/metrics``); a WARNING line says so, at most one every ``LOG_EVERY`` seconds.
    """

    #: Seconds at least between two log lines about refused connections.
    LOG_EVERY = 10.0

    def __init__(self, limit: int, spare: int = SPARE_CONNECTIONS) -> None:
        if limit < 1:
            raise ValueError(f"a connection limit must be 1 or more, not {limit}")
        self.limit = limit
        self.spare = spare
        self.served: set[object] = set()
        self.waiting: set[object] = set()
        #: Connections answered 503 for the limit, since the start.
        self.refused = 0
        self._logged = 0  # (refused when the last line was logged)
        self._log_at = 0.0

    @property
    def open(self) -> int:
        """Connections open now, admitted or waiting."""
        return len(self.served) + len(self.waiting)

    def opened(self, connection: object) -> bool | None:
        """A connection opened: admitted (True), waiting for its request to be
        answered past the limit (False), or to be refused at once (None)."""
        if len(self.served) < self.limit:
            self.served.add(connection)
            return True
        if len(self.waiting) < self.spare:
            self.waiting.add(connection)
            return False
        self.refuse()
        return None

    def closed(self, connection: object) -> None:
        self.served.discard(connection)
        self.waiting.discard(connection)

    def admit(self, connection: object) -> bool:
        """Whether a request of ``connection`` is served: it was admitted, or is now
        (an admitted one closed since it opened). A request that names no connection
        (another ASGI server, a test's transport) is."""
        if connection not in self.waiting:
            return True
        if len(self.served) < self.limit:
            self.waiting.discard(connection)
            self.served.add(connection)
            return True
        return False

    def refuse(self) -> None:
        """Count a refused connection, and say so in the log now and then."""
        self.refused += 1
        now = time.monotonic()
        if now >= self._log_at:
            count = self.refused - self._logged
            log.warning("refused %d connection%s over the limit of %d (--max-connections; "
                        "%d open now) with 503 too_many_connections",
                        count, "" if count == 1 else "s", self.limit, self.open)
            self._logged = self.refused
            self._log_at = now + self.LOG_EVERY


def _over_limit_message(limit: int) -> str:
    """What a request refused for the connection limit is told (the guard's answer and
    the protocol's, written before the request is read)."""
    return (f"this server is serving its limit of {limit} connections "
            f"(--max-connections); try again in {RETRY_AFTER} s")


def _over_limit(limit: int) -> JSONResponse:
    response = _error(503, "too_many_connections", _over_limit_message(limit))
    response.headers["Retry-After"] = str(RETRY_AFTER)
    response.headers["Connection"] = "close"  # (its place is for a connection admitted)
    return response


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the answer: a connection served past the
    limit (``/healthz``, ``/metrics``) is closed after it, not kept alive."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            headers["Connection"] = "close"
            message = {**message, "headers": headers.raw}
        await send(message)

    return closing


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class Guard:
    """ASGI middleware: who is asking (token, session cookie, or open mode), and a
    limit on request bodies, before any route runs."""

    def __init__(self, app: ASGIApp, tokens: Tokens, max_body: int,
                 request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
                 client_timeout: float | None = DEFAULT_CLIENT_TIMEOUT,
                 root_path: str = "", connections: ConnectionLimit | None = None,
                 routes: frozenset[str] = frozenset()) -> None:
        self.app = app
        #: The routes without a parameter (``/runs``, ``/api/v1/approvals``): one asked
        #: for with a trailing slash is redirected to it (``_slashless``).
        self.routes = routes
        self.connections = connections
        self.root_path = root_path
        self.tokens = tokens
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.client_timeout = client_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _secured(send)
        # The root path: create_app's, else the ASGI server's (uvicorn --root-path).
        root = self.root_path or str(scope.get("root_path", "")).rstrip("/")
        scope = rooted(scope, root)
        path: str = scope[ROUTE]
        if self.connections is not None and \
                not self.connections.admit(scope.get(CONNECTION)):
            if path not in _OPERATOR_PATHS:
                self.connections.refuse()
                await _reply(scope, receive, send, _over_limit(self.connections.limit))
                return
            send = _closing(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if path.startswith(_api.RUNS_PREFIX):
            scope = _api.keep_encoded_slashes(scope)
        is_api = _for_machines(path)
        length = headers.get("content-length")
        #: A page's form announced over the limit: its route answers the 413, on a page
        #: (once the session is checked), its body never read (``limited_receive``).
        form_too_large = False
        if length is not None:
            if not length.isdigit():
                await _reply(scope, receive, send, _error(400, "bad_request",
                                                          "Content-Length is not a number"))
                return
            if int(length) > self.max_body:
                if not _page_form(scope, path):
                    await _reply(scope, receive, send, _too_large(self.max_body))
                    return
                form_too_large = True
        if not self.tokens.enabled and not loopback_host_header(headers.get("host", "")):
            # No tokens: only loopback clients, and a browser page of another site that
            # reaches this port through DNS rebinding names its own host.
            await _reply(scope, receive, send, _error(
                403, "forbidden", "this server has no API tokens and answers only requests "
                "addressed to localhost or a loopback address; configure tokens "
                "(--token-file) to serve other names"))
            return
        if (path == "/mcp" or path.startswith("/mcp/")) and _foreign_script(headers):
            # The MCP face, whatever the request's token: the MCP specification says "if
            # the Origin header is present and invalid, servers MUST respond with HTTP
            # 403 Forbidden" (until 2026-12-06 a request with a valid token was served).
            # No client is lost: a browser's script of another origin could not read an
            # answer anyway (no CORS), and programs name no Origin. (Checked before the
            # cross-site rule below, whose answer says an Authorization header would
            # do: not here.)
            await _reply(scope, receive, send, _error(
                403, "forbidden", "MCP request from another origin refused (the MCP "
                "specification: an Origin that is not this server's is answered 403); "
                "a program sends no Origin header"))
            return
        changes = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if "authorization" not in headers and ((changes and _cross_site(headers))
                                               or (is_api and _foreign_script(headers))):
            # A page of another site posting to this server (a loopback server without
            # tokens has no other defence; with tokens the SameSite cookie is one more),
            # or a script of another origin calling the API or MCP face (an EventSource,
            # a fetch), whatever the method: the MCP specification requires Streamable
            # HTTP servers to refuse an Origin that is not theirs with 403. (A link
            # followed to an API address from another site sends no Origin: it is served.)
            await _reply(scope, receive, send, _error(
                403, "forbidden", "cross-site request refused: send it from this server's "
                "pages or with an Authorization header"))
            return
        moved = _slashless(scope, path, root, self.routes)
        if moved is not None:
            await _reply(scope, receive, send, moved)
            return
        principal = OPEN
        if self.tokens.enabled and not any(path == p or (p.endswith("/") and path.startswith(p))
                                           for p in _PUBLIC):
            auth = headers.get("authorization", "")
            found = None
            if auth:
                found = self.tokens.by_bearer(auth)
            else:
                cookie = SimpleCookie()
                with contextlib.suppress(Exception):
                    cookie.load(headers.get("cookie", ""))
                morsel = cookie.get(SESSION_COOKIE)
                if morsel is not None:
                    found = self.tokens.by_digest(morsel.value)
            if found is None:
                if not is_api and not auth and scope["method"] == "POST":
                    # A page's form whose session has ended (expired, logged out in
                    # another tab, its token removed): a page that says so, not the
                    # API's JSON ("send Authorization: Bearer TOKEN") in its place.
                    response: Response = _session_ended(root, _ui.login_query_back(
                        scope, headers.get("referer", "")))
                elif not is_api and path.startswith("/ui/"):
                    # A fragment an open page redraws itself with: a 401 its script
                    # tells by (a banner), not the login page, which a redirect drew
                    # inside the page (a second header, a login form in the inbox).
                    response = _session_ended(root, _ui.login_query_back(
                        scope, headers.get("referer", "")), form=False)
                elif is_api or scope["method"] not in ("GET", "HEAD"):
                    response = _error(401, "unauthorized",
                                      "a valid token is required: send "
                                      "Authorization: Bearer TOKEN")
                    response.headers["WWW-Authenticate"] = "Bearer"
                else:
                    # (to the form, which leads back to this page once logged in)
                    response = RedirectResponse(root + "/login" + _ui.login_query(scope),
                                                status_code=303)
                await _reply(scope, receive, send, response)
                return
            principal = found
        scope.setdefault("state", {})["principal"] = principal
        if path.startswith("/api/") and not _utf8_address(scope):
            # The server decodes an address's bytes that are no UTF-8 as U+FFFD, so
            # /signals/%FF and /signals/%FE were one signal named "\ufffd", and
            # ?workflow=%FF listed the runs of a workflow named so.
            await _reply(scope, receive, send, _error(
                400, "bad_request", "the address is not UTF-8 once its %-escapes are "
                "decoded: encode ids, names and query values as UTF-8"))
            return

        received = 0
        started = False
        body_done = False
        loop = asyncio.get_running_loop()
        begun = loop.time()

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if form_too_large and not body_done:
                raise _TooLarge  # (its route's form, read first, is answered 413)
            if body_done or self.client_timeout is None:
                message = await receive()
            else:
                # The body must come within client_timeout, and then at MIN_BODY_RATE:
                # a client that sends a few bytes now and then does not hold the
                # request (and its connection) for ever. (Once the body is in, a
                # receive waits for the disconnect, as an event stream does: no limit.)
                left = begun + self.client_timeout + received / MIN_BODY_RATE - loop.time()
                try:
                    async with asyncio.timeout(max(left, 0.0)):
                        message = await receive()
                except TimeoutError:
                    raise _TooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # A request's store calls fail at once while the store is known to be down: its
        # 503 comes without waiting for the pool's timeout (tether.store FAIL_FAST); and
        # each waits for the server's answer at most request_timeout (REQUEST_TIMEOUT).
        fail_fast = FAIL_FAST.set(True)
        limit = REQUEST_TIMEOUT.set(self.request_timeout)
        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(scope, receive, send, _too_large(self.max_body))
        except _TooSlow:
            if not started:
                await _reply(scope, receive, send, _too_slow())
        finally:
            REQUEST_TIMEOUT.reset(limit)
            FAIL_FAST.reset(fail_fast)


#: The Content-Security-Policy of every HTML answer: scripts and styles from this server
#: only (no inline script, no handler attribute), no plugins, no ``<base>`` to move
#: relative addresses elsewhere, never in a frame (the approve button cannot be
#: clickjacked), forms post only here.
CSP = ("default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _secured(send: Send) -> Send:
    """``send`` with the security headers added to every answer that lacks them (the
    guard's own refusals, JSON, streams, static files, pages): ``nosniff`` and a
    same-origin ``Referrer-Policy`` on all; on HTML, ``CSP``, ``X-Frame-Options``
    (for browsers that do not know ``frame-ancestors``) and ``Cache-Control: no-store``
    (a page is never kept: after log out, Back showed the last page, its approvals and
    payloads, from the browser's cache; and a page reached by Back is drawn anew)."""

    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            headers.setdefault("X-Content-Type-Options", "nosniff")
            headers.setdefault("Referrer-Policy", "same-origin")
            if headers.get("content-type", "").startswith("text/html"):
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Cache-Control", "no-store")
            message = {**message, "headers": headers.raw}
        await send(message)

    return secured


def _cross_site(headers: dict[str, str]) -> bool:
    """Whether a browser says the request comes from another site (``Sec-Fetch-Site``,
    else an ``Origin`` whose host is not this one)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    return _foreign_origin(headers)


def _foreign_script(headers: dict[str, str]) -> bool:
    """Whether a script of another origin sent the request: it names an ``Origin``
    (a link followed from another site does not), and the browser's ``Sec-Fetch-Site``
    says another site, or, without it, the ``Origin`` is not this server's. (Behind a
    proxy that rewrites ``Host``, a page's own requests say ``same-origin``.)"""
    if "origin" not in headers:
        return False
    return _cross_site(headers)


def _foreign_origin(headers: dict[str, str]) -> bool:
    """Whether the request names an ``Origin`` (a browser's script sent it) that is
    not this server's."""
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or origin.split("://", 1)[-1].rstrip("/") != headers.get("host", "")


def _session_ended(root: str, back: str, *, form: bool = True) -> HTMLResponse:
    """The 401 page of a form posted (``form``) or a page's fragment asked for without
    a valid session: nothing was done. ``back``: the login form's query that leads back
    to the page the form was on (``_ui.login_query_back``; it led to the runs list)."""
    home = html.escape(root)
    done = ("<b>nothing was done</b>, and what you typed was not sent" if form
            else "log in again to see this page")
    again = ", then send it again from the page" if form else ""
    return HTMLResponse(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark"><title>Log in again · Tether</title>'
        f'<link rel="icon" href="{home}/static/favicon.svg" type="image/svg+xml">'
        f'<link rel="stylesheet" href="{home}/static/app.css"></head><body><main>'
        '<section class="card error-card"><h1>401</h1><p>Your session has ended (it '
        "expired, you logged out in another tab, or its token was removed from this "
        f"server): {done}.</p>"
        f'<p><a href="{home}/login{html.escape(back)}">Log in again</a>{again}.</p>'
        "</section></main>"
        "</body></html>\n", status_code=401)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", f"the request body is over {limit} bytes")


def _too_slow() -> JSONResponse:
    response = _error(408, "request_timeout", "the request's body came too slowly")
    response.headers["Connection"] = "close"  # (what is left of the body is not read)
    return response


def _slashless(scope: Scope, path: str, root: str, routes: frozenset[str]) -> Response | None:
    """A redirect (307, which keeps the method and the body, so a POST is sent again as
    a POST) from a route asked for with a trailing slash (``/runs/``,
    ``/api/v1/approvals/``) to the route (``/runs``), under the root path and with the
    query string; ``None`` for any other request. Only routes without a parameter are:
    ``/runs/a/`` is the run ``a/`` (a run id may end with a slash). Until 2026-12-06
    ``/runs/`` answered 404 (the run of id ""), and ``/api/v1/approvals/`` Starlette's
    307 to an absolute address made from the request's Host (off the proxy's origin)."""
    if len(path) < 2 or not path.endswith("/"):
        return None
    route = path.rstrip("/")
    if route not in routes:
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return RedirectResponse(root + route + (f"?{query}" if query else ""), status_code=307)


async def _reply(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """The guard's answer; to the MCP face, its error as a JSON-RPC error."""
    path = str(scope.get(ROUTE, ""))
    if (path == "/mcp" or path.startswith("/mcp/")) and isinstance(response, JSONResponse):
        response = _jsonrpc_error(response)
    await response(scope, receive, send)


def _jsonrpc_error(response: JSONResponse) -> JSONResponse:
    """An API error answer (``{"error": {"code", "message"}}``) as a JSON-RPC error, of
    the same status and headers: an MCP client reads a JSON-RPC error from the body of
    a non-2xx answer, and nothing else (the SDK's said "Server returned an error
    response", the guard's reason lost: a body over --max-body, a missing token, an
    Origin refused). -32600 (Invalid Request) for a 4xx, -32603 for a 5xx; ``data``
    has the status and the API's error code. The id is null: the guard answers before
    the body (and its id) is read, as JSON-RPC answers a request whose id is unknown."""
    error = json.loads(bytes(response.body))["error"]
    headers = {k: v for k, v in response.headers.items()
               if k not in ("content-length", "content-type")}
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32603 if response.status_code >= 500 else -32600,
        "message": error["message"],
        "data": {"httpStatus": response.status_code, "error": error["code"]}}},
        status_code=response.status_code, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _api.ApiError)
    path = route_path(request.scope)
    if not (_for_machines(path) or path == "/healthz") and \
            exc.status in (400, 403, 404, 409, 413, 422):
        return _ui.error_page(request, exc.status, exc.message, code=exc.code,
                              title=exc.title)
    return _error(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = route_path(request.scope)
    if (exc.status_code == 404 and request.method in ("GET", "HEAD")
            and not _for_machines(path) and path != "/healthz"
            and "text/html" in request.headers.get("accept", "")):
        # A person's browser at a mistyped address: a page, not a JSON document.
        return _ui.error_page(request, 404, "There is no page at "
                              f"{shown(request.url.path, quoted=False)}.",
                              title="Page not found")
    codes = {404: "not_found", 405: "method_not_allowed"}
    # (Starlette's reason phrases, "Not Found", "Method Not Allowed", alone until
    # 2026-12-06)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = (f"there is nothing at {shown(request.url.path, quoted=False)}: the API's "
                  "addresses are in /openapi.json")
    allowed = _allowed(request) if exc.status_code == 405 else None
    if allowed is not None:
        detail = f"{request.method[:20]} is not allowed here: this path takes {allowed}"
    response = _error(exc.status_code, codes.get(exc.status_code, "error"), detail)
    response.headers.update(exc.headers or {})
    if allowed is not None:
        response.headers["Allow"] = allowed
    return response


def _allowed(request: Request) -> str:
    """The methods ``request``'s path takes, for a 405's ``Allow`` (RFC 9110 requires
    it). Starlette names only those of the first route of the path (``PUT /api/v1/runs``
    said ``Allow: POST``, where ``GET`` is one too)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and \
                route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _invalid_name(request: Request, exc: Exception) -> Response:
    """A run id, workflow, queue or signal name the engine refuses (control
    characters and the like): bad input, checked before anything is written."""
    return await _api_error(request, _api.ApiError(400, "bad_request", str(exc)))


async def _unavailable(request: Request, exc: Exception) -> Response:
    path = route_path(request.scope)
    if _for_machines(path) or path == "/healthz":
        return _api.store_unavailable(str(exc))
    if request.method not in ("GET", "HEAD"):  # (a form: reloading would not resend it)
        return _ui.error_page(request, 503, f"The store is unavailable: {exc}. Look at "
                              "the run again when it is back before you repeat this.")
    response = _ui.error_page(request, 503, f"The store is unavailable: {exc}",
                              refresh=UI_RETRY)
    response.headers["Retry-After"] = str(UI_RETRY)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An exception no handler answers (a bug): a 500 in the API's error shape (a page
    for a person's browser), not Starlette's text ``Internal Server Error``, which an API
    client could not read as the JSON error every other answer is. The traceback is
    still logged (Starlette raises the exception again once this is sent: uvicorn's
    "Exception in ASGI application")."""
    path = route_path(request.scope)
    if _for_machines(path) or path == "/healthz":
        return _error(500, "internal_error", "the server failed to answer this request "
                      f"({type(exc).__name__}); its log has the traceback")
    try:
        return _ui.error_page(request, 500, "This page failed to draw (a bug in the "
                              "server: its log has the traceback).")
    except Exception:  # (the page itself failed: text, as before)
        return Response("Internal Server Error", status_code=500, media_type="text/plain")


async def _body_too_large(request: Request, exc: Exception) -> Response:
    """A body over ``max_body``, met as a route read it: the API's JSON 413, or for a
    page's form a 413 page that says so and leads back to the page it was on."""
    limit: int = request.app.state.max_body
    if _page_form(request.scope, route_path(request.scope)):
        return _ui.error_page(request, 413, (
            f"What you sent is over this server's limit of {limit} bytes a request "
            "(tether serve --max-body): nothing was done. Shorten the data and send "
            "it again."))
    return _too_large(limit)


async def _body_too_slow(request: Request, exc: Exception) -> Response:
    return _too_slow()


class StoreOpener:
    """Opens the served App's store, before the server listens and then beside it.

    ``tether serve`` listens whether or not its store answers yet: in docker-compose or
    Kubernetes the database often comes up after the application, and a server that
    exited would be restarted with growing delays (CrashLoopBackOff), its UI down for
    minutes after the database is back. ``first()`` makes one attempt before listening:
    a mistake no wait fixes (``ConfigError``: a SQLite folder that does not exist, a
    PostgreSQL schema behind with auto-migration off) is raised then, as before. Only a
    store that cannot be reached (``StoreUnavailable``) is waited for: ``keep()`` tries
    again after 0.5 s, doubling to 10 s, an ERROR line per failed attempt, as a worker's
    start does (``Worker(start_retry=)``). Meanwhile every request that needs the store
    answers as during an outage (``_StoreGate``): 503 ``store_unavailable`` naming why,
    ``/healthz`` too, a page the 503 page that loads itself again.

    Args:
        app: the served App.
        wait: seconds after the first attempt past which a store still unreachable is
            given up (``failure``; ``0``: the first attempt only); ``None``: until it
            answers.
        on_failure: called with the error once the store is given up (a mistake met
            after listening, or ``wait`` passed): ``tether serve`` stops and exits 1.
            Without it the server goes on answering 503 with the error, and logs it.
    """

    def __init__(self, app: App, *, wait: float | None = None,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        from tether.worker._worker import START_RETRY_FIRST

        self.app = app
        self.wait = wait
        self.on_failure = on_failure
        #: Why the store was given up, if it was.
        self.failure: Exception | None = None
        #: Failed attempts so far.
        self.attempts = 0
        self._last: StoreUnavailable | None = None
        self._began: float | None = None
        self._delay = START_RETRY_FIRST
        self._pause = START_RETRY_FIRST

    @property
    def ready(self) -> bool:
        """Whether the store is open (by this opener, or by whoever opened the App: a
        test that serves an App it opened, without the lifespan)."""
        return self.app._opened

    def unavailable(self) -> StoreUnavailable:
        """What a request answers while the store is not open."""
        if self.failure is not None:
            return StoreUnavailable(f"the store cannot be opened: {self.failure}")
        if self._last is None:
            return StoreUnavailable("the store is being opened")
        return StoreUnavailable(f"{self._last} (not reached since this server started: "
                                f"{self.attempts} failed attempts; trying again)")

    async def first(self) -> None:
        """The first attempt, once (later calls return at once): the store opened, or
        unreachable and logged for ``keep()`` to try again.

        Raises:
            ConfigError, StoreError: a mistake no wait fixes.
            StoreUnavailable: unreachable, and ``wait`` is 0.
        """
        if self._began is None:
            self._began = time.monotonic()
            await self._attempt()

    async def keep(self) -> None:
        """Try until the store opens (the first attempt too, if not made), or is given
        up: ``failure`` is set, and ``on_failure`` called (else it is logged)."""
        try:
            await self.first()
            while not self.ready:
                await asyncio.sleep(self._pause)
                await self._attempt()
        except Exception as exc:  # (a mistake no wait fixes, or the wait's bound)
            self.failure = exc
            if self.on_failure is not None:
                self.on_failure(exc)
            else:
                log.error("the store cannot be opened: %s; requests answer 503 until this "
                          "server is restarted with it fixed", exc)

    async def _attempt(self) -> None:
        from tether.worker._worker import START_RETRY_MAX

        try:
            await self.app._open()
        except StoreUnavailable as exc:
            self.attempts += 1
            self._last = exc
            assert self._began is not None
            left = None if self.wait is None else self._began + self.wait - time.monotonic()
            if left is not None and left <= 0:
                if self.attempts == 1:
                    raise  # (wait 0: the error as it is, as every command says it)
                raise StoreUnavailable(f"{exc} (still unreachable after {self.wait:g} s, "
                                       f"{self.attempts} attempts)") from exc
            self._pause = self._delay if left is None else min(self._delay, left)
            # One line per attempt, naming the server, as a worker's start says it.
            log.error("store unavailable: %s; retrying in %.1f s (attempt %d)", exc,
                      self._pause, self.attempts)
            self._delay = min(self._delay * 2, START_RETRY_MAX)
            return
        if self.attempts:
            log.info("store reachable after %d failed attempts", self.attempts)


#: Paths that never need the store: served while it is not open yet. (``/mcp`` answers
#: its clients' handshakes without it, and its tool calls say themselves that the store
#: is unavailable, as ``tether mcp`` does.)
_WITHOUT_STORE = ("/login", "/logout", "/openapi.json", "/mcp")


def _needs_store(path: str) -> bool:
    return not (path in _WITHOUT_STORE or path.startswith(("/static/", "/mcp/")))


class _StoreGate:
    """Starlette middleware: while the store is not open (``StoreOpener``), a request
    that needs it answers what it answers during an outage (``_unavailable``), without
    reaching a handler (whose store calls would fail as "not open")."""

    def __init__(self, app: ASGIApp, opener: StoreOpener) -> None:
        self.app = app
        self.opener = opener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.opener.ready and _needs_store(route_path(scope)):
            response = await _unavailable(Request(scope, receive), self.opener.unavailable())
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _openapi(request: Request) -> Response:
    _api.query_fields(request, set())
    return JSONResponse(document(root_of(request.scope)))


def _mcp_face(app: App) -> Any:
    """The MCP face (helper package ``tether.serve.mcp``), when it is installed."""
    try:
        from tether.serve.mcp import create_mcp_http  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return create_mcp_http(app)


def create_app(app: App, *, tokens: Tokens | None = None,
               max_body: int = DEFAULT_MAX_BODY, mcp: bool = True,
               request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
               client_timeout: float | None = DEFAULT_CLIENT_TIMEOUT,
               metrics_interval: float = _metrics.DEFAULT_METRICS_INTERVAL,
               opener: StoreOpener | None = None, root_path: str = "",
               connections: ConnectionLimit | None = None,
               end_streams_on_signals: bool = True) -> ASGIApp:
    """The ASGI application serving ``app``'s store.

    Args:
        app: the Tether app whose store is served (with its code, if given).
        tokens: API tokens; none configured means open (bind to loopback only).
        max_body: largest request body in bytes.
        mcp: mount the MCP face at ``/mcp`` if ``tether.serve.mcp`` is installed.
        request_timeout: seconds each store operation of a request (API, pages,
            ``/metrics``, ``/mcp``) waits for the server's answer (default 5), if less
            than the store's own deadline (PostgreSQL ``query_timeout``); ``None``: the
            store's. Long operations (an erasure) get ten times as long.
        client_timeout: seconds a request's body may take to arrive (then at least
            ``MIN_BODY_RATE`` bytes a second), else 408 and the connection is closed;
            ``None``: no limit. (Its headers' deadline is the server's:
            ``http_protocol``.)
        metrics_interval: seconds at least between two background computations of
            the figures of ``/metrics`` that scan the whole store (default 15; and at
            least ten times the last one's duration); 0: every figure computed in each
            scrape's request (a small store only).
        opener: how the store is opened (``StoreOpener``); by default the lifespan's
            start tries once, raising a mistake no wait fixes (``ConfigError``), and a
            store it cannot reach is tried again beside serving, until it answers,
            requests answering 503 ``store_unavailable`` meanwhile.
        root_path: the path prefix the server is reached under behind a reverse proxy
            (``/tether`` for ``https://ops.example.com/tether/``): every address it
            sends out (links, forms, redirects, scripts' addresses, the cookies'
            ``Path``, the OpenAPI ``servers``) carries it, and each request is
            answered whether the proxy stripped the prefix or passed it on. Without
            it, a ``root_path`` the ASGI server puts in the scope (uvicorn
            ``--root-path``) is used the same way.
        connections: the bound on connections served at once, shared with the
            server's protocol (``http_protocol(connections=)``), which admits them:
            a request of a connection past it answers 503 ``too_many_connections``
            (``/healthz`` and ``/metrics`` are served); ``/metrics`` reports it.
        end_streams_on_signals: while the app runs (from its lifespan's start to its
            end), SIGTERM and SIGINT also end its run event streams
            (``end_streams``) before the handler the ASGI server installed for them
            runs, so that a server embedding the app shuts down at once instead of
            waiting for them (uvicorn: for ever, or until its graceful-shutdown
            deadline, then an ERROR and a traceback). Only in the main thread, and only
            over a server's own handler (not Python's defaults, which end the process
            at once anyway); the handlers found are put back at the lifespan's end.

    Raises:
        ValueError: a ``metrics_interval`` below 0, or a ``root_path`` that is not a
            path (``check_root_path``).
    """
    if metrics_interval < 0:
        raise ValueError(f"metrics_interval must be 0 or more, not {metrics_interval}")
    mcp_http = _mcp_face(app) if mcp else None
    cache = _metrics.MetricsCache(metrics_interval)
    opener = opener or StoreOpener(app)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await opener.first()  # (made already by `tether serve`, before it listens)
        keeper = None if opener.ready else asyncio.ensure_future(opener.keep())
        unhook = (_end_streams_on_signals(web.state.closing) if end_streams_on_signals
                  else None)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if mcp_http is not None:
                    await stack.enter_async_context(mcp_http.lifespan())
                yield
        finally:
            if unhook is not None:
                unhook()
            # (a server that sends the lifespan's end before closing its connections
            # ends the streams here at the latest)
            web.state.closing.set()
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            await cache.close()
        await app.close()

    routes: list[Any] = [
        Route("/healthz", _api.health, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/metrics", _metrics.metrics, methods=["GET"]),
        *_control.routes,
        *_api.routes,
        *_ui.routes,
        Mount("/static", StaticFiles(packages=[("tether.serve", "static")]), name="static"),
    ]
    reserved = tuple(sorted({r.path.split("/")[1] for r in routes} | {"mcp"}))
    fixed = frozenset(r.path for r in routes if isinstance(r, Route) and "{" not in r.path)
    root_path = check_root_path(root_path, reserved)
    if mcp_http is not None:
        # `/mcp` itself answers (a Mount alone redirects it to `/mcp/` with a Location
        # built from the request's Host, which sends MCP clients behind a reverse proxy
        # off their origin); `/mcp/` keeps answering too.
        routes += [Route("/mcp", endpoint=mcp_http.asgi), Mount("/mcp", app=mcp_http.asgi)]
    web = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(_StoreGate, opener=opener)], exception_handlers={
        _api.ApiError: _api_error, HTTPException: _http_error, _TooLarge: _body_too_large,
        _TooSlow: _body_too_slow,
        StoreUnavailable: _unavailable, InvalidName: _invalid_name,
        Exception: _internal_error,
    })
    tokens = tokens or Tokens()
    # (a route asked for with a trailing slash is redirected by the guard: Starlette's
    # own redirect named the request's Host, and its routes with a parameter
    # answered some such paths first, /runs/ as the run "")
    web.router.redirect_slashes = False
    web.state.tether = app
    web.state.tokens = tokens
    web.state.max_body = max_body
    web.state.metrics = cache
    web.state.connections = connections
    # Set by ``end_streams`` when the server begins to shut down.
    web.state.closing = asyncio.Event()
    if mcp_http is not None:  # (its synchronous tool calls stop waiting then too)
        mcp_http.tasks.closing = web.state.closing
    return Guard(web, tokens, max_body, request_timeout, client_timeout, root_path,
                 connections, routes=fixed)


def end_streams(asgi: ASGIApp) -> None:
    """End the run event streams of ``asgi`` (made by ``create_app``), each at once
    (between two frames), and those opened from now on after their first frames:
    ``tether serve`` calls it when it begins to shut down (SIGTERM), so that they end
    before uvicorn's graceful-shutdown deadline instead of being cancelled at it (an
    ERROR and a traceback in the log at every deploy while a run page was open). Their
    clients reconnect from the last event they saw (``Last-Event-ID``), to another
    process or to this one once it is back. An app embedded in another server gets
    the same on SIGTERM and SIGINT by itself (``create_app(end_streams_on_signals=)``);
    call this when stopping the server without a signal (uvicorn's
    ``server.should_exit = True``)."""
    web = getattr(asgi, "app", None)
    closing = getattr(getattr(web, "state", None), "closing", None)
    if isinstance(closing, asyncio.Event):
        closing.set()


#: The signals that stop ASGI servers (uvicorn, hypercorn, gunicorn's workers).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Seconds between two looks at whether the uvicorn server whose signal handler
#: ``_end_streams_on_signals`` found has begun to shut down without a signal.
SHUTDOWN_WATCH = 0.1


def _end_streams_on_signals(closing: asyncio.Event) -> Callable[[], None] | None:
    """Have SIGTERM and SIGINT set ``closing`` (ending the run event streams), then run
    the handler found for them; returns what puts those handlers back, or None.

    An ASGI server's shutdown waits for the connections in progress before it tells
    the app (the lifespan's end comes after them): uvicorn waits for ever by default
    (``timeout_graceful_shutdown`` None), so an embedding server with a run page open
    did not stop until the browser left. The signal that starts the shutdown is the
    one moment both know of. Installed over a server's own handler only (uvicorn's
    ``signal.signal`` handler, the no-op Python handler asyncio's
    ``loop.add_signal_handler`` leaves, whose C-level wake-up still runs the loop's
    callback): under Python's defaults the signal ends the process at once anyway,
    and a handler set later (after the lifespan's start) is not seen.

    A handler that is a uvicorn ``Server``'s (a method of an object with a
    ``should_exit`` flag) also names the server: it is watched, every
    ``SHUTDOWN_WATCH`` seconds, for a shutdown begun without a signal (``_stopping``),
    which sets ``closing`` too: uvicorn's ``--limit-max-requests`` (and gunicorn's
    ``--max-requests``, which sets it in uvicorn's worker), or code setting
    ``server.should_exit = True``. Before, a process that reached its request limit
    while a run page was open waited for ever ("Waiting for connections to close"),
    serving nothing, and under gunicorn was killed at its ``--timeout``."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None  # (only the main thread may set signal handlers)
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Any, Any]] = {}
    for sig in STOP_SIGNALS:
        found = signal.getsignal(sig)
        if not callable(found) or found is signal.default_int_handler:
            continue

        def handler(signum: int, frame: Any, found: Any = found) -> None:
            loop.call_soon_threadsafe(closing.set)  # (safe in a signal handler)
            found(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, found)
    servers = [owner for owner in {getattr(found, "__self__", None)
                                   for _, found in installed.values()}
               if isinstance(getattr(owner, "should_exit", None), bool)]
    watcher = loop.create_task(_watch_shutdown(servers, closing)) if servers else None

    def unhook() -> None:
        if watcher is not None:
            watcher.cancel()
        for sig, (handler, found) in installed.items():
            if signal.getsignal(sig) is handler:  # (not replaced since)
                signal.signal(sig, found)

    return unhook


async def _watch_shutdown(servers: list[Any], closing: asyncio.Event) -> None:
    """Set ``closing`` once one of ``servers`` (uvicorn's) has begun to shut down."""
    while not closing.is_set():
        if any(_stopping(server) for server in servers):
            closing.set()
            return
        await asyncio.sleep(SHUTDOWN_WATCH)


def _stopping(server: Any) -> bool:
    """Whether a uvicorn ``Server`` has begun to shut down: asked to (``should_exit``),
    or, once started, it closed its listening sockets (its request limit: uvicorn's
    main loop ends then without setting ``should_exit``)."""
    if server.should_exit:
        return True
    listening: Any = getattr(server, "servers", None)
    return bool(getattr(server, "started", False) and listening) and not any(
        getattr(one, "is_serving", lambda: True)() for one in listening)


def _raw_reply(status: str, code: str, message: str, *extra: bytes) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error, for a connection closed after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n" % status.encode()
            + b"".join(extra) + b"connection: close\r\ncontent-length: %d\r\n\r\n"
            % len(body)) + body


def http_protocol(client_timeout: float | None, *,
                  connections: ConnectionLimit | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``uvicorn.Config(http=...)``) with deadlines on clients
    and, given ``connections``, a bound on the connections served at once.

    ``client_timeout`` (``None``: no deadline): a connection that began a request and
    has not sent its headers ``client_timeout`` seconds later is answered 408 and
    closed; one that sends nothing at all that long after it opened is closed (as
    uvicorn closes one idle between two requests). uvicorn waits for ever for the rest
    of a request begun (slow loris: a header line now and then held each connection,
    and its file descriptor, for as long as the client liked), and for the first byte
    of a connection (a connection opened and left held its place under the limit).

    ``connections``: each connection is admitted or not when it opens
    (``ConnectionLimit.opened``), and each request names its connection in its scope
    (``CONNECTION``) for the guard to answer one past the limit. uvicorn's own
    ``limit_concurrency`` is not used: it counts requests in progress too, answers in
    plain text, and refuses the requests of connections it had admitted (an event
    stream's reconnection, a keep-alive client) as much as those of the flood.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    reply = _raw_reply("408 Request Timeout", "request_timeout",
                       "the request's headers came too slowly")
    over = None if connections is None else _raw_reply(
        "503 Service Unavailable", "too_many_connections",
        _over_limit_message(connections.limit), b"retry-after: %d\r\n" % RETRY_AFTER)

    class Protocol(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
        _header_deadline: asyncio.TimerHandle | None = None
        _idle_deadline: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            app: ASGIApp = self.app  # type: ignore[has-type]  # (uvicorn's, untyped here)

            async def named(scope: Scope, receive: Receive, send: Send) -> None:
                scope[CONNECTION] = self
                await app(scope, receive, send)

            self.app = named

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if connections is not None and connections.opened(self) is None:
                assert over is not None
                transport.write(over)
                transport.close()
                return
            if client_timeout is not None:
                self._idle_deadline = asyncio.get_running_loop().call_later(
                    client_timeout, self._idle_too_long)

        def _waiting_for_headers(self) -> bool:
            # (uvicorn's protocols, h11 and httptools, make a cycle per request once
            # its headers are in)
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def data_received(self, data: bytes) -> None:
            if self._idle_deadline is not None:
                self._idle_deadline.cancel()
                self._idle_deadline = None
            super().data_received(data)
            if client_timeout is None:
                return
            if self._waiting_for_headers() and not self.transport.is_closing():
                if self._header_deadline is None:  # (from the request's first byte)
                    self._header_deadline = asyncio.get_running_loop().call_later(
                        client_timeout, self._headers_too_slow)
            elif self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _idle_too_long(self) -> None:
            self._idle_deadline = None
            if not self.transport.is_closing():
                log.debug("closed a connection that sent nothing in %s s", client_timeout)
                self.transport.close()

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                log.debug("closed a connection whose request headers took over %s s",
                          client_timeout)
                self.transport.write(reply)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self._header_deadline, self._idle_deadline):
                if timer is not None:
                    timer.cancel()
            self._header_deadline = self._idle_deadline = None
            if connections is not None:
                connections.closed(self)
            super().connection_lost(exc)

    return Protocol
