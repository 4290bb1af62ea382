"""``tether serve``: the HTTP API, the web UI, ``/metrics`` and ``/healthz`` over a store."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tether._mcp_common import tool_names
from tether.cli._common import (
    EXIT_USAGE,
    CliError,
    load_app,
    non_negative_float,
    non_negative_int,
    positive_int,
    store_url,
)
from tether.errors import ConfigError

log = logging.getLogger("tether.serve")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve", parents=[common], help="serve the HTTP API and the web UI",
        description="Serve the HTTP API (/api/v1, /openapi.json), the web UI, /metrics and "
        "/healthz over the store the workers use. Stateless: several serve processes can "
        "share one PostgreSQL store. Without tokens it binds to loopback only. It listens "
        "even if the store cannot be reached yet, and opens it as soon as it answers "
        "(--wait-for-store); a store no wait fixes (a SQLite folder that does not exist, "
        "a schema behind with auto-migration off) is an error at start. SIGTERM or "
        "SIGINT shut it down: it stops accepting connections, ends the run event "
        "streams, lets the requests in progress finish for up to 3 s and exits 0; "
        "exit 1 if the shutdown was not clean (requests cancelled at those 3 s, a "
        "second SIGINT, the app's shutdown failed).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; an IPv6 address as ::1 or [::1])")
    p.add_argument("--port", type=int, default=8233, help="port (default 8233)")
    p.add_argument("--token-file", metavar="FILE",
                   help="API tokens, one ROLE:TOKEN per line (ROLE admin or read), "
                   "followed while serving (a token removed stops working); "
                   "also read from $TETHER_API_TOKENS (comma-separated)")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="load this app's code (workflow types for results, payload hooks; "
                        "its workflows and agents marked mcp=True are the tools at /mcp, "
                        "which has none without it) and serve its store, unless --db "
                        "names another")
    p.add_argument("--max-body", type=positive_int, default=None, metavar="BYTES",
                   help="largest request body accepted (default 1 MiB)")
    p.add_argument("--request-timeout", type=non_negative_float, default=None,
                   metavar="SECONDS",
                   help="how long each store operation of a request waits for the "
                   "database's answer before the request gets its 503 (default 5; 0: the "
                   "store's own query_timeout, 30 s unless the URL says otherwise); "
                   "workers keep the store's")
    p.add_argument("--client-timeout", type=non_negative_float, default=None,
                   metavar="SECONDS",
                   help="how long a client may take to send a request's headers, and "
                   "then its body (past that, at least 1 KiB/s), before it gets 408 and "
                   "its connection is closed; a new connection that sends nothing "
                   "that long is closed (default 20; 0: no limit)")
    p.add_argument("--max-connections", type=non_negative_int, default=None, metavar="N",
                   help="connections served at once (event streams included); past N, "
                   "a request answers 503 too_many_connections with Retry-After and its "
                   "connection is closed, except /healthz and /metrics on up to 16 more "
                   "(default: the file-descriptor limit, ulimit -n, less 100, halved "
                   "for a SQLite store; 0: no limit)")
    p.add_argument("--metrics-interval", type=non_negative_float, default=None,
                   metavar="SECONDS",
                   help="/metrics computes the figures that scan the whole store (runs "
                   "by status and workflow, ended runs and their durations per "
                   "workflow, step histograms, LLM totals) in the "
                   "background, at most every SECONDS and no sooner than ten times the "
                   "last computation's "
                   "duration after it; a scrape answers at once with the latest (default "
                   "15; 0: compute them in each scrape, for a small store)")
    p.add_argument("--wait-for-store", type=non_negative_float, default=None,
                   metavar="SECONDS",
                   help="give up and exit 1 if the store is still unreachable this long "
                   "after start (default: wait until it answers, serving meanwhile: "
                   "/healthz and the API answer 503 store_unavailable, the store is "
                   "tried again after 0.5 s doubling to 10 s, a line on stderr each "
                   "time; 0: exit at the first failure)")
    p.add_argument("--root-path", default="", metavar="PREFIX",
                   help="the path a reverse proxy publishes this server under, e.g. "
                   "/tether for https://ops.example.com/tether/: every link, form, "
                   "redirect, script address and cookie path, and the OpenAPI servers, "
                   "carry it; requests are answered whether the proxy strips it or not "
                   "(default: none, served at /)")
    p.set_defaults(handler=serve)


async def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tether.serve import (
            ACCEPT_BACKLOG,
            DEFAULT_CLIENT_TIMEOUT,
            DEFAULT_MAX_BODY,
            DEFAULT_METRICS_INTERVAL,
            DEFAULT_REQUEST_TIMEOUT,
            ConnectionLimit,
            StoreOpener,
            Tokens,
            check_bind,
            create_app,
            default_max_connections,
            end_streams,
            http_protocol,
        )
    except ImportError as exc:
        raise CliError(f"tether serve needs the serve extra: pip install 'tether[serve]' "
                       f"({exc})") from None
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be between 1 and 65535, got {args.port}", 2)
    if len(args.host) > 2 and args.host.startswith("[") and args.host.endswith("]"):
        # An IPv6 address as URLs write it ([::1]): the socket takes it without brackets.
        args.host = args.host[1:-1]
    try:
        tokens = Tokens.load(args.token_file)
    except ConfigError as exc:
        # A token file missing, unreadable or malformed (or TETHER_API_TOKENS): bad
        # input, as a bad --port is; until 2026-12-06 it exited 1, as a store outage.
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        check_bind(args.host, tokens)
    except ConfigError as exc:
        # A configuration refused (a public --host without tokens): bad input, one line
        # that says how to fix it, exit 2, as a bad token file; it exited 1 until
        # 2026-12-07, as if the store were down.
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.token_file is not None:
        exposed = Tokens.file_exposed(args.token_file)
        if exposed is not None:
            log.warning("%s", exposed)
    if args.app:
        app = load_app(args.app)
        if args.db:  # the app's own store unless --db names another, as `tether worker`
            app.use_store(store_url(args, must_exist=False))  # and `tether mcp` take it
    else:
        from tether import App

        app = App(store_url(args, must_exist=False))
    app._process_kind = "serve"  # (seen by `tether db copy` and `restore`)
    timeout = args.request_timeout
    client_timeout = (DEFAULT_CLIENT_TIMEOUT if args.client_timeout is None
                      else args.client_timeout or None)
    most = (default_max_connections(app.url) if args.max_connections is None
            else args.max_connections)
    connections = ConnectionLimit(most) if most else None
    given_up: list[Exception] = []

    def give_up(exc: Exception) -> None:  # (the store, after listening: stop, exit 1)
        given_up.append(exc)
        server.should_exit = True

    opener = StoreOpener(app, wait=args.wait_for_store, on_failure=give_up)
    try:
        asgi = create_app(app, tokens=tokens, max_body=args.max_body or DEFAULT_MAX_BODY,
                          request_timeout=DEFAULT_REQUEST_TIMEOUT if timeout is None
                          else timeout or None, client_timeout=client_timeout,
                          metrics_interval=DEFAULT_METRICS_INTERVAL
                          if args.metrics_interval is None else args.metrics_interval,
                          opener=opener, root_path=args.root_path, connections=connections)
    except ConfigError:
        # (the app's own mistake, e.g. an exposed workflow that cannot be a tool: said
        # as `tether mcp` says it; until 2026-12-06 it read "--root-path: ...")
        await app.close()
        raise
    except ValueError as exc:
        raise CliError(f"--root-path: {exc}", 2) from None
    level = (args.log_level or "info")
    config = uvicorn.Config(asgi, host=args.host, port=args.port, log_config=None,
                            log_level=level, access_log=level == "debug",
                            timeout_graceful_shutdown=3, lifespan="on", backlog=ACCEPT_BACKLOG,
                            http=http_protocol(client_timeout, connections=connections))
    class Server(uvicorn.Server):
        #: The stop signals received (SIGTERM, SIGINT), in order.
        signals: list[int]
        #: Every connection ended before the graceful-shutdown deadline, with no
        #: second signal forcing the exit.
        drained = False

        async def startup(self, sockets: Any = None) -> None:
            # The start line comes once the address is bound: uvicorn binds it here
            # (after the app's lifespan started) and exits 3 when it cannot, which
            # ``serve`` turns into one error line. Until 2026-12-06 the line came
            # before, and a port in use read "serving ... on http://HOST:PORT" then
            # the error.
            await super().startup(sockets=sockets)
            if self.started:
                announce()

        async def shutdown(self, sockets: Any = None) -> None:
            # The run event streams end first (their clients reconnect from their
            # last event): cancelled at the graceful-shutdown deadline instead, each
            # logged an ERROR with a traceback, at every deploy while a page was open.
            end_streams(asgi)
            await super().shutdown(sockets=sockets)

        async def _wait_tasks_to_complete(self) -> None:
            # (cancelled at the deadline: the requests still in progress are then)
            await super()._wait_tasks_to_complete()
            self.drained = not self.force_exit

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn raises the stop signals it caught again once it has shut down,
            # with the default handlers back: the process ended "killed by SIGTERM"
            # (status 143 from a shell, -15 from Python), which systemd's
            # Restart=on-failure, Kubernetes (reason Error) and supervisors record as
            # a failure, after a shutdown that was clean. The exit status says how
            # the shutdown went instead (``serve``'s end).
            with super().capture_signals():
                yield
                self.signals = list(self._captured_signals)
                self._captured_signals.clear()

    server = Server(config)
    server.signals = []
    # The first attempt to open the store comes before the server starts: a store that
    # cannot be opened (ConfigError: a mistake no wait fixes) is then one line and exit
    # 1, as for every command, not the ASGI lifespan's traceback and uvicorn's exit 3.
    # One that cannot be reached (StoreUnavailable) is tried again while serving: a
    # database that starts after this process (docker-compose, Kubernetes) would
    # otherwise cost a restart, with growing delays. (The lifespan finds it tried.)
    try:
        await opener.first()
    except BaseException:
        await app.close()
        raise
    mode = "tokens required" if tokens.enabled else "open: loopback, no tokens"
    mode += (f"; at most {connections.limit:,} connections at once" if connections
             else "; no connection limit")
    where = _address(args.host, args.port)
    root = args.root_path.strip().rstrip("/")
    if root:  # (the proxy's address is not known here: the prefix is named)
        mode += f"; under the root path {root}/, with or without it in the request"

    def announce() -> None:
        """The start lines, logged by ``Server.startup`` once the address is bound."""
        log.info("serving %s on %s (%s)%s", _without_password(app.url), where, mode,
                 "" if opener.ready else "; the store is not reached yet: requests that "
                 "need it answer 503 until it is")
        # (an /mcp with no tools answered tools/list with [] and every task "not
        # found", with nothing to say that its tools are the --app's exposed workflows)
        tools = sorted(tool_names(app.mcp_exposed))
        if tools:
            log.info("MCP at %s/mcp: %d tool%s (%s)", root, len(tools),
                     "" if len(tools) == 1 else "s", ", ".join(tools))
        else:
            log.info("MCP at %s/mcp: no tools: they are the workflows and agents marked "
                     "mcp=True in the app of --app MODULE:APP (%s)", root,
                     f"{args.app} has none" if args.app else "none given")

    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits 3 when it cannot start (the address is in use, a permission);
        # its log line above says why. Exit 3 means "not ended" for `tether result`.
        await app.close()
        raise CliError(f"could not serve on {where} (exit "
                       f"{exc.code}; the log line above says why)") from None
    if given_up:
        raise given_up[0]
    if server.signals:
        why = _unclean(server)
        if why:
            if server.force_exit:  # (uvicorn skipped the lifespan's end, which closes it)
                await app.close()
            raise CliError(f"the server did not shut down cleanly: {why}")
        log.info("shut down cleanly on %s", " then ".join(
            signal.Signals(sig).name for sig in server.signals))
    return 0


def _unclean(server: Any) -> str:
    """Why the shutdown of ``server`` (a stopped uvicorn server) was not clean, or
    ``""``: a second SIGINT forced it, requests still in progress at the
    graceful-shutdown deadline were cancelled, or the app's lifespan shutdown failed
    (uvicorn logged an ERROR for each)."""
    if server.force_exit:
        return "a second SIGINT forced the exit (the app's shutdown was skipped)"
    if not server.drained:
        return (f"requests still in progress {server.config.timeout_graceful_shutdown} s "
                "after the signal were cancelled (the ERROR above gives their number)")
    lifespan = getattr(server, "lifespan", None)
    if lifespan is not None and (lifespan.shutdown_failed or lifespan.error_occurred):
        return "the app's shutdown failed (see the ERROR above)"
    return ""


def _address(host: str, port: int) -> str:
    """The URL a browser takes for ``host:port`` (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _without_password(url: str) -> str:
    """``url`` as a log line may show it: a password in it (``postgresql://u:PW@h/db``)
    or in its query (``?password=PW``) replaced by ``***``: logs are read by more
    people than the store's owner."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and all(key != "password" for key, _ in query):
        return url
    if parts.password is not None:
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}")
    return urlunsplit(parts._replace(query=urlencode(
        [(key, "***" if key == "password" else value) for key, value in query], safe="*")))
