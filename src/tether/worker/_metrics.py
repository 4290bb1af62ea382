"""A worker's own ``GET /metrics``: what this worker process did, in the Prometheus
text format (``tether worker --metrics-port``, ``app.worker(metrics_port=)``).

The figures are plain ints the worker already keeps or bumps where the event happens
(a claim, a run's end, a step attempt noted by the ``AttemptWriter``); a scrape reads
them and writes the text. Nothing is computed per step beyond an increment, and nothing
is read from the store. The server is asyncio's own (``asyncio.start_server``): one
request per connection, bounded in size, time and connections at once, ``GET
/metrics`` only. See docs/design-worker-metrics.md.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import importlib.metadata
import logging
import os
import time
from typing import TYPE_CHECKING

from tether._tokens import ENV_TOKENS, Tokens, is_loopback, loopback_host_header
from tether._types import ENDED_VALUES
from tether.errors import ConfigError

if TYPE_CHECKING:
    from tether.worker._worker import Worker

log = logging.getLogger("tether.worker")

#: The content type of the Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Connections served at once; one more is closed at once (a scrape is one request).
MAX_CONNECTIONS = 16
#: Bytes of a request's line and headers; a longer request is answered 431.
MAX_REQUEST = 8192
#: Seconds a client has to send its request.
REQUEST_TIMEOUT = 5.0
#: Step attempt states the ``AttemptWriter`` notes (``AttemptWriter.noted``, which
#: lists them too: the core does not import the worker).
ATTEMPT_STATES = ("running", "ok", "error", "postponed", "cancelled", "superseded")
#: Final statuses a worker records (``WorkerCounts.ended``).
END_STATUSES = (*ENDED_VALUES, "blocked")
#: How a takeover's previous owner was known dead (``WorkerCounts.taken_over``).
TAKEOVER_CAUSES = ("found_dead", "lease_expired")


#: Upper bounds (seconds) of ``tether_worker_queue_wait_seconds``' buckets: a run claimed
#: at once (a worker with free slots, woken by the start) to one that waited an hour.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0, 900.0, 3600.0)


class Histogram:
    """A Prometheus histogram's figures: a count per bucket (not cumulative: the
    exposition sums them), their sum and count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(QUEUE_WAIT_BUCKETS) + 1)  # (the last: over the last bound)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(QUEUE_WAIT_BUCKETS, value)] += 1
        self.total += value
        self.count += 1


class WorkerCounts:
    """The worker's process-local counters (reset when the process restarts)."""

    __slots__ = ("claimed", "ended", "leases_lost", "queue_wait", "released", "taken_over")

    def __init__(self) -> None:
        self.claimed = 0  #: runs claimed (a takeover included)
        self.ended: dict[str, int] = dict.fromkeys(END_STATUSES, 0)
        self.taken_over: dict[str, int] = dict.fromkeys(TAKEOVER_CAUSES, 0)
        self.released = 0  #: runs handed back to wait (a sleep, a signal, a child ...)
        self.leases_lost = 0  #: executions given up: another worker took the lease
        #: Seconds the runs claimed waited between becoming due and their claim, by queue
        #: (one of the worker's: a claim takes runs of those alone).
        self.queue_wait: dict[str, Histogram] = {}

    def waited(self, queue: str, seconds: float) -> None:
        """A run of ``queue`` was claimed ``seconds`` after it became due."""
        hist = self.queue_wait.get(queue)
        if hist is None:
            hist = self.queue_wait[queue] = Histogram()
        hist.observe(max(seconds, 0.0))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _tether_version() -> str:
    try:
        return importlib.metadata.version("tether")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return ""


class _Text:
    """The exposition being written: ``# HELP``/``# TYPE`` once per family."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def histogram(self, name: str, doc: str,
                  samples: list[tuple[dict[str, str], Histogram]]) -> None:
        """A histogram family: each sample's cumulative buckets (``le``), sum and count."""
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, hist in samples:
            seen = 0
            for bound, n in zip((*QUEUE_WAIT_BUCKETS, "+Inf"), hist.buckets, strict=True):
                seen += n
                self.sample(name + "_bucket", {**labels, "le": str(bound)}, seen)
            self.sample(name + "_sum", labels, hist.total)
            self.sample(name + "_count", labels, hist.count)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        shown = repr(float(value)) if isinstance(value, float) else str(value)
        self.lines.append(f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}")


def exposition(worker: Worker) -> str:
    """The worker's figures now, in the Prometheus text format."""
    counts = worker.counts
    noted = worker.attempts_noted()
    outage = worker.outage_figures()
    in_use = dict.fromkeys(worker.queues, 0)
    for queue in worker.active_queues():
        in_use[queue] = in_use.get(queue, 0) + 1
    p = "tether_worker_"
    t = _Text()
    t.family(p + "info", "gauge", "This worker: its id, its app's version, Tether's "
             "version and the queues it serves (always 1).",
             [({"worker_id": worker.worker_id, "version": worker.app.version or "",
                "tether_version": _tether_version(), "hostname": worker.hostname,
                "queues": ",".join(worker.queues)}, 1)])
    t.family(p + "start_time_seconds", "gauge", "When this worker was made (Unix "
             "time).", [({}, worker.metrics_started_at)])
    t.family(p + "uptime_seconds", "gauge", "Seconds since then.",
             [({}, max(time.time() - worker.metrics_started_at, 0.0))])
    t.family(p + "runs_claimed_total", "counter", "Runs this worker claimed (a "
             "takeover included; a run released and claimed again counts again).",
             [({}, counts.claimed)])
    t.family(p + "runs_taken_over_total", "counter", "Runs claimed from a worker that "
             "died holding them, by how it was known dead.",
             [({"cause": c}, n) for c, n in counts.taken_over.items()])
    t.family(p + "runs_ended_total", "counter", "Runs whose end this worker recorded, "
             "by the status the store took.",
             [({"status": s}, n) for s, n in counts.ended.items()])
    waits = {q: counts.queue_wait.get(q) or Histogram() for q in worker.queues}
    waits.update(counts.queue_wait)
    t.histogram(p + "queue_wait_seconds", "Seconds the runs this worker claimed waited "
                "between becoming due (started, a sleep's or a retry's time come, a "
                "signal arrived, a dead owner's lease expired) and their claim, by queue.",
                [({"queue": q}, h) for q, h in sorted(waits.items())])
    t.family(p + "runs_released_total", "counter", "Runs this worker handed back to "
             "wait (a sleep, a signal, a child, a retry's back-off).",
             [({}, counts.released)])
    t.family(p + "leases_lost_total", "counter", "Executions of a run this worker gave "
             "up because another worker took its lease.", [({}, counts.leases_lost)])
    t.family(p + "step_attempts_started_total", "counter", "Step attempts this worker "
             "started (each retry counts).", [({}, noted["running"])])
    t.family(p + "step_attempts_failed_total", "counter", "Step attempts that raised (a "
             "postponement not included).", [({}, noted["error"])])
    t.family(p + "step_postponements_total", "counter", "Step attempts postponed "
             "(Postpone: an open circuit breaker, a rate limit not granted yet).",
             [({}, noted["postponed"])])
    t.family(p + "step_attempts_superseded_total", "counter", "Step attempts whose body "
             "ran but whose result was refused: another worker had taken the run over, "
             "and runs the step again.", [({}, noted["superseded"])])
    t.family(p + "store_outages_total", "counter", "Times this worker's calls found the "
             "store unavailable (one per outage, however many calls failed).",
             [({}, outage[0])])
    t.family(p + "store_outage_seconds_total", "counter", "Seconds of those outages, "
             "the one going on included.", [({}, outage[1])])
    t.family(p + "store_unavailable", "gauge", "1 while the store is unavailable to this "
             "worker, else 0.", [({}, outage[2])])
    t.family(p + "slots", "gauge", "Runs this worker executes at once at most "
             "(--concurrency, shared by its queues).", [({}, worker.concurrency)])
    t.family(p + "slots_in_use", "gauge", "Runs this worker holds now, by queue.",
             [({"queue": q}, n) for q, n in sorted(in_use.items())])
    t.family(p + "draining", "gauge", "1 once the worker was told to stop (it claims "
             "nothing more), else 0.", [({}, int(worker.stopping))])
    return "\n".join(t.lines) + "\n"


def load_tokens(token_file: str | None) -> Tokens:
    """The tokens a scrape needs: ``token_file``'s and ``TETHER_API_TOKENS``'s, as for
    ``tether serve`` (none: anyone who reaches the address). Raises: ConfigError."""
    tokens = Tokens.load(token_file, log=log)
    exposed = None if token_file is None else Tokens.file_exposed(token_file)
    if exposed is not None:
        log.warning("%s", exposed)
    return tokens


def check_host(host: str, tokens: Tokens) -> None:
    """Refuse to serve beyond loopback without tokens. Raises: ConfigError."""
    if not tokens.enabled and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve worker metrics on {host} without API tokens: anyone who "
            f"can reach it could read them; give a token file (--metrics-token-file FILE, "
            f"metrics_token_file=) or {ENV_TOKENS} (entries read:TOKEN or admin:TOKEN), "
            "or bind to 127.0.0.1")


class MetricsServer:
    """``GET /metrics`` of one worker over HTTP/1.x, one request per connection."""

    def __init__(self, worker: Worker, host: str, port: int, tokens: Tokens) -> None:
        self.worker = worker
        self.host = host
        self.port = port  #: the port bound, once started (0 asks for a free one)
        self.tokens = tokens
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen. Raises: ConfigError (the address cannot be bound)."""
        try:
            self._server = await asyncio.start_server(
                self._connection, self.host.strip("[]"), self.port,
                limit=MAX_REQUEST, reuse_address=os.name == "posix")
        except OSError as exc:
            raise ConfigError(f"cannot serve worker metrics on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None
        bound = [sock.getsockname()[:2] for sock in self._server.sockets]
        self.port = bound[0][1]
        # (each address: a name such as localhost binds its IPv4 and IPv6 addresses,
        # on ports of their own when 0 asked for free ones)
        urls = ", ".join(f"http://{f'[{addr}]' if ':' in addr else addr}:{port}/metrics"
                         for addr, port in bound)
        log.info("worker %s: metrics on %s%s", self.worker.worker_id, urls,
                 " (a token needed)" if self.tokens.enabled else "")

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._open) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, headers, body, bodiless = await self._answer(reader)
                head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}",
                        "Connection: close", *headers]
                # (a HEAD is answered as its GET, without the body: a monitor's probe)
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                             + (b"" if bodiless else body))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader
                      ) -> tuple[str, list[str], bytes, bool]:
        """The status, headers and body of the answer to the request ``reader`` reads,
        and whether the body is left out (a ``HEAD``: its headers are its ``GET``'s)."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return *_plain("431 Request Header Fields Too Large", "request too large\n"), False
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return *_plain("400 Bad Request", "malformed request\n"), False
        method = parts[0]
        return *self._answer_to(method, parts[1], lines[1:]), method == "HEAD"

    def _answer_to(self, method: str, target: str, lines: list[str]
                   ) -> tuple[str, list[str], bytes]:
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return _plain("404 Not Found", "not found: only GET /metrics is served here\n")
        if method not in ("GET", "HEAD"):
            answer = _plain("405 Method Not Allowed", "only GET /metrics (or HEAD)\n")
            answer[1].append("Allow: GET, HEAD")
            return answer
        refused = self._refused(headers)
        if refused is not None:
            return refused
        return "200 OK", [f"Content-Type: {CONTENT_TYPE}"], \
            exposition(self.worker).encode()

    def _refused(self, headers: dict[str, str]) -> tuple[str, list[str], bytes] | None:
        """A scrape without a valid token (tokens configured), or, without tokens, one
        whose ``Host`` is not loopback (a page that rebinds its name to 127.0.0.1)."""
        if not self.tokens.enabled:
            if loopback_host_header(headers.get("host", "")):
                return None
            return _plain("403 Forbidden", "forbidden: not a loopback Host\n")
        if self.tokens.by_bearer(headers.get("authorization", "")) is not None:
            return None
        answer = _plain("401 Unauthorized", "a read or admin token is needed "
                        "(Authorization: Bearer TOKEN)\n")
        answer[1].append('WWW-Authenticate: Bearer realm="tether-worker"')
        return answer


def _plain(status: str, text: str) -> tuple[str, list[str], bytes]:
    return status, ["Content-Type: text/plain; charset=utf-8"], text.encode()
