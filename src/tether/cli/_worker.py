"""``tether worker MODULE:APP``: serve task queues until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from tether._operations import busy_step_threads
from tether._show import counted
from tether.cli._common import (
    APP_SPEC_HELP,
    CliError,
    load_app,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from tether.errors import ConfigError

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("worker", parents=[common], help="run a worker process",
                       description="Claim and execute runs of MODULE:APP's workflows (MODULE "
                       "alone: the one tether.App the module holds). "
                       "A store it cannot reach at start is tried again, 0.5 s doubling to "
                       "10 s, one error line per attempt, until it answers. "
                       "SIGTERM/SIGINT drain it: it stops claiming, lets the steps in flight "
                       "finish for up to --grace seconds, journals them, hands every run "
                       "back to the queue and exits 0; a second signal (or the end of the "
                       "grace period) abandons what is left (those steps run again "
                       "elsewhere) and it exits 1.")
    p.add_argument("app", metavar="MODULE:APP", help=APP_SPEC_HELP)
    p.add_argument("--queue", "-q", action="append", dest="queues", metavar="Q",
                   help="queue to serve (repeatable; default: the queues of the app's workflows)")
    p.add_argument("--concurrency", "-c", type=positive_int, default=50, metavar="N",
                   help="runs executed at once (default 50)")
    p.add_argument("--lease", type=positive_float, default=5.0, metavar="SECONDS",
                   help="lease time; a dead worker's runs are taken over once it has passed "
                        "(at once on its own host) (default 5)")
    p.add_argument("--heartbeat", type=positive_float, metavar="SECONDS",
                   help="how often the worker renews its leases; below --lease (default "
                   "a quarter of --lease)")
    p.add_argument("--lease-margin", type=non_negative_float, metavar="SECONDS",
                   help="no step starts within this many seconds of its run's lease "
                   "end, room for another worker's clock running a little ahead; below "
                   "--lease minus --heartbeat, 0 turns it off (default a tenth of --lease, "
                   "at most half of --lease minus --heartbeat)")
    p.add_argument("--grace", type=non_negative_float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long steps in flight may take to finish "
                   "(default 30)")
    p.add_argument("--max-crashes", type=positive_int, default=5, metavar="N",
                   help="a run whose worker died executing it N times in a row (its code "
                   "calls os._exit() or crashes the process) with no journal progress "
                   "between is failed instead of taken over again (default 5)")
    p.add_argument("--metrics-port", type=non_negative_int, metavar="PORT",
                   help="serve GET /metrics (Prometheus text format: what this worker "
                   "process did, its counters from zero at each start) on this port; 0 "
                   "picks a free one, which the log line 'metrics on http://...' names "
                   "(default: no metrics server)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="the address of --metrics-port (default 127.0.0.1); one beyond "
                   "loopback needs tokens, as tether serve does")
    p.add_argument("--metrics-token-file", metavar="F",
                   help="tokens a scrape must send (Authorization: Bearer, a read or "
                   "admin token: entries read:TOKEN or admin:TOKEN, one a line), with "
                   "those of TETHER_API_TOKENS")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.db:
        app.use_store(args.db)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    abandon = asyncio.Event()  # a second signal: stop draining

    def on_signal() -> None:
        if stop.is_set():
            abandon.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    # The worker tries an unreachable store again (0.5 s doubling to 10 s, one log line
    # per attempt) until it answers; a stop signal meanwhile ends the wait.
    try:
        worker = app.worker(queues=args.queues, concurrency=args.concurrency,
                            lease_seconds=args.lease, heartbeat_interval=args.heartbeat,
                            lease_margin=args.lease_margin, max_crashes=args.max_crashes,
                            metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                            metrics_token_file=args.metrics_token_file)
    except ConfigError as exc:  # (the lease and metrics flags: bad input)
        raise CliError(str(exc), code=2) from None
    starting = asyncio.ensure_future(worker.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not starting.done():  # stopped while the store was unreachable
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    clean = True
    if not starting.cancelled():
        starting.result()  # (a ConfigError: a mistake no wait fixes)
        try:
            await stop.wait()
            clean = await worker.drain(args.grace, abandon)
        finally:
            await worker.stop()
    await app.close()
    # Exit 1 when steps were cut off (the grace period ran out, or a second signal):
    # their runs were handed back and the steps run again elsewhere, but the stop was
    # not the clean one the orchestrator asked for (Kubernetes shows the exit as an
    # Error; a grace period or terminationGracePeriodSeconds too short for the steps).
    code = 0 if clean else 1
    # Steps still running in threads, not the executor's live threads: one whose step
    # had just returned, not yet woken by the executor's shutdown, counted as stuck, and
    # a clean drain said "1 step threads still running after the grace period".
    stuck = busy_step_threads()
    if stuck:
        # A plain-def step that never returns must not keep the process alive (the
        # executor's threads are joined at exit): its run was handed back already.
        # ("1 step threads still running" until 2026-12-06)
        log.warning("%s still running after %s; exiting without waiting for %s",
                    counted(stuck, "step thread"), "a second stop signal"
                    if abandon.is_set() else "the grace period",
                    "it" if stuck == 1 else "them", extra={"worker_id": worker.worker_id})
    if not clean:  # (the last line of an unclean stop: docs/operations.md)
        log.error("the worker did not stop cleanly: steps in flight were cut off (%s); "
                  "their runs were handed back, and those steps run again elsewhere",
                  "a second stop signal" if abandon.is_set()
                  else f"the grace period of {args.grace:g} s ran out",
                  extra={"worker_id": worker.worker_id})
    if stuck:
        logging.shutdown()
        os._exit(code)
    return code
