"""Tether's workflows and agents as MCP tools whose calls are durable Tasks.

A task is a run: the task id is the run id, and every answer comes from the store, so
any server process on the same store answers for any task. See docs/mcp-server.md for
the mapping of run states to task states and the input-request conventions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import math
import shlex
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools.base import Tool as SdkTool
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import PydanticUserError, TypeAdapter, ValidationError

from tether import App, RunHandle, RunStatus, TetherError
from tether._app import START_KEYWORDS
from tether._codec import (
    SLOT_ERROR,
    SLOT_INPUT,
    SLOT_RESULT,
    SLOT_SIGNAL,
    SLOT_STATUS,
    json_kind,
)
from tether._ids import new_run_id
from tether._lifecycle import workflow_retention
from tether._mcp_common import SYNC_TIMEOUT, TOOL_NAME_RULE, tool_names
from tether._show import budget_of, queued_in
from tether._types import ENDED_VALUES, JournalEntry, RunRecord, check_name, did_you_mean
from tether.ai._approvals import approval_key
from tether.ai._budget import BUDGET_INPUT_SCHEMA, BUDGET_SIGNAL, budget_payload
from tether.errors import (
    SHOWN_MAX,
    ConfigError,
    InvalidName,
    PayloadError,
    RunFailed,
    RunNotFound,
    StoreUnavailable,
    shown,
)
from tether.mcp_tasks import (
    CALL_PROGRESS,
    CancelTaskParams,
    CreateTaskResult,
    TasksExtension,
    UpdateTaskParams,
    install_task_notifications,
    iso_time,
    missing_capability,
    terminal_task,
)
from tether.serve.mcp._http import CheckedHttp
from tether.serve.mcp._stdio import StdioRequests, run_stdio
from tether.store import FAIL_FAST, SignalSent

__all__ = ["McpHttp", "TetherTasks", "create_mcp_http", "create_mcp_server", "serve_stdio"]

log = logging.getLogger("tether.mcp")

#: The ``_meta`` key of a ``tools/call`` that carries the client's idempotency key
#: (the one ``tether.ai.mcp`` sends): a retried call with it returns the same task.
IDEMPOTENCY_META_KEY = "idempotency_key"

#: The ``_meta`` key (value ``true``) of a completed task's ``result`` when its run was
#: erased (``tether erase``): the result is gone, and the ``isError`` result says so.
ERASED_META_KEY = "tether/erased"

#: The signal and run status conventions of ``tether.ai`` approvals.
_APPROVAL_SIGNAL = "approval"
_AWAITING_APPROVAL = "awaiting_approval"

_APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "description": "true lets the action go ahead"},
        "note": {"type": "string", "description": "a note for the agent (e.g. why not)"},
    },
    "required": ["approved"],
}
_SIGNAL_SCHEMA = {
    "type": "object",
    "properties": {"value": {"type": "string", "description": "the answer"}},
}


#: How long ``tether mcp``'s stop waits, after its worker drained, for the requests it
#: received to be answered, before it answers each one left that it is shutting down.
STOP_ANSWER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class _Exposed:
    name: str  # the tool's
    task_only: bool
    tool: SdkTool
    workflow: str  # the workflow's: the tool's name, or the one it was derived from

    def parameters(self, dumped: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments ``dumped`` (the argument model's ``model_dump(by_alias=True)``,
        or a call's arguments as sent) by the workflow's parameter names: a parameter
        whose schema name is an alias (``Annotated[str, Field(alias="from")]``; the SDK's
        ``field_json`` for a parameter ``json``) is passed under its own name."""
        names = _parameter_names(self.tool)
        return {names.get(key, key): value for key, value in dumped.items()}

    def schema_names(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A run's keyword arguments (by parameter name) under the names the tool's
        schema (its argument model) validates."""
        back = {param: key for key, param in _parameter_names(self.tool).items()}
        return {back.get(key, key): value for key, value in kwargs.items()}


@dataclass(frozen=True, slots=True)
class _Delivered:
    """An answer delivered as a signal: to which run, its payload, and what the store
    did (``created`` False: the request's key had an answer already, maybe another)."""

    run_id: str
    payload: Any
    sent: SignalSent


#: An outstanding input request and how to deliver an answer to it.
_Pending = tuple[dict[str, Any], Callable[[Any], Awaitable[_Delivered]]]

#: How deep ``tasks/get`` looks for the input requests of a task's child runs (an agent,
#: its tool that is an agent, that one's, ...).
_CHILD_DEPTH = 8


class _Refused(Exception):
    """An answer to an input request that is not one (it is not delivered, the request
    stays outstanding): ``tasks/update`` fails with -32602 and this message."""


class _NotTaken(Exception):
    """An answer to an input request that another answer came before (it is not sent):
    ``tasks/update`` fails with -32602, saying it was not taken, and this message."""


#: The reason a ``tasks/cancel`` stores with the cancel it asks (``tether show``, the run's
#: page and ``tether result`` say it), so a person reading a cancelled run can tell an
#: MCP client's cancel from an operator's.
MCP_CANCEL_REASON = "an MCP client's tasks/cancel"


class TetherTasks:
    """The task backend: tools are exposed workflows, tasks are their runs.

    Args:
        app: the Tether app (its store is where tasks live).
        expose: more workflows to expose (functions or names), besides those marked
            ``mcp=True`` in code.
        poll_interval_ms: the ``pollIntervalMs`` suggested to clients.
        ttl_ms: the ``ttlMs`` reported (milliseconds from creation the task is kept);
            ``None`` (default) derives it from the app's retention, or reports ``null``
            (kept until deleted) without one.
        sync_timeout: how long a call from a client without the Tasks extension waits
            for the run before answering that it is still running (default 50 s:
            below the 60 s after which many clients give up on a request).
    """

    def __init__(self, app: App, *, expose: Iterable[Callable[..., Any] | str] = (),
                 poll_interval_ms: int = 1000, ttl_ms: int | None = None,
                 sync_timeout: float = SYNC_TIMEOUT) -> None:
        # Checked here, as `tether mcp` checks its flags: a value out of its type (a
        # poll_interval_ms of 1.5, a ttl_ms of "x") was taken, and every task call then
        # started its run and answered "Invalid request parameters" (its
        # CreateTaskResult could not be built): the client, told nothing started,
        # called again and started another.
        if (isinstance(poll_interval_ms, bool) or not isinstance(poll_interval_ms, int)
                or poll_interval_ms < 1):
            raise ConfigError(f"poll_interval_ms must be a whole number of ms, at least 1, "
                              f"not {poll_interval_ms!r}")
        if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int)
                                   or ttl_ms < 0):
            raise ConfigError(f"ttl_ms must be None or a whole number of ms, at least 0, "
                              f"not {ttl_ms!r}")
        if (isinstance(sync_timeout, bool) or not isinstance(sync_timeout, (int, float))
                or not math.isfinite(sync_timeout) or sync_timeout <= 0):
            raise ConfigError(f"sync_timeout must be a finite number of seconds above 0, "
                              f"not {sync_timeout!r}")
        self.app = app
        self.poll_interval_ms = poll_interval_ms
        self.ttl_ms = ttl_ms
        self.sync_timeout = sync_timeout
        #: Set when the host server begins to shut down (``tether.serve.create_app``
        #: sets it with its event streams' end): a synchronous call still waiting for
        #: its run answers at once that the run goes on, instead of holding the
        #: shutdown until it is cancelled.
        self.closing: asyncio.Event | None = None
        if expose:
            app.expose_mcp(*expose)
        #: The exposed workflows by tool name (a workflow whose name is no MCP tool name
        #: is served under one derived from it: ``tether._mcp_common``).
        self.tools: dict[str, _Exposed] = {}
        workflows = app.workflows()
        named = tool_names(app.mcp_exposed)
        for tool, name in sorted(named.items()):
            mode = app.mcp_exposed[name]
            wdef = workflows.get(name)
            if wdef is None:
                raise TetherError(f"MCP: {name!r} is exposed but is not a registered workflow")
            description = (getattr(wdef.fn, "__tether_mcp_description__", None)
                           or inspect.cleandoc(wdef.fn.__doc__ or "")
                           or f"Run the workflow {name!r}.")
            parameters = inspect.signature(wdef.fn).parameters
            clash = sorted(_RESERVED & set(parameters))
            if clash:
                raise ConfigError(f"MCP: workflow {name!r} cannot be a tool: its parameter "
                                  f"{clash[0]!r} is a keyword of App.start; rename it")
            for param in parameters.values():
                # A tool's arguments are one JSON object passed as keywords: a
                # positional-only parameter could never be given, and *args/**kwargs
                # have no schema a client could follow (the SDK sees a scalar field).
                problem = _UNTOOLABLE.get(param.kind)
                if problem is not None:
                    raise ConfigError(f"MCP: workflow {name!r} cannot be a tool: its "
                                      f"parameter {param.name!r} is {problem}")
            if tool != name:
                log.warning("MCP: the workflow %r is served as the tool %r (%s)", name,
                            tool, TOOL_NAME_RULE)
            self.tools[tool] = _Exposed(tool, mode == "task-only",
                                        _sdk_tool(wdef.fn, tool, name, description), name)
        self._workflows = frozenset(named.values())

    # -- tools/call ---------------------------------------------------------------------

    async def call_tool(self, params: CallToolRequestParams, *, tasks: bool,
                        call_next: Callable[[], Awaitable[Any]]) -> Any:
        exposed = self.tools.get(params.name)
        if exposed is None:  # not ours: the SDK's server may have it (added to it)
            answer = await call_next()
            if _sdk_unknown_tool(answer, params.name):
                raise _unknown_tool(params.name, self.tools)
            return answer
        if exposed.task_only and not tasks:
            raise missing_capability(f"tool {params.name!r} (task-only)")
        meta = params.meta or {}
        key = _idempotency_key(meta.get(IDEMPOTENCY_META_KEY)
                               if isinstance(meta, Mapping) else None)
        # As the SDK does for its own tools: a list or object sent as a JSON string
        # (Claude Desktop does this) is parsed first; a str parameter stays as sent.
        arguments = exposed.tool.fn_metadata.pre_parse_json(dict(params.arguments or {}))
        model = exposed.tool.fn_metadata.arg_model
        problems = [f"{k}: unexpected argument" for k in arguments
                    if k not in model.model_fields and k not in _aliases(model)]
        try:
            validated = model.model_validate(arguments)
        except ValidationError as exc:
            problems += [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors()]
        if problems:
            return _complete(_text_result(
                f"invalid arguments for {params.name!r}: {'; '.join(problems)}", True))
        # The run gets the values as validated ("5" for an int is 5), not as sent: the
        # engine restores only rich types (models, datetimes...) from the annotations.
        try:
            arguments = validated.model_dump(mode="json", by_alias=True, exclude_unset=True)
        except Exception:  # a type pydantic cannot dump: pass what was sent
            pass
        arguments = exposed.parameters(arguments)
        run_id = _keyed_run_id(exposed.workflow, key) if key is not None else new_run_id()
        # app.start returns once the run's row is committed: only then does the task exist.
        try:
            handle = await self.app.start(exposed.workflow, run_id=run_id, **arguments)
        except PayloadError as exc:  # too large for the store: the caller's to fix
            return _complete(_text_result(f"invalid arguments for {params.name!r}: {exc}",
                                          True))
        except ConfigError as exc:  # a store no wait fixes (tether mcp serves regardless)
            return _complete(_text_result(f"tool {params.name!r}: {exc}", True))
        except StoreUnavailable as exc:
            return _complete(_unavailable_call(params.name, exc, key))
        if key is not None and handle.created is False:
            # The key names a run already: this call is its retry only if it has the
            # same arguments. A call with others would get another call's task (or
            # result) as its own; it is refused, and nothing starts.
            try:
                differs = await self._input_differs(exposed, handle.run_id, arguments)
            except StoreUnavailable as exc:
                return _complete(_unavailable_call(params.name, exc, key))
            if differs:
                return _complete(_text_result(
                    f"tool {params.name!r}: the idempotency key {shown(str(key))} names "
                    f"task {handle.run_id}, a call of this tool with other arguments; "
                    "nothing was started: call with a new key for a new call (or with "
                    "that call's arguments to get its task)", True))
        if tasks:
            try:
                task = await self.get_task(handle.run_id)
            except StoreUnavailable:
                task = None  # the run is committed: its task exists, described unread
            if task is None:
                now = iso_time(time.time())
                task = {"taskId": handle.run_id, "status": "working",
                        "statusMessage": "started (the store is unavailable to read it)",
                        "createdAt": now, "lastUpdatedAt": now, "ttlMs": self.ttl_ms,
                        "pollIntervalMs": self.poll_interval_ms}
            return CreateTaskResult.model_validate(
                {k: v for k, v in task.items()
                 if k not in ("result", "error", "inputRequests")})
        try:
            return _complete(await self._sync(handle.run_id))
        except StoreUnavailable as exc:
            return _complete(_text_result(
                f"run {handle.run_id} started, and its outcome cannot be read now: "
                f"{_unavailable(exc)}; `tether show {handle.run_id}` tells it later", True))

    async def _input_differs(self, exposed: _Exposed, run_id: str,
                             arguments: Mapping[str, Any]) -> bool | None:
        """Whether the run ``run_id`` (found under a call's idempotency key) was started
        with other arguments than ``arguments`` (this call's, as validated). Both are
        compared as the tool's schema validates them, defaults filled in: "5" and 5 for
        an int, or an argument left out and one given its default, are the same call.
        None: it cannot tell (the run's input was erased, or is a payload this server
        cannot decode, or the run was purged)."""
        store = await self.app._open()
        run = await store.run_get(run_id)
        if run is None or run.erased_at is not None:
            return None
        try:
            stored = self.app.codec.for_run(run_id).decode(run.input, None, SLOT_INPUT)
        except Exception:  # ciphertext without the hook, a key it lacks: not JSON to us
            return None
        canonical = functools.partial(_canonical_input, exposed)
        return canonical(stored) != canonical({"args": [], "kwargs": dict(arguments)})

    async def _sync(self, run_id: str) -> Any:
        """A call from a client without the extension: wait for the run (bounded); a
        run that stops to wait for input is answered at once (this client cannot give
        it)."""
        handle = self.app.handle(run_id)
        deadline = asyncio.get_running_loop().time() + self.sync_timeout
        progress = _Progress(CALL_PROGRESS.get(), run_id)
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                value = await self._result(handle, max(0.0, min(1.0, remaining)))
            except TimeoutError:
                run = await self._run(run_id)
                waiter = await self._signal_waiter(run) if run is not None else None
                if waiter is not None:
                    cli = ("`tether budget`" if waiter.waiting_for == f"signal {BUDGET_SIGNAL}"
                           else "`tether approve` / `tether signal`")
                    who = (f"run {run_id}" if waiter.run_id == run_id
                           else f"run {run_id} waits for its child run {waiter.run_id}, which")
                    return _text_result(
                        f"{who} waits for input ({waiter.waiting_for}); answer it as task "
                        f"{run_id} (tasks/get, then tasks/update, with the MCP Tasks "
                        f"extension) or with {cli}; a new call of this tool starts another "
                        "run", True)
                if remaining <= 0:
                    where = (await queued_in(self.app, run.queue)
                             if run is not None and run.status == RunStatus.QUEUED.value
                             else None)
                    going = (f"is still going after {self.sync_timeout:g} s" if where is None
                             else f"is still {where}, after {self.sync_timeout:g} s")
                    return _text_result(f"run {run_id} {going}; {_follow(run_id)}", True)
                if self.closing is not None and self.closing.is_set():
                    return _text_result(
                        f"run {run_id} is still going, and this server is shutting down; "
                        f"{_follow(run_id)}", True)
                if progress.wanted and run is not None and run.status not in ENDED_VALUES:
                    with contextlib.suppress(StoreUnavailable):  # (its queue unread)
                        await progress.report(await self._working_message(run))
                continue
            except RunFailed as exc:
                return _text_result(_error_text(exc.error) if exc.error else str(exc), True)
            return _value_result(_jsonable(value))

    async def _result(self, handle: RunHandle[Any], timeout: float) -> Any:
        """``handle.result(timeout=timeout)``; TimeoutError at once when the server
        begins to shut down (``closing``): the call answers then, not a second later
        (``tether mcp`` answers its last requests before it exits)."""
        if self.closing is None:
            return await handle.result(timeout=timeout)
        if self.closing.is_set():
            raise TimeoutError
        result = asyncio.ensure_future(handle.result(timeout=timeout))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait([result, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not result.done():
                result.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await result
        if result.cancelled():
            raise TimeoutError
        return result.result()

    # -- tasks/get ----------------------------------------------------------------------

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        run = await self._run(task_id)
        if run is None:
            return None
        task: dict[str, Any] = {
            "taskId": run.run_id, "createdAt": iso_time(run.created_at),
            "lastUpdatedAt": iso_time(run.updated_at), "ttlMs": self._ttl_ms(run),
            "pollIntervalMs": self.poll_interval_ms,
        }
        status = run.status
        codec = self.app.codec.for_run(run.run_id)
        if run.erased_at is not None and status in (RunStatus.COMPLETED.value,
                                                     RunStatus.FAILED.value):
            # Its result or error is the erasure marker, not the workflow's: answered as
            # such (as App.result raises RunFailed, status "erased"), not as the tool's
            # result {"erased": true} a client could not tell from a real one.
            self._erased(task, run)
        elif status == RunStatus.COMPLETED.value:
            task["status"] = "completed"
            try:
                value = codec.decode(run.result, None, SLOT_RESULT)
            except PayloadError as exc:
                raise _UnreadablePayload("result", run.run_id, exc) from exc
            # A CallToolResult of the 2026-07-28 protocol, whose schema requires its
            # "resultType" (a client validating the inlined result refused it without).
            task["result"] = _complete(_value_result(value))
        elif status == RunStatus.FAILED.value:
            try:
                error = _decode(self.app, run.run_id, run.error, SLOT_ERROR)
            except PayloadError as exc:
                raise _UnreadablePayload("error", run.run_id, exc) from exc
            task["status"] = "failed"
            task["statusMessage"] = _error_text(error)
            task["error"] = {"code": -32603, "message": _error_text(error),
                             "data": _error_data(error)}
        elif status == RunStatus.CANCELLED.value:
            task["status"] = "cancelled"
            task["statusMessage"] = "cancelled"
        else:
            requests = await self._input_requests(run)
            if requests:
                task["status"] = "input_required"
                task["inputRequests"] = {key: req for key, (req, _) in requests.items()}
                task["statusMessage"] = f"waiting for {run.waiting_for}"
            else:
                task["status"] = "working"
                task["statusMessage"] = await self._working_message(run)
        return task

    async def _working_message(self, run: RunRecord) -> str:
        """A working task's ``statusMessage``; a queued run's says when no live worker
        serves its queue, or the queue is paused (``tether serve`` runs no worker: its
        tasks stayed "queued", with nothing to say why)."""
        if run.status == RunStatus.QUEUED.value:
            where = await queued_in(self.app, run.queue)
            if where != f"queued in queue {run.queue}":
                return where
        if run.status == RunStatus.RUNNING.value and run.owner:
            stopped = await self._owner_stopped(run)
            if stopped is not None:
                return stopped
        return _working_message(run)

    async def _owner_stopped(self, run: RunRecord) -> str | None:
        """A running run's ``statusMessage`` when the worker holding it is no longer live
        (killed, its host gone: no heartbeat for ``WORKER_STALE`` s): it said "running"
        for as long as no worker took the run over, which none does while no live worker
        serves its queue. None while its worker is live."""
        from tether.store._port import WORKER_STALE

        now = self.app.clock.now()
        if now - run.updated_at < WORKER_STALE / 2:
            # Its worker wrote it since, and heartbeats after that: live (no read of the
            # worker list for each tasks/get and notification of a run that moves).
            return None
        workers = await self.app.store.worker_list()
        owner = next((w for w in workers if w.worker_id == run.owner), None)
        if owner is not None and now - owner.heartbeat_at <= WORKER_STALE:
            return None
        since = ("" if owner is None
                 else f" (no heartbeat for {now - owner.heartbeat_at:,.0f} s)")
        queue = run.queue
        live = any(now - w.heartbeat_at <= WORKER_STALE and queue in w.queues.split(",")
                   for w in workers)
        then = (f"a live worker of queue {queue} takes it over" if live
                else f"no live worker serves queue {queue} to take it over (tether worker "
                     f"MODULE:APP --queue {shlex.quote(queue)})")
        return f"running on worker {run.owner}, which stopped{since}; {then}"

    @staticmethod
    def _erased(task: dict[str, Any], run: RunRecord) -> None:
        """A completed or failed task whose run was erased (``tether erase``): it keeps
        its status; a completed one's result is an ``isError`` result saying the result
        is gone (``_meta["tether/erased"]``: true), a failed one's error says the error
        is gone (``data.erased``). (The completed one's had no mark a program could
        tell from a tool's own error result until 2026-12-08.)"""
        what = "result" if run.status == RunStatus.COMPLETED.value else "error"
        message = (f"the run's payloads were erased (tether erase) at "
                   f"{iso_time(run.erased_at or 0.0)}: its {what} is gone")
        if what == "result":
            task["status"] = "completed"
            task["result"] = {**_complete(_text_result(message, True)),
                              "_meta": {ERASED_META_KEY: True}}
            return
        task["status"] = "failed"
        task["statusMessage"] = f"RunErased: {message}"
        task["error"] = {"code": -32603, "message": f"RunErased: {message}",
                         "data": {"type": "tether.errors.RunErased", "message": message,
                                  "erased": True}}

    def _ttl_ms(self, run: RunRecord) -> int | None:
        """``ttlMs``: the configured value, else the retention the task's runs are purged
        under: its workflow's own (``@app.workflow(retention=)``; ``"forever"``: never
        discarded, ``null``), else the app's (``App(retention=)`` purges ended runs
        ``older_than`` seconds after they ended): an ended task may be discarded that
        long after its creation plus its run time; a task still going is never
        discarded (``null``; the extension lets the TTL change over a task's life)."""
        if self.ttl_ms is not None:
            return self.ttl_ms
        retention = workflow_retention(self.app, run.workflow)
        older_than = getattr(retention, "older_than", None)
        statuses = getattr(retention, "statuses", ())
        if older_than is None or run.finished_at is None or run.status not in statuses:
            return None
        return int((run.finished_at - run.created_at + float(older_than)) * 1000)

    async def _run(self, task_id: str) -> RunRecord | None:
        try:
            # A NUL or a lone surrogate (valid JSON escapes) is in no run id, and the
            # store's driver would refuse the text (an opaque internal error).
            check_name("task id", task_id, new=False)
        except InvalidName:
            return None
        store = await self.app._open()
        run = await store.run_get(task_id)
        if run is None or run.workflow not in self._workflows:
            return None  # only runs of exposed tools are tasks
        return run

    async def _input_requests(self, run: RunRecord, depth: int = 0) -> dict[str, _Pending]:
        """The outstanding input requests of a waiting run: key -> (the request, how to
        deliver an answer). Keys are unique over the run's life. A run waiting for
        child runs has theirs (``_children_requests``); a run whose branches wait for
        several things at once (``waiting_for`` "signal a or signal b", "signal a or
        timer until ...") has one request per signal it waits for."""
        if run.status != RunStatus.WAITING.value:
            return {}
        names = [part[len("signal "):] for part in _wait_parts(run.waiting_for)
                 if part.startswith("signal ")]
        found: dict[str, _Pending] = {}
        if names:
            try:
                info = _decode(self.app, run.run_id, run.status_info, SLOT_STATUS)
            except PayloadError as exc:  # (an answer it sent could not be read either)
                raise _UnreadablePayload("input request", run.run_id, exc) from exc
            store = await self.app._open()
            journal = await store.journal_read(run.run_id)
            for name in dict.fromkeys(names):
                found.update(await self._signal_request(run, name, info, journal))
        found.update(await self._children_requests(run, depth))
        return found

    async def _signal_request(self, run: RunRecord, name: str, info: Any,
                              journal: list[JournalEntry]) -> dict[str, _Pending]:
        """The input request of ``run``'s wait for the signal ``name`` (its status
        ``info`` says which kind: an approval, a budget, a published form)."""
        app = self.app
        approval = info.get("approval") if isinstance(info, Mapping) else None
        if (name == _APPROVAL_SIGNAL and isinstance(info, Mapping)
                and info.get("state") == _AWAITING_APPROVAL and isinstance(approval, Mapping)):
            approval_id = str(approval.get("id", ""))
            # (also the answer's idempotency key, as `tether approve` sends it)
            key = approval_key(approval_id, run.generation)
            tool = str(approval.get("tool", ""))
            args = approval.get("arguments")
            message = (f"Approve {tool}({json.dumps(args, ensure_ascii=False)})? "
                       f"{approval.get('reason') or ''}").strip()
            request = {"method": "elicitation/create", "params": {
                "mode": "form", "message": message, "requestedSchema": _APPROVAL_SCHEMA,
                "_meta": {"tether/approval": {"id": approval_id, "tool": tool,
                                              "arguments": args}}}}

            async def approve(response: Any) -> _Delivered:
                payload = _approval_payload(response, approval_id)
                return _Delivered(run.run_id, payload, await app._signal(
                    run.run_id, _APPROVAL_SIGNAL, payload, idempotency_key=key))

            return {key: (request, approve)}
        taken = sum(1 for e in journal if e.kind == "signal" and e.name == name
                    and e.status != "pending")
        # Unique over the task's life: a run that continued as new counts its waits
        # again from a fresh journal, so its keys name the generation.
        key = (f"signal:{name}:{taken + 1}" if not run.generation
               else f"signal:{name}:g{run.generation}.{taken + 1}")
        if (name == BUDGET_SIGNAL and isinstance(info, Mapping)
                and info.get("waiting_for") == "budget"):
            return {key: await self._budget_request(run, info, key)}
        wanted = info.get("input") if isinstance(info, Mapping) else None
        schema = _SIGNAL_SCHEMA
        message = f"The run waits for the signal {name!r}."
        if isinstance(wanted, Mapping) and wanted.get("signal") == name:
            published = wanted.get("schema")
            # An elicitation's schema is an object's: any other published value (text, a
            # list, {"type": "string"}) made tasks/get fail with an opaque internal error
            # or sent clients a form they must refuse; the generic one is asked instead.
            if isinstance(published, Mapping) and published.get("type") == "object":
                schema = dict(published)
            message = str(wanted.get("message") or message)
        request = {"method": "elicitation/create", "params": {
            "mode": "form", "message": message, "requestedSchema": schema,
            "_meta": {"tether/signal": name}}}

        async def deliver(response: Any) -> _Delivered:
            return await self._send(run.run_id, name, _signal_payload(response), key)

        return {key: (request, deliver)}

    async def _signal_waiter(self, run: RunRecord, depth: int = 0) -> RunRecord | None:
        """The run that has an input request for ``run``'s task: ``run`` itself, or a
        child run it waits for (or one of theirs); ``None`` when none has."""
        if await self._input_requests(run, _CHILD_DEPTH):  # (its own requests only)
            return run
        if run.status != RunStatus.WAITING.value or depth >= _CHILD_DEPTH:
            return None
        store = await self.app._open()
        for part in _wait_parts(run.waiting_for):
            child = (await store.run_get(part[len("child "):])
                     if part.startswith("child ") else None)
            found = await self._signal_waiter(child, depth + 1) if child else None
            if found is not None:
                return found
        return None

    async def _children_requests(self, run: RunRecord, depth: int) -> dict[str, _Pending]:
        """The input requests of the child runs ``run`` waits for, and of theirs, keyed
        ``child:<child run id>:<the child's key>`` and answered to the child: an agent
        whose tool is another agent waits while that child waits on its share of the
        budget or for an approval, which the task's client must be able to give."""
        if depth >= _CHILD_DEPTH:
            return {}
        store = await self.app._open()
        found: dict[str, _Pending] = {}
        for part in _wait_parts(run.waiting_for):
            if not part.startswith("child "):
                continue
            child_id = part[len("child "):]
            child = await store.run_get(child_id)
            if child is None:
                continue
            for key, pending in (await self._input_requests(child, depth + 1)).items():
                found[f"child:{child_id}:{key}"] = pending
        return found

    async def _send(self, run_id: str, name: str, payload: Any, key: str) -> _Delivered:
        """Send the answer to the signal request ``key`` of the run ``run_id``.

        Raises:
            _NotTaken: a signal ``name`` sent another way (``tether signal``, the HTTP
                API: without this request's key) waits in the run's inbox already: the
                run's wait takes that one, and this answer would be left for its next
                wait of that name. It is not sent.
        """
        ikey = _signal_key(run_id, key)
        store = await self.app._open()
        # Pending first, then this key: a waiting signal sent under this key by another
        # process (the same answer resent to another server at once) committed before
        # the first look is seen by the second. In the other order, one that committed
        # between the looks read as a signal sent another way, and an identical resend
        # was told it was not taken.
        if (await store.signal_pending(run_id=run_id, name=name)
                and await store.signal_find(run_id=run_id, idempotency_key=ikey) is None):
            raise _NotTaken(f"a signal {name!r} sent another way (tether signal, the HTTP "
                            "API) waits for the run to take it")
        return _Delivered(run_id, payload, await self.app._signal(run_id, name, payload,
                                                                  idempotency_key=ikey))

    async def _budget_request(self, run: RunRecord, info: Mapping[str, Any], key: str
                              ) -> _Pending:
        """A run waiting on its LLM budget (``tether.ai``, policy ``wait``): the answer is
        new limits, sent as ``tether budget`` sends them; anything else is refused, not
        consumed (the run would just wait again)."""
        wanted = info.get("input")
        message = (str(wanted.get("message")) if isinstance(wanted, Mapping)
                   and wanted.get("message") else "The run's LLM budget is reached: give "
                   "new limits (usd and/or tokens) to continue.")
        figures = await self._budget_figures(run, info)
        request = {"method": "elicitation/create", "params": {
            "mode": "form", "message": message, "requestedSchema": BUDGET_INPUT_SCHEMA,
            "_meta": {"tether/signal": BUDGET_SIGNAL, "tether/budget": figures}}}

        async def raise_budget(response: Any) -> _Delivered:
            return await self._send(run.run_id, BUDGET_SIGNAL, _budget_answer(response), key)

        return request, raise_budget

    async def _budget_figures(self, run: RunRecord, info: Mapping[str, Any]
                              ) -> dict[str, Any]:
        """A budget request's ``_meta["tether/budget"]``: the run's ``budget`` as its
        document gives it (``GET /api/v1/runs/{id}``, ``tether show --json``: the same
        ``run_document``, so one source): ``usd``, ``tokens``, ``spent_usd``,
        ``spent_tokens`` and, when its limits are not known, ``limits_unknown``; then
        ``budget_usd`` and ``budget_tokens`` (its limits again, under the keys this face
        first sent them), and from the run's live status which limit stopped it
        (``blocked_by``) and what the refused call was estimated to cost
        (``estimate_usd``, ``estimate_tokens``): a raise must cover it for the run to go
        on. (It carried the live status's four spend and limit figures alone.) The
        budget is read alone (``budget_of``, by ``run_document``'s rule): this reading
        decoded the whole document, every generation's journal, on each ``tasks/get``."""
        try:
            budget = await budget_of(self.app, run.run_id)
        except RunNotFound:  # (purged meanwhile: the status's figures)
            budget = None
        figures: dict[str, Any] = (dict(budget) if isinstance(budget, Mapping) else {
            "usd": info.get("budget_usd"), "tokens": info.get("budget_tokens"),
            "spent_usd": info.get("spent_usd"), "spent_tokens": info.get("spent_tokens")})
        figures["budget_usd"], figures["budget_tokens"] = figures["usd"], figures["tokens"]
        for extra in ("blocked_by", "estimate_usd", "estimate_tokens"):
            if info.get(extra) is not None:
                figures[extra] = info[extra]
        return figures

    # -- tasks/update, tasks/cancel -----------------------------------------------------

    async def update_task(self, task_id: str, input_responses: Mapping[str, Any]) -> bool:
        """Deliver the answers to outstanding requests (others are ignored, unless
        answered already with another answer: see below).

        An answer sent again under its key (a retry after a lost reply, another process
        answering the same) is delivered once. The first answer of a key wins: one
        that differs from the answer the key got already (two clients answering one
        approval differently, or an answer to a request the run has taken another
        answer for, through MCP or ``tether approve``) is not taken, and says so.

        Raises:
            MCPError: -32602 if an answer to an outstanding request is refused (it is
                not an answer to it: the request stays outstanding), or was not taken
                (its key was answered already with another answer); the message says
                which and why, ``data`` lists the keys (``refused``, ``notTaken``).
                Other answers of the same update are delivered.
        """
        run = await self._run(task_id)
        if run is None:
            return False
        outstanding = await self._input_requests(run)
        refused: dict[str, str] = {}
        not_taken: dict[str, str] = {}
        for key, response in input_responses.items():
            entry = outstanding.get(key) or await self._late_request(run, key)
            if entry is None:
                # Never issued, answered already, or superseded: ignored, as the
                # extension says, unless it was answered with another answer.
                taken = await self._answered_otherwise(run, key, response)
                if taken is not None:
                    not_taken[key] = taken
                continue
            try:
                done = await entry[1](response)
            except _Refused as exc:
                refused[key] = str(exc)
                continue
            except _NotTaken as exc:
                not_taken[key] = str(exc)
                continue
            except TetherError:
                continue  # the run ended meanwhile
            if not done.sent.created:  # (a retry, or another answer that came first)
                taken = _other_answer(self.app, done.run_id, done.sent, [done.payload])
                if taken is not None:
                    not_taken[key] = taken
        if refused or not_taken:
            parts = [f"{what}: " + "; ".join(f"{k}: {why}" for k, why in which.items())
                     for what, which in (
                         ("answer refused, the request stays outstanding", refused),
                         ("answer not taken, the request was answered already with "
                          "another answer (the first answer wins)", not_taken)) if which]
            raise MCPError(code=INVALID_PARAMS, message="; ".join(parts),
                           data={"refused": list(refused), "notTaken": list(not_taken)})
        return True

    async def _late_request(self, run: RunRecord, key: str, depth: int = 0
                            ) -> _Pending | None:
        """The request ``key`` names if it is still to be answered though not in the
        task's requests now, because another answer woke the run and it is running
        (a run's requests are read while it waits): the answer to one branch's wait
        while another branch still waits, or to a child that still waits while its
        parent runs. Without this, an answer sent in the moment between was ignored,
        and a client that answers each key once (as the extension asks) never answered
        it again: the run waited for ever. A ``signal:NAME:N`` key of a running run
        names its N-th wait of NAME, which has not ended if N is one more than the
        waits of NAME its journal has ended (keys count them so); ``child:<id>:KEY``
        is the child's request KEY, read from the child."""
        if depth >= _CHILD_DEPTH:
            return None
        if key.startswith("child:"):
            found = await self._child_of_key(run, key)
            if found is None:
                return None
            child, rest = found
            own = await self._input_requests(child, _CHILD_DEPTH)
            return own.get(rest) or await self._late_request(child, rest, depth + 1)
        if run.status != RunStatus.RUNNING.value or not key.startswith("signal:"):
            return None
        name, _, count = key[len("signal:"):].rpartition(":")
        prefix = f"g{run.generation}." if run.generation else ""
        if not name or not count.startswith(prefix) or not count[len(prefix):].isdigit():
            return None
        store = await self.app._open()
        journal = await store.journal_read(run.run_id)
        ended = sum(1 for e in journal if e.kind == "signal" and e.name == name
                    and e.status != "pending")
        if int(count[len(prefix):]) != ended + 1:
            return None

        async def deliver(response: Any) -> _Delivered:
            payload = (_budget_answer(response) if name == BUDGET_SIGNAL
                       else _signal_payload(response))
            return await self._send(run.run_id, name, payload, key)

        return {}, deliver

    async def _child_of_key(self, run: RunRecord, key: str
                            ) -> tuple[RunRecord, str] | None:
        """For ``child:<id>:<its key>``: the child run of ``run`` and its own key."""
        store = await self.app._open()
        rest = key[len("child:"):]
        # The child's id, then the child's own key (an id may hold a ':' too).
        for i, ch in enumerate(rest):
            if ch != ":" or not rest[i + 1:].startswith(_KEY_KINDS):
                continue
            child = await store.run_get(rest[:i])
            if child is not None and child.parent_run_id == run.run_id:
                return child, rest[i + 1:]
        return None

    async def _answered_otherwise(self, run: RunRecord, key: str, response: Any,
                                  depth: int = 0) -> str | None:
        """For an answer whose key is not outstanding: what the key was answered with,
        if another answer than ``response`` (then ``response`` was not taken); None
        when the key has no answer (never issued, superseded: the answer is ignored,
        as the extension says), the same one (a retry after a lost reply), or one that
        cannot be read. Answers are found by their idempotency key (the one each
        delivery sends), on the run or, for ``child:<id>:<key>``, its child."""
        store = await self.app._open()
        if key.startswith("child:"):
            found = await self._child_of_key(run, key) if depth < _CHILD_DEPTH else None
            if found is None:
                return None
            return await self._answered_otherwise(found[0], found[1], response, depth + 1)
        if key.startswith("approval:"):
            ikey = key  # (approval_key: the key the answer is sent with, by any face)
        elif key.startswith("signal:"):
            ikey = _signal_key(run.run_id, key)
        else:
            return None
        try:
            check_name("idempotency key", ikey, new=False)
        except InvalidName:
            return None  # no answer was ever sent under it
        if run.erased_at is not None:
            return None
        sent = await store.signal_find(run_id=run.run_id, idempotency_key=ikey)
        if sent is None:
            return None
        stored = _decoded(self.app, run.run_id, sent)
        candidates: list[Any] = []
        builders: list[Callable[[Any], Any]] = []
        if key.startswith("approval:") and sent.name == _APPROVAL_SIGNAL:
            approval_id = stored.get("approval_id") if isinstance(stored, Mapping) else None
            builders.append(functools.partial(_approval_payload,
                                              approval_id=str(approval_id)))
        else:
            builders.append(_signal_payload)
            if sent.name == BUDGET_SIGNAL:
                builders.append(_budget_answer)
        for build in builders:
            try:
                candidates.append(build(response))
            except _Refused:
                continue
        return _other_answer(self.app, run.run_id, sent, candidates)

    async def cancel_task(self, task_id: str) -> bool:
        """Ask the task's run to cancel (``App.cancel``: durable; the run stops at its
        next operation).

        Raises:
            MCPError: -32602 if the task has ended (completed, failed or cancelled),
                before this request or before the cancel could take effect: the
                2025-11-25 Tasks text's "Receivers MUST reject cancellation requests
                for tasks already in a terminal status". Nothing changes. (It was
                acknowledged: a client could not tell a cancel that stopped the work
                from one that came too late, after a result it then never read.)
        """
        run = await self._run(task_id)
        if run is None:
            return False
        if run.status in ENDED_VALUES:
            raise terminal_task(task_id, run.status)
        try:
            status = await self.app.cancel(task_id, reason=MCP_CANCEL_REASON)
        except RunNotFound:
            return False
        except TetherError:
            return True  # (cancellation is eventually consistent)
        if status in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise terminal_task(task_id, status.value)  # it ended before the cancel
        return True


# -- helpers -----------------------------------------------------------------------------------


#: Keyword arguments of ``App.start`` (its first parameter and ``START_KEYWORDS``): a
#: workflow parameter of that name cannot be passed through it.
_RESERVED = frozenset({"workflow", *START_KEYWORDS})

#: Parameter kinds a tool (called with keyword arguments from a JSON object) cannot
#: have, and why.
def _sdk_tool(fn: Callable[..., Any], tool: str, name: str, description: str) -> SdkTool:
    """The SDK's tool for the workflow ``fn``: its input schema from the annotations. An
    annotation pydantic cannot make a JSON schema of (a class of no schema, a
    ``typing.TypedDict`` before Python 3.12) is a ``ConfigError`` naming the workflow and
    the parameter, as a signature no call could fill is: pydantic's error escaped as a
    traceback, and `tether mcp` / `tether serve --app` ended with it, serving no tool."""
    for param in inspect.signature(fn).parameters:
        # The SDK refuses the first (InvalidSignature), and pydantic takes the second
        # for the argument model's configuration (a ValueError): each was a traceback.
        why = (_UNDERSCORE if param.startswith("_")
               else _PYDANTIC_CONFIG if param == "model_config" else None)
        if why is not None:
            raise ConfigError(f"MCP: workflow {name!r} cannot be a tool: its parameter "
                              f"{param!r} {why}: rename it")
    try:
        sdk = SdkTool.from_function(fn, name=tool, description=description,
                                    structured_output=False)
    except PydanticUserError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"MCP: workflow {name!r} cannot be a tool: "
                          f"{_unschemable_parameter(fn)}has no JSON schema ({reason}); "
                          "annotate it with a pydantic model, a dataclass or a JSON type"
                          ) from None
    # The schema says what a call refuses: an argument the workflow does not take is a
    # tool error ("NAME: unexpected argument", ``call_tool``), so the top-level object
    # admits no other property. (Without it the schema let a client, or a model that
    # fills arguments from the schema, send any, which the call then refused.) A
    # workflow taking **kwargs, which would take others, is no tool (``_UNTOOLABLE``).
    sdk.parameters = {**sdk.parameters, "additionalProperties": False}
    return sdk


_UNDERSCORE = ("begins with '_', which the MCP SDK's tools refuse (a tool's argument "
               "names are public)")
_PYDANTIC_CONFIG = ("is the name pydantic keeps for a model's configuration (the tool's "
                    "arguments are a pydantic model)")


def _parameter_names(tool: SdkTool) -> dict[str, str]:
    """The tool's argument names as its argument model dumps them (by alias), each to the
    workflow parameter it fills, for those that differ: a parameter aliased in its
    annotation (``Field(alias="from")``), and one the SDK renamed (``field_json``, alias
    ``json``, for a parameter named like a ``BaseModel`` method)."""
    params = inspect.signature(tool.fn).parameters
    names: dict[str, str] = {}
    for field_name, field in tool.fn_metadata.arg_model.model_fields.items():
        dumped = field.serialization_alias or field.alias or field_name
        param = field_name if field_name in params else field.alias
        if param is not None and param in params and dumped != param:
            names[dumped] = param
        accepted = (field.validation_alias if isinstance(field.validation_alias, str)
                    else field.alias)
        if accepted is not None and accepted != dumped and param is not None:
            names.setdefault(accepted, param)
    return names


def _unschemable_parameter(fn: Callable[..., Any]) -> str:
    """``"its parameter 'NAME' "`` for the first parameter of ``fn`` whose annotation has
    no JSON schema, or ``"a parameter "`` when none can be singled out."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that does not resolve: the SDK's error says it
        return "a parameter "
    for param in inspect.signature(fn).parameters:
        if param in hints:
            try:
                TypeAdapter(hints[param]).json_schema()
            except PydanticUserError:
                return f"its parameter {param!r} "
    return "a parameter "


_UNTOOLABLE: dict[Any, str] = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only (a tool's arguments are passed "
                                       "by name): drop the '/'",
    inspect.Parameter.VAR_POSITIONAL: "*args (a tool's arguments are named, each with its "
                                      "own schema): take a list parameter instead",
    inspect.Parameter.VAR_KEYWORD: "**kwargs (a tool's arguments are named, each with its "
                                   "own schema): take a dict parameter instead",
}


#: How many tool names an unknown tool's error lists in ``data.known``.
_SHOWN_TOOLS = 10


def _unknown_tool(name: str, known: Iterable[str]) -> MCPError:
    """A ``tools/call`` of a tool this server does not serve: a protocol error, -32602, as
    the MCP specification's Tools page (2025-06-18, 2025-11-25, "Error Handling") lists
    unknown tools, with its example's message "Unknown tool: NAME", followed by the
    closest tool name when one is close; ``data`` has the name and the first tool names.
    (It was the SDK's tool error result, ``isError: true``, which a client could not tell
    from the tool's own failure, and whose text named no tool that exists.)"""
    names = sorted(known)
    return MCPError(code=INVALID_PARAMS,
                    message=f"Unknown tool: {shown(name, quoted=False)}"
                            f"{did_you_mean(name, names)}",
                    data={"tool": name[:SHOWN_MAX], "known": names[:_SHOWN_TOOLS]})


def _sdk_unknown_tool(answer: Any, name: str) -> bool:
    """``answer`` is the SDK's to a ``tools/call`` of a tool its server lacks too: a
    tool error result whose one text is "Unknown tool: NAME" (``ToolManager``'s)."""
    if isinstance(answer, CallToolResult):
        answer = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not isinstance(answer, Mapping) or answer.get("isError") is not True:
        return False
    content = answer.get("content")
    return (isinstance(content, list) and len(content) == 1
            and isinstance(content[0], Mapping)
            and content[0].get("text") == f"Unknown tool: {name}")


def _unavailable(exc: StoreUnavailable) -> str:
    return f"the store is unavailable ({exc})"


def _unavailable_call(tool: str, exc: StoreUnavailable, key: Any) -> dict[str, Any]:
    """A ``tools/call`` whose store failed: a tool error, as the SDK answers for a plain
    tool whose backend failed: the client (or its model) reads why and may call
    again."""
    again = ("with the same idempotency key (a run this call may have started is then "
             "the one answered)" if key is not None else "(if the store failed mid-way a "
             "run may have started: an idempotency key in _meta makes a retry safe)")
    return _text_result(f"tool {tool!r}: {_unavailable(exc)}; call again later {again}",
                        True)


def _canonical_input(exposed: _Exposed, payload: Any) -> str:
    """A run's input (``{"args": [...], "kwargs": {...}}``) as one text to compare: the
    keyword arguments as the tool's schema validates them, every default filled in,
    and keys sorted (as ``tether._show`` compares a start with the run it found)."""
    if not isinstance(payload, Mapping):
        return json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    kwargs = payload.get("kwargs") or {}
    try:
        kwargs = exposed.tool.fn_metadata.arg_model.model_validate(
            exposed.schema_names(kwargs)).model_dump(mode="json", by_alias=True)
    except Exception:  # no longer valid for the tool (its schema changed): as stored
        pass
    return json.dumps({"args": list(payload.get("args") or []), "kwargs": kwargs},
                      sort_keys=True, ensure_ascii=False, default=str)


#: How each part of a run's ``waiting_for`` begins (``merge_waits`` joins the waits of
#: its branches with " or "): a part that begins otherwise continues the one before
#: it (a signal's name, or a message, that holds " or ").
_WAIT_KINDS = ("signal ", "child ", "timer ", "retry ", "postponed ")


def _wait_parts(waiting_for: str | None) -> list[str]:
    """What a waiting run waits for, one part per branch's wait."""
    parts: list[str] = []
    for part in (waiting_for or "").split(" or "):
        if parts and not part.startswith(_WAIT_KINDS):
            parts[-1] += f" or {part}"
        else:
            parts.append(part)
    return parts


#: How an input request's key begins (after ``child:<child run id>:``).
_KEY_KINDS = ("approval:", "signal:", "child:")


def _signal_key(run_id: str, key: str) -> str:
    """The idempotency key an answer to the request ``key`` of run ``run_id`` is sent
    with (an approval's is its own key: ``approval_key``)."""
    return f"mcp:{run_id}:{key}"


def _approval_payload(response: Any, approval_id: str) -> dict[str, Any]:
    """The ``approval`` signal's payload for an answer to an approval request, as
    ``tether approve`` sends it.

    Raises:
        _Refused: an accept without a boolean ``approved``.
    """
    action, content = _elicit(response)
    approved = content.get("approved")
    if action == "accept" and not isinstance(approved, bool):
        # Not an answer (the schema requires a boolean): a missing field or a string
        # "false" must not run the tool, as in tether.ai.
        raise _Refused("an accept needs 'approved': true or false (a boolean), "
                       f"not {approved!r}")
    approved = action == "accept" and approved is True
    note = content.get("note")
    if action != "accept":
        note = note or f"{action}d by the MCP client"
    return {"approved": approved, "note": None if note is None else str(note),
            "approval_id": approval_id}


def _signal_payload(response: Any) -> Any:
    """The signal's payload for an answer to a generic signal request."""
    action, content = _elicit(response)
    return content if action == "accept" else {"action": action}


def _budget_answer(response: Any) -> dict[str, Any]:
    """The ``budget`` signal's payload for an answer to a budget request, as ``tether
    budget`` sends it.

    Raises:
        _Refused: anything but an accept with new limits.
    """
    action, content = _elicit(response)
    if action != "accept":
        raise _Refused(f"the run waits until its budget is raised ({action} does not): "
                       "accept with new limits, or cancel the task")
    try:
        return budget_payload(content)
    except ValueError as exc:
        raise _Refused(f"not new limits: {exc}") from None


class _Unreadable:
    """A stored answer this server cannot decode (``_decoded``)."""


def _decoded(app: App, run_id: str, sent: SignalSent) -> Any:
    """The payload of the signal ``sent``, decoded; ``_Unreadable`` if it cannot be."""
    if sent.payload is None:
        return None
    try:
        return app.codec.for_run(run_id).decode(sent.payload, None, SLOT_SIGNAL)
    except Exception:  # sealed with a key this server lacks, or no JSON
        return _Unreadable()


def _other_answer(app: App, run_id: str, sent: SignalSent, candidates: list[Any]
                  ) -> str | None:
    """Whether the answer stored under a key (``sent``: run ``run_id``'s signal) is
    another than this one (any of ``candidates``, the payloads this answer may have
    been sent as): what the stored answer was, or None when it is the same (a retry)
    or cannot be read (erased, sealed with a key this server lacks): as a signal's
    ``data_differs`` null, that is no conflict."""
    stored = _decoded(app, run_id, sent)
    if isinstance(stored, _Unreadable):
        return None
    canonical = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False,
                                  default=str)
    if any(canonical(stored) == canonical(c) for c in candidates):
        return None
    if sent.name == _APPROVAL_SIGNAL and isinstance(stored, Mapping) and isinstance(
            stored.get("approved"), bool):
        return f"it was {'approved' if stored['approved'] else 'rejected'}"
    return f"its answer was another one (signal {sent.name!r})"


def _aliases(model: Any) -> set[str]:
    return {f.alias for f in model.model_fields.values() if f.alias}


def _keyed_run_id(tool: str, key: str) -> str:
    # (surrogatepass: a key holding a lone surrogate, a valid JSON escape, still names
    # one task)
    digest = hashlib.sha256(f"{tool}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"mcp-{digest[:40]}"


def _decode(app: App, run_id: str, text: str | None, slot: str) -> Any:
    """The stored ``text`` decoded; the text itself if it is no JSON.

    Raises:
        PayloadError: the payload hook cannot decode it (e.g. encrypted with a key this
            process does not have): the text would be ciphertext, no answer.
    """
    if text is None:
        return None
    try:
        return app.codec.for_run(run_id).decode(text, None, slot)
    except PayloadError:
        raise
    except Exception:
        return text


class _UnreadablePayload(Exception):
    """A task's result or error that this server cannot decode (its payload hook lacks
    the key, or the payload was moved from another run): ``_StoreRequests`` answers it
    as a JSON-RPC error naming the cause, instead of the SDK's opaque -32603 "Internal
    server error" with a traceback in the log. It is the server's configuration, not the
    run, that is wrong: a server with the key reads the task."""

    def __init__(self, what: str, run_id: str, cause: PayloadError) -> None:
        super().__init__(f"the {what} of task {run_id!r} cannot be read by this server: "
                         f"{cause}")
        self.data: dict[str, Any] = {"unreadablePayload": True}
        key_id = getattr(cause, "key_id", None)
        if key_id is not None:
            self.data["keyId"] = key_id


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def _complete(result: dict[str, Any]) -> dict[str, Any]:
    return {"resultType": "complete", **result}


def _text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def _follow(run_id: str) -> str:
    """How a synchronous caller follows a run that goes on after its answer: as the
    task it is. (It said "call this tool with the MCP Tasks extension to follow it",
    which starts another run.)"""
    return (f"it goes on: follow it as task {run_id} (tasks/get, with the MCP Tasks "
            f"extension) or with `tether result {run_id}`; a new call of this tool starts "
            "another run")


def _value_result(value: Any) -> dict[str, Any]:
    """A run's result as a ``CallToolResult``: text (a string as it is, anything else as
    JSON) and, for a JSON object, the structured content."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    out = _text_result(text)
    if isinstance(value, dict):
        out["structuredContent"] = value
    return out


def _error_data(error: Any) -> Any:
    """What a failed task's ``error.data`` carries of the run's journaled error: its
    ``type``, ``message`` and the rest (``attrs``, ``attempts``), not its ``traceback``,
    whose lines name the server's files and code. The client is remote (``tether
    serve``'s /mcp) and may be a model; the operator reads the traceback in the
    run's document (``tether show``, the HTTP API, the web UI). Until 2026-12-06 the
    traceback was sent too."""
    if isinstance(error, Mapping):
        return {k: v for k, v in error.items() if k != "traceback"}
    return error


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
        return f"{kind}: {error.get('message', '')}"
    return str(error)


class _Progress:
    """The ``notifications/progress`` of a synchronous call whose request carried a
    ``progressToken``: one once the run has not ended within a second, then one
    whenever its status message changes and at least every ``EVERY`` seconds (a
    client that resets its request timeout on progress keeps waiting). ``progress``
    counts them (it must increase); no ``total`` (a run's length is not known); the
    message is the task's ``statusMessage`` after the run id."""

    EVERY = 10.0

    def __init__(self, send: Callable[[float, float | None, str | None], Awaitable[None]]
                 | None, run_id: str) -> None:
        self.send = send
        self.run_id = run_id
        self.count = 0
        self.said: str | None = None
        self.at = 0.0

    @property
    def wanted(self) -> bool:
        return self.send is not None

    async def report(self, message: str) -> None:
        now = time.monotonic()
        if self.send is None or (message == self.said and now - self.at < self.EVERY):
            return
        self.count += 1
        self.said, self.at = message, now
        try:
            await self.send(self.count, None, f"run {self.run_id}: {message}")
        except Exception:  # a client gone meanwhile: its answer is what matters
            log.debug("progress of run %s not sent", self.run_id, exc_info=True)


def _working_message(run: RunRecord) -> str:
    if run.status == RunStatus.BLOCKED.value:
        return "blocked: the run needs an operator (tether show / tether resume)"
    if run.waiting_for:
        return f"{run.status}: {run.waiting_for}"
    return run.status


def _elicit(response: Any) -> tuple[str, dict[str, Any]]:
    """(action, content) of an elicitation answer; a bare object counts as accepted
    content."""
    if isinstance(response, Mapping) and isinstance(response.get("action"), str):
        content = response.get("content")
        if content is None or isinstance(content, Mapping):
            return str(response["action"]), dict(content or {})
        # Content that is no object ("yes") was dropped: the run took {} as the answer.
        # It is the answer's value, as a bare answer is.
        return str(response["action"]), {"value": content}
    return "accept", dict(response) if isinstance(response, Mapping) else {"value": response}


# -- the server, over HTTP and stdio -------------------------------------------------------------


def _check_may_change(ctx: ServerRequestContext[Any, Any], what: str) -> None:
    """Refuse a change (a tool call starts a run; answers and cancels change one) to a
    caller the host says may only look: ``tether serve``'s ``read`` tokens, whose
    principal its guard puts in the HTTP request's state. Stdio has no request."""
    state = getattr(ctx.request, "state", None)
    principal = getattr(state, "principal", None) if state is not None else None
    if principal is not None and not getattr(principal, "can_change", True):
        raise MCPError(code=INVALID_REQUEST, message=f"forbidden: {what} changes runs and "
                       "this token may read, not change: use an admin token")


class _StoreRequests:
    """Server middleware for every MCP request: its store calls fail at once while the
    store is known to be down (``tether.store.FAIL_FAST``, as ``tether serve`` sets for
    its HTTP requests; over stdio nothing else would), and a ``StoreUnavailable``
    that escapes a handler (``tasks/*``, task notifications) is an error naming the
    store, not the SDK's opaque -32603 "Internal server error"; a task's payload this
    server cannot decode, and a ``ConfigError`` (a store that cannot be opened),
    likewise name why. (``tools/call`` answers a tool error
    itself.) Params that do not fit the method's schema are -32602 naming each field
    and what is wrong with it (the SDK's says "Invalid request parameters", no more).

    The flag is set in the request's own context: tasks the request starts inherit it
    (the store's shared tasks, such as the result reader, reset it), the worker that
    ``tether mcp`` runs in the same process does not (its tasks come from its own)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        token = FAIL_FAST.set(True)
        try:
            return await call_next(ctx)
        except StoreUnavailable as exc:
            raise MCPError(code=INTERNAL_ERROR,
                           message=f"{ctx.method}: {_unavailable(exc)}; try again later",
                           data={"storeUnavailable": True}) from exc
        except _UnreadablePayload as exc:
            raise MCPError(code=INTERNAL_ERROR, message=f"{ctx.method}: {exc}",
                           data=exc.data) from exc
        except ConfigError as exc:  # e.g. a store that cannot be opened (``serve_stdio``)
            raise MCPError(code=INTERNAL_ERROR, message=f"{ctx.method}: {exc}") from exc
        except MCPError as exc:
            if _before_initialize(ctx, exc):
                raise MCPError(code=INVALID_PARAMS, message=_BEFORE_INITIALIZE.format(
                    method=ctx.method), data={"initialized": False}) from exc
            raise
        except ValidationError as exc:
            if not exc.title.endswith(("Request", "Params")):
                raise  # (not the request's params: the SDK's answer, as before)
            # The SDK answers params that do not fit the method's schema (a tools/call
            # without "name", a tasks/get whose taskId is no string) with -32602
            # "Invalid request parameters" and an empty ``data``: which field, and what
            # is wrong with it, are said here.
            problems = [(_field(e["loc"]), e["msg"]) for e in exc.errors()]
            raise MCPError(code=INVALID_PARAMS, message=_invalid_params(ctx.method, problems),
                           data={"invalid": [{"field": f, "problem": p} for f, p
                                             in problems[:_SHOWN_PROBLEMS]]}) from exc
        finally:
            FAIL_FAST.reset(token)


class _TaskOnlyListed:
    """Server middleware: ``tools/list`` on a handshake-era protocol (2025-11-25 and
    before) gives each task-only tool ``execution: {"taskSupport": "required"}``, the
    2025-11-25 way a tool says it must be called as a task; a call without one answers
    -32601 (``missing_capability``). This server declares no ``tasks`` capability on
    those protocols (its tasks are the 2026-07-28 extension's), so such a client cannot
    call the tool at all, and can tell so before calling it: it was listed as any other
    tool. A protocol before 2025-11-25 has no ``execution`` to say it with, so there the
    tool is not listed (a model would call it and get the error every time); called by
    name, it answers -32601 all the same. The 2026-07-28 tool has no ``execution``:
    listed as before."""

    def __init__(self, task_only: Iterable[str]) -> None:
        self.task_only = frozenset(task_only)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return result
        listed = (result.model_dump(mode="json", by_alias=True, exclude_none=True)
                  if isinstance(result, ListToolsResult) else result)  # (a dict, as a rule)
        tools = listed.get("tools") if isinstance(listed, dict) else None
        if not isinstance(listed, dict) or not isinstance(tools, list):
            return result
        if (ctx.protocol_version or "") < _TASK_SUPPORT_SINCE:  # (no way to say it)
            return {**listed, "tools": [
                tool for tool in tools
                if not (isinstance(tool, dict) and tool.get("name") in self.task_only)]}
        return {**listed, "tools": [
            {**tool, "execution": {"taskSupport": "required"}}
            if isinstance(tool, dict) and tool.get("name") in self.task_only else tool
            for tool in tools]}


class _OnePage:
    """Server middleware: a list request (``tools/list``, and the SDK's prompts and
    resources lists) with a ``cursor`` is -32602, as the MCP specification's Pagination
    page asks of an invalid cursor ("Invalid cursors SHOULD result in an error with code
    -32602"). This server gives every item in one page and sends no ``nextCursor``, so
    no cursor is one of its own: the whole list was answered again, and a client that
    made up or kept a cursor took it for the page after it."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        if ctx.method in _PAGINATED and isinstance(ctx.params, Mapping):
            cursor = ctx.params.get("cursor")
            if cursor is not None:
                raise MCPError(code=INVALID_PARAMS, message=(
                    f"Invalid params: {ctx.method}: unknown cursor {shown(str(cursor))}: "
                    "this server lists everything in one page (it sends no nextCursor); "
                    "ask without a cursor"), data={"cursor": cursor})
        return await call_next(ctx)


#: The list methods the MCP specification paginates.
_PAGINATED = frozenset({"tools/list", "prompts/list", "resources/list",
                        "resources/templates/list"})


#: The first protocol whose ``Tool`` has ``execution.taskSupport`` (versions are dates,
#: so they compare as text).
_TASK_SUPPORT_SINCE = "2025-11-25"


#: -32602's message to a request on a connection that was not opened: the SDK's says
#: "Invalid request parameters", with an empty ``data``, and nothing of why.
_BEFORE_INITIALIZE = (
    "Invalid request parameters: {method} before initialize: open the connection with "
    "initialize (then notifications/initialized), or send each request with the "
    "2026-07-28 envelope in params._meta ('io.modelcontextprotocol/protocolVersion', "
    "'io.modelcontextprotocol/clientCapabilities')")


def _before_initialize(ctx: ServerRequestContext[Any, Any], exc: MCPError) -> bool:
    """``exc`` is the SDK's refusal of a request on a handshake-era connection (stdio)
    that has not been through ``initialize``: its bare -32602."""
    if (exc.error.code, exc.error.message, exc.error.data) != (
            INVALID_PARAMS, "Invalid request parameters", ""):
        return False
    connection = getattr(ctx.session, "_connection", None)
    return connection is not None and not getattr(connection, "initialize_accepted", True)


def _idempotency_key(key: Any) -> str | None:
    """A call's idempotency key (None: none sent). One that is no non-empty string is
    refused, and nothing starts, as the HTTP API refuses a signal's (400). It was taken
    as its Python text: ``5`` and ``"5"`` were one key, an object's key its ``repr``,
    and ``""`` (a client's unset key) one task for every call sent with it.

    Raises:
        MCPError: -32602, the field and why, as for params that do not fit the method.
    """
    if key is None or (isinstance(key, str) and key.strip()):
        return key
    problem = "must be a non-empty string, not " + (
        repr(key) if isinstance(key, str) else json_kind(key))
    problems = [(f"_meta.{IDEMPOTENCY_META_KEY}", problem)]
    raise MCPError(code=INVALID_PARAMS, message=_invalid_params("tools/call", problems),
                   data={"invalid": [{"field": f, "problem": p} for f, p in problems]})


#: How many of a request's invalid params an error names.
_SHOWN_PROBLEMS = 5


def _field(loc: tuple[int | str, ...]) -> str:
    """A pydantic error's location as a field path of the request's params."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["params"]:  # (the spec methods are validated as whole requests)
        parts = parts[1:]
    return ".".join(parts) or "params"


def _invalid_params(method: str, problems: list[tuple[str, str]]) -> str:
    """-32602's message: the method and each invalid param (``(field, problem)``), what
    is wrong with it."""
    shown = "; ".join(f"{f}: {p}" for f, p in problems[:_SHOWN_PROBLEMS])
    if len(problems) > _SHOWN_PROBLEMS:
        shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
    return f"Invalid request parameters: {method}: {shown}"


class _GuardedTasks(TasksExtension):
    """The Tasks extension behind the host's roles: ``tools/call``, ``tasks/update`` and
    ``tasks/cancel`` need a caller that may change; listing and reading do not."""

    async def intercept_tool_call(self, params: CallToolRequestParams,
                                  ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        _check_may_change(ctx, "tools/call")
        return await super().intercept_tool_call(params, ctx, call_next)

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
                      ) -> HandlerResult:
        _check_may_change(ctx, "tasks/update")
        return await super()._update(ctx, params)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: CancelTaskParams
                      ) -> HandlerResult:
        _check_may_change(ctx, "tasks/cancel")
        return await super()._cancel(ctx, params)


def create_mcp_server(app: App, **options: Any) -> tuple[MCPServer, TetherTasks]:
    """An SDK ``MCPServer`` serving ``app``'s exposed workflows, with the Tasks extension.

    ``options`` go to ``TetherTasks``.
    """
    backend = TetherTasks(app, **options)
    server: MCPServer = MCPServer(name="tether", version=_tether_version(), instructions=(
        "Tether workflows and agents. Each call is a durable run; with the "
        "io.modelcontextprotocol/tasks extension a call returns a task to poll."),
        tools=[exposed.tool for exposed in backend.tools.values()],
        extensions=[_GuardedTasks(backend)],
        middleware=[_StoreRequests(), _OnePage(), _TaskOnlyListed(
            name for name, exposed in backend.tools.items() if exposed.task_only)])
    install_task_notifications(server, backend)
    return server, backend


def _tether_version() -> str:
    """The installed distribution's version, for ``serverInfo.version`` (``""`` when
    Tether runs from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("tether")
    except importlib.metadata.PackageNotFoundError:
        return ""


@dataclass(slots=True)
class McpHttp:
    """MCP over Streamable HTTP for a host server: mount ``asgi`` at ``/mcp`` and enter
    ``lifespan()`` for as long as the host serves."""

    server: MCPServer
    tasks: TetherTasks
    session_manager: StreamableHTTPSessionManager
    asgi: CheckedHttp

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with self.session_manager.run():
            yield


def create_mcp_http(app: App, **options: Any) -> McpHttp:
    """MCP over Streamable HTTP for ``app`` (stateless: no session lives in one process,
    so any process on the same store answers any request). Authentication is the
    host's (``tether serve`` puts its tokens in front)."""
    server, backend = create_mcp_server(app, **options)
    manager = StreamableHTTPSessionManager(
        app=server._lowlevel_server, stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return McpHttp(server, backend, manager, CheckedHttp(StreamableHTTPASGIApp(manager),
                                                         manager.max_request_body_size))


async def serve_stdio(app: App, *, worker: bool = True, stop: asyncio.Event | None = None,
                      grace: float = 30.0, abandon: asyncio.Event | None = None,
                      ready: Callable[[], None] | None = None, **options: Any) -> bool:
    """Serve MCP over stdin/stdout until the client closes it; with ``worker``, run the
    app's workflows in this process too.

    The server answers at once, before the store is reached: a client's handshake
    (``initialize``, ``tools/list``) needs no store, and it times out if kept waiting.
    The store is opened beside it (by the worker's start, or by itself with ``worker``
    False), tried again after 0.5 s, doubling to 10 s, a line on stderr per failure,
    as ``tether worker`` does; meanwhile a call that needs the store answers that it
    is unavailable, and works once it answers, without a restart. A mistake no wait
    can fix (``ConfigError``: a SQLite folder that does not exist, a PostgreSQL schema
    behind with auto-migration off) is logged, the calls answer it, and no worker runs
    until a restart.

    ``stop`` set (``tether mcp`` sets it on SIGTERM or SIGINT) ends serving and drains
    the worker, as ``tether worker`` does on those signals: the steps in flight finish
    and are journaled for up to ``grace`` seconds, then every run is handed back to
    the queue (``abandon`` set meanwhile: at once, as after the grace period). The
    thread reading stdin may still wait for the client's next line (it
    cannot be interrupted): the caller then ends the process (``tether mcp`` does).
    The client closing stdin (MCP's stdio shutdown: it then waits for the server to
    exit, and signals it after a while) drains the worker the same way, and sets
    ``stop``: a signal after it is a second stop, which the caller answers by setting
    ``abandon``. (The worker stopped at once there: a step in flight was cut off and
    its run handed back, so the step ran again elsewhere, though a thread's step
    finished its work as the process exited.)

    Every request received is answered: from the stop on, a request read is answered
    at once that the server is shutting down (JSON-RPC -32000, ``data.shuttingDown``);
    the requests being served go on through the drain, then a synchronous call whose
    run has not ended answers that it goes on and how to follow it, and a request
    still unanswered ``STOP_ANSWER_SECONDS`` later is answered that the server is
    shutting down. (The SDK's loop ended with stdin and answered each one -32000
    "Connection closed" at once, a tool call whose run had started included.)
    ``ready``, if given, is called once the face is built, before anything is served
    (``tether mcp`` logs its start line there: a ``ConfigError`` of a tool that cannot
    be built is raised before it, and nothing claims to serve).

    Returns False if a drain cut steps off (the grace period ran out, or
    ``abandon``), True otherwise."""
    server, backend = create_mcp_server(app, **options)
    if ready is not None:
        ready()
    backend.closing = asyncio.Event()
    requests = StdioRequests()
    draining: list[float] = []
    # Made before serving, in this context: the worker's tasks do not inherit the
    # FAIL_FAST of a request (``_StoreRequests``).
    keeper = asyncio.ensure_future(_keep_worker(app, draining, abandon) if worker
                                   else _keep_store(app))
    serving = asyncio.ensure_future(run_stdio(server, requests))
    stopped = asyncio.ensure_future((stop or asyncio.Event()).wait())
    closed = asyncio.ensure_future(requests.eof.wait())
    try:
        await asyncio.wait([serving, stopped, closed], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
        client = not stopped.done()
        if client and stop is not None:
            stop.set()  # (the client's stop: a signal after it is the second)
        requests.stop("its client closed stdin" if client else "a stop signal")
        draining.append(grace)
        keeper.cancel()  # (the drain: the steps in flight finish, runs handed back)
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        # Every request received is answered: a synchronous call whose run did not end
        # in the drain now says the run goes on and how to follow it, and a request
        # still unfinished after STOP_ANSWER_SECONDS says the server is shutting down.
        backend.closing.set()
        if not await requests.settled(STOP_ANSWER_SECONDS):
            await requests.cut()
            await requests.settled(STOP_ANSWER_SECONDS)  # (answers being written)
        requests.release()
        await asyncio.wait([serving], timeout=STOP_ANSWER_SECONDS)
    finally:
        for future in (stopped, closed, serving, keeper):
            future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await app.close()
    return draining[1:] != [False]  # (the drain's answer, after its grace period)


async def _keep_worker(app: App, draining: list[float],
                       abandon: asyncio.Event | None = None) -> None:
    """Run the app's worker until cancelled; its start waits for the store (``Worker``'s
    ``start_retry``, by default until it answers, a line per failed attempt).
    Cancelled with a grace period in ``draining``, it drains for that long first and
    appends whether every run was handed back within it."""
    try:
        async with app.worker() as running:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if draining:
                    draining.append(await running.drain(draining[0], abandon))
                raise
    except (ConfigError, StoreUnavailable) as exc:
        log.error("tether mcp: no worker runs in this process: %s; fix it and restart "
                  "tether mcp (meanwhile tool calls that need the store answer this)", exc)


async def _keep_store(app: App) -> None:
    """Open the app's store (``--no-worker``), trying again as a worker's start does."""
    from tether.worker._worker import START_RETRY_FIRST, START_RETRY_MAX

    delay, failures = START_RETRY_FIRST, 0
    while True:
        try:
            await app._open()
        except StoreUnavailable as exc:
            failures += 1
            log.error("store unavailable: %s; retrying in %.1f s (attempt %d)", exc, delay,
                      failures)
            await asyncio.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX)
            continue
        except ConfigError as exc:
            log.error("tether mcp: the store cannot be opened: %s; tool calls answer this "
                      "until it is fixed", exc)
            return
        if failures:
            log.info("store reachable after %d failed attempts", failures)
        return
