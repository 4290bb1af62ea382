"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663), the pieces the
official ``mcp`` SDK (2.x) lacks, written to the extension's text and kept here in one
module for both sides.

The SDK supplies the extension seams (``mcp.server.extension.Extension`` with
``MethodBinding`` and ``intercept_tool_call``; ``mcp.client.extension.ClientExtension``
with a ``ResultClaim`` on ``tools/call``) but no Tasks extension. What this module adds:

- the wire shapes: ``CreateTaskResult`` (``resultType: "task"``), the ``tasks/get``,
  ``tasks/update`` and ``tasks/cancel`` requests and their params, and the
  ``notifications/tasks`` method name;
- ``TasksExtension``: a server extension that serves the three methods by delegating
  to a ``TaskBackend`` (Tether's is ``tether.serve.mcp``: tasks are runs) and lets the
  backend decide per ``tools/call`` whether to answer with a task;
- ``TasksClientExtension``: advertises the extension on a client's requests and claims
  the ``"task"`` result shape, so ``session.call_tool(..., allow_claimed=True)``
  returns a ``CreateTaskResult``, and ``Client.call_tool`` follows the task to its end.

Protocol rules implemented here (quoted from the extension text in docs/mcp-server.md):
``tasks/*`` from a client that did not declare the extension fail with -32021
(Missing Required Client Capability), on a handshake-era protocol (which lacks that
code) with -32601 (Method not found: ``missing_capability``); an unknown task id is
-32602 (Invalid params);
``tasks/update`` and ``tasks/cancel`` acknowledge with an empty result, except a
``tasks/cancel`` of a task that has ended, which is -32602 too (``terminal_task``: the
2025-11-25 Tasks text's rule, which the extension's leaves open).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal, Protocol

import anyio
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    CallToolResult,
    Notification,
    NotificationParams,
    Request,
    RequestParams,
    Result,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    TextContent,
)
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from tether._clock import utc_datetime
from tether.errors import TetherError, shown

__all__ = [
    "EXTENSION_ID",
    "TASK_NOTIFICATION",
    "CancelTaskParams",
    "CancelTaskRequest",
    "CreateTaskResult",
    "GetTaskParams",
    "GetTaskRequest",
    "GetTaskResult",
    "TaskBackend",
    "TaskInputRequired",
    "TaskListenHandler",
    "TaskNotification",
    "TaskNotificationParams",
    "TasksClientExtension",
    "TasksExtension",
    "UpdateTaskParams",
    "UpdateTaskRequest",
    "client_declares_tasks",
    "install_task_notifications",
    "iso_time",
    "missing_capability",
    "terminal_task",
    "unknown_task",
]

#: The extension's identifier.
EXTENSION_ID = "io.modelcontextprotocol/tasks"
#: The notification that carries a task's state to subscribers.
TASK_NOTIFICATION = "notifications/tasks"

#: Set while a ``tools/call`` is served by a backend (``TasksExtension``): sends the
#: caller a ``notifications/progress`` of that call (``progress``, ``total``,
#: ``message``) when its request carried ``_meta.progressToken``, else does nothing. A
#: backend that answers a call synchronously reports with it while it waits.
CALL_PROGRESS: ContextVar[Callable[[float, float | None, str | None], Awaitable[None]] | None]
CALL_PROGRESS = ContextVar("tether_mcp_call_progress", default=None)

TaskStatus = Literal["working", "input_required", "completed", "cancelled", "failed"]


def iso_time(epoch: float) -> str:
    """An epoch time as the ISO 8601 UTC text the extension's timestamps use."""
    return utc_datetime(epoch).isoformat().replace("+00:00", "Z")


# -- wire shapes ---------------------------------------------------------------------------


class _TaskFields(Result):
    """The ``Task`` shape: operational metadata about ongoing work."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    #: Milliseconds from creation the server keeps the task; ``None`` is unlimited.
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None

    @model_serializer(mode="wrap")
    def _keep_ttl(self, handler: SerializerFunctionWrapHandler,
                  info: SerializationInfo) -> dict[str, Any]:
        return _with_ttl(handler(self), self.ttl_ms, info)


def _with_ttl(data: dict[str, Any], ttl_ms: Any, info: SerializationInfo) -> dict[str, Any]:
    """``ttlMs`` is required on the wire (``number | null``, null for unlimited), and the
    SDK sends results and notifications with ``exclude_none``, which would leave an
    unlimited task's ``ttlMs`` out: a client validating the extension's schema refuses
    the message. Put it back as null."""
    key = "ttlMs" if info.by_alias else "ttl_ms"
    if ttl_ms is None and key not in data and "ttl_ms" not in (info.exclude or ()):
        data[key] = None
    return data


class CreateTaskResult(_TaskFields):
    """The answer to a ``tools/call`` that became a task (``resultType: "task"``)."""

    result_type: Literal["task"] = "task"


class GetTaskResult(_TaskFields):
    """A ``tasks/get`` answer: the task with its status' payload inlined."""

    result_type: str | None = "complete"
    input_requests: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class GetTaskParams(RequestParams):
    task_id: str


class UpdateTaskParams(RequestParams):
    task_id: str
    input_responses: dict[str, Any] = Field(default_factory=dict)


class CancelTaskParams(RequestParams):
    task_id: str


class GetTaskRequest(Request[GetTaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: GetTaskParams
    name_param = "taskId"  # Streamable HTTP: Mcp-Name carries the task id


class UpdateTaskRequest(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class CancelTaskRequest(Request[CancelTaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: CancelTaskParams
    name_param = "taskId"


class TaskNotificationParams(NotificationParams):
    """A ``DetailedTask`` (every key of it) as notification params."""

    model_config = NotificationParams.model_config | {"extra": "allow"}

    @model_serializer(mode="wrap")
    def _keep_ttl(self, handler: SerializerFunctionWrapHandler,
                  info: SerializationInfo) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        extra = self.model_extra or {}
        if "ttlMs" in extra and extra["ttlMs"] is None:
            data["ttlMs"] = None
        return data


class TaskNotification(Notification[TaskNotificationParams, Literal["notifications/tasks"]]):
    method: Literal["notifications/tasks"] = "notifications/tasks"
    params: TaskNotificationParams


# -- server side ---------------------------------------------------------------------------


class TaskBackend(Protocol):
    """Where tasks live. Each method answers for any task id, from shared state: the
    server process that created a task need not be the one asked about it."""

    async def call_tool(self, params: CallToolRequestParams, *, tasks: bool,
                        call_next: Callable[[], Awaitable[HandlerResult]]) -> HandlerResult:
        """Answer a ``tools/call``: a ``CreateTaskResult`` (only if ``tasks``: the client
        declared the extension on this request), a plain result, or ``call_next()`` for
        a tool the backend does not own."""
        ...

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The task as a ``DetailedTask`` wire object, or ``None`` if unknown."""
        ...

    async def update_task(self, task_id: str, input_responses: Mapping[str, Any]) -> bool:
        """Deliver answers to outstanding input requests (ignoring keys not outstanding);
        ``False`` if the task is unknown."""
        ...

    async def cancel_task(self, task_id: str) -> bool:
        """Ask the task to cancel; ``False`` if the task is unknown. A task that has
        ended raises ``terminal_task``'s error, and stays as it ended."""
        ...


def client_declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """The client declared the extension: in this request's envelope (2026-07-28) or
    in its ``initialize`` capabilities (handshake era)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False  # a task result cannot be delivered on a handshake-era wire
    capabilities = ctx.session.client_capabilities
    declared = capabilities.extensions if capabilities is not None else None
    return bool(declared) and EXTENSION_ID in (declared or {})


class _MissingCapability(MCPError):
    """``missing_capability``'s error, which keeps what needed the extension (``what``):
    a backend raises it without knowing the request's protocol, and the extension
    answers it as that protocol has it answered."""

    def __init__(self, what: str, code: int, message: str, data: Any) -> None:
        super().__init__(code=code, message=message, data=data)
        self.what = what


def missing_capability(what: str, protocol_version: str | None = None) -> MCPError:
    """The error for a request from a client that did not declare the extension, where
    ``what`` needs it.

    On the 2026-07-28 protocol, or when ``protocol_version`` is not known (``None``),
    the extension's -32021 (Missing Required Client Capability) with
    ``requiredCapabilities``. On a handshake-era protocol (2025-11-25 and before),
    -32601 (Method not found): -32021 is a code of 2026-07-28, which those protocols
    lack, and the extension cannot be declared on them; the 2025-11-25 Tasks text
    answers -32601 to a call of a tool that must be called as a task ("Servers MUST
    return a -32601 (Method not found) error if a client does not attempt to do so"),
    and so the server answers the extension's methods there, as it answers the
    2025-11-25 ``tasks/result``. ``data`` says what is needed: the extension, and
    there the protocol version (``requiredProtocolVersion``)."""
    needs: dict[str, Any] = {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}}
    if protocol_version is not None and protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return _MissingCapability(
            what, METHOD_NOT_FOUND,
            f"Method not found: {what} needs the {EXTENSION_ID} extension, on protocol "
            f"{LATEST_MODERN_VERSION} (this connection negotiated {protocol_version})",
            {"requiredProtocolVersion": LATEST_MODERN_VERSION, **needs})
    return _MissingCapability(
        what, MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"Missing required client capability: {what} needs the {EXTENSION_ID} extension",
        needs)


def unknown_task(task_id: str) -> MCPError:
    """The extension's error for a task id the server does not know (-32602)."""
    return MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: Task not found "
                                                 f"({shown(task_id)})")


def terminal_task(task_id: str, status: str) -> MCPError:
    """The error for a ``tasks/cancel`` of a task that has ended (-32602): the 2025-11-25
    Tasks text says "Receivers MUST reject cancellation requests for tasks already in a
    terminal status (completed, failed, or cancelled) with error code -32602 (Invalid
    params)". ``data.status`` is the task's status, which the request left as it was."""
    return MCPError(code=INVALID_PARAMS,
                    message=f"Cannot cancel task: it has already ended, {status} "
                            f"({shown(task_id)}): tasks/get reads its outcome",
                    data={"status": status})


class TasksExtension(Extension):
    """The Tasks extension on the SDK's server: ``tasks/get``, ``tasks/update``,
    ``tasks/cancel``, and a ``tools/call`` interceptor that lets ``backend`` answer
    with a task."""

    identifier = EXTENSION_ID

    def __init__(self, backend: TaskBackend) -> None:
        self.backend = backend

    def methods(self) -> Sequence[MethodBinding]:
        return (MethodBinding("tasks/get", GetTaskParams, self._get),
                MethodBinding("tasks/update", UpdateTaskParams, self._update),
                MethodBinding("tasks/cancel", CancelTaskParams, self._cancel))

    async def intercept_tool_call(self, params: CallToolRequestParams,
                                  ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        # (only for a request that asked for progress: a backend reads the run's state
        # to report it, which a call without a token would pay for nothing)
        token = CALL_PROGRESS.set(ctx.session.report_progress
                                  if _asks_progress(ctx.meta, params.meta) else None)
        try:
            return await self.backend.call_tool(params, tasks=client_declares_tasks(ctx),
                                                call_next=lambda: call_next(ctx))
        except _MissingCapability as exc:  # (a task-only tool): as this protocol has it
            answer = missing_capability(exc.what, ctx.protocol_version)
            if answer.code == exc.code:
                raise
            raise answer from None
        finally:
            CALL_PROGRESS.reset(token)

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: GetTaskParams
                   ) -> HandlerResult:
        if not client_declares_tasks(ctx):
            raise missing_capability("tasks/get", ctx.protocol_version)
        _check_name_header(ctx, params.task_id)
        task = await self.backend.get_task(params.task_id)
        if task is None:
            raise unknown_task(params.task_id)
        return {"resultType": "complete", **task}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
                      ) -> HandlerResult:
        if not client_declares_tasks(ctx):
            raise missing_capability("tasks/update", ctx.protocol_version)
        _check_name_header(ctx, params.task_id)
        if not await self.backend.update_task(params.task_id, params.input_responses):
            raise unknown_task(params.task_id)
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: CancelTaskParams
                      ) -> HandlerResult:
        if not client_declares_tasks(ctx):
            raise missing_capability("tasks/cancel", ctx.protocol_version)
        _check_name_header(ctx, params.task_id)
        if not await self.backend.cancel_task(params.task_id):
            raise unknown_task(params.task_id)
        return {"resultType": "complete"}


def _asks_progress(*metas: Any) -> bool:
    """Whether a request's ``_meta`` carries a ``progressToken`` (the SDK validates it
    into ``progress_token``)."""
    return any(isinstance(meta, Mapping) and (meta.get("progress_token") is not None
                                              or meta.get("progressToken") is not None)
               for meta in metas)


def _check_name_header(ctx: ServerRequestContext[Any, Any], task_id: str) -> None:
    """Over Streamable HTTP, ``Mcp-Name`` carries a task request's ``taskId`` (the
    routing header, SEP-2243; the three requests' ``name_param``): a header that does
    not match the body is -32020 (Header Mismatch, HTTP 400), as the SDK answers it
    for ``tools/call``. (Until 2026-12-06 it was not compared: a request a proxy
    routed for one task acted on another.) A request without the header (a client of
    another stack) is served, as before; stdio has no headers."""
    headers = getattr(ctx.request, "headers", None)
    sent = headers.get(MCP_NAME_HEADER) if headers is not None else None
    if sent is None:
        return
    if decode_header_value(sent) != task_id:
        raise MCPError(code=HEADER_MISMATCH,
                       message=f"{MCP_NAME_HEADER} header does not match the request "
                               "body's 'taskId' parameter")


#: The extension's terminal task statuses (of ``TaskStatus``): a task's, not a run's. (A
#: backend maps its own states onto ``TaskStatus``: Tether's ended run statuses,
#: ``tether._types.ENDED_VALUES``, onto these three, in ``tether.serve.mcp``.)
_TERMINAL = frozenset({"completed", "failed", "cancelled"})

ListenHandlerFn = Callable[[ServerRequestContext[Any, Any], SubscriptionsListenRequestParams],
                           Awaitable[Any]]


class TaskListenHandler:
    """``subscriptions/listen`` with the extension's ``taskIds`` filter: acknowledges the
    known task ids, then sends ``notifications/tasks`` (the task as ``tasks/get`` would
    answer it, without ``resultType``) at once and whenever it changes, until every
    task has ended; then the stream ends gracefully. Changes are found by reading the
    backend every ``interval`` seconds, so a stream served by one process sees changes
    made by any. A listen without ``taskIds`` goes to the SDK's handler (``inner``).
    """

    def __init__(self, backend: TaskBackend, inner: ListenHandlerFn | None,
                 interval: float = 0.5) -> None:
        self.backend = backend
        self.inner = inner
        self.interval = interval

    async def __call__(self, ctx: ServerRequestContext[Any, Any],
                       params: SubscriptionsListenRequestParams) -> Any:
        wanted = (params.notifications.model_extra or {}).get("taskIds")
        if not wanted:
            if self.inner is None:
                raise MCPError(code=INVALID_PARAMS, message="nothing to listen to")
            return await self.inner(ctx, params)
        if not client_declares_tasks(ctx):
            raise missing_capability("task notifications", ctx.protocol_version)
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        tasks: dict[str, dict[str, Any]] = {}
        for task_id in wanted if isinstance(wanted, list) else []:
            if isinstance(task_id, str) and task_id not in tasks:
                task = await self.backend.get_task(task_id)
                if task is not None:
                    tasks[task_id] = task
        honored = SubscriptionFilter.model_validate({"taskIds": list(tasks)})
        await ctx.session.send_notification(SubscriptionsAcknowledgedNotification(
            params=SubscriptionsAcknowledgedNotificationParams(notifications=honored,
                                                               _meta=meta)),
            related_request_id=ctx.request_id)
        sent: dict[str, str] = {}
        while tasks:
            for task_id, task in list(tasks.items()):
                seen = json.dumps(task, sort_keys=True, default=str)
                if sent.get(task_id) != seen:
                    sent[task_id] = seen
                    notification = TaskNotification(
                        params=TaskNotificationParams.model_validate({**task, "_meta": meta}))
                    await ctx.session.send_notification(
                        notification,  # type: ignore[arg-type]
                        related_request_id=ctx.request_id)
                if task.get("status") in _TERMINAL:
                    del tasks[task_id]
            if not tasks:
                break
            await anyio.sleep(self.interval)
            for task_id in list(tasks):
                fresh = await self.backend.get_task(task_id)
                if fresh is None:
                    del tasks[task_id]  # deleted (retention): nothing more to say
                else:
                    tasks[task_id] = fresh
        return SubscriptionsListenResult(_meta=meta)


def install_task_notifications(server: Any, backend: TaskBackend,
                               interval: float = 0.5) -> None:
    """Serve ``subscriptions/listen`` with ``taskIds`` on an SDK ``MCPServer`` (keeping
    its own handler for every other filter)."""
    lowlevel = server._lowlevel_server
    entry = lowlevel.get_request_handler("subscriptions/listen")
    lowlevel.add_request_handler(
        "subscriptions/listen", SubscriptionsListenRequestParams,
        TaskListenHandler(backend, entry.handler if entry is not None else None, interval))


# -- client side ---------------------------------------------------------------------------


class TaskInputRequired(TetherError):
    """``Client.call_tool`` of a tool whose task waits for input (``input_required``),
    which that call cannot give. ``task`` is the task as ``tasks/get`` answered it: its
    ``task_id`` and ``input_requests``, to answer with ``tasks/update`` (then poll
    ``tasks/get``), or to cancel with ``tasks/cancel``."""

    def __init__(self, task: GetTaskResult, tool_name: str) -> None:
        self.task = task
        super().__init__(f"task {task.task_id} of tool {tool_name!r} waits for input "
                         f"({', '.join(task.input_requests or {})}), which Client.call_tool "
                         "cannot give: answer it with tasks/update (session.call_tool(..., "
                         "allow_claimed=True) returns the task at once), or cancel it")


#: The interval the resolver polls at when the server suggests none (the default of
#: Tether's server).
_DEFAULT_POLL_INTERVAL_MS = 1000


async def _follow_task(result: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    """``Client.call_tool``'s answer to a task: ``tasks/get`` at the task's
    ``pollIntervalMs`` until it ends, then its result. A ``completed`` task is its
    ``CallToolResult``; a ``failed`` or ``cancelled`` one an ``isError`` result saying so
    (as Tether's own client answers them, and as a synchronous call of a tool that
    failed reads). A task that needs input cannot be answered here: ``MCPError`` naming
    the task (``TaskInputRequired``: a caller that answers input calls
    ``session.call_tool(..., allow_claimed=True)`` and sends ``tasks/update``)."""
    task_id, interval = result.task_id, result.poll_interval_ms
    while True:
        task = await ctx.session.send_request(
            GetTaskRequest(params=GetTaskParams(task_id=task_id)), GetTaskResult)
        if task.status == "completed":
            return CallToolResult.model_validate(task.result or {"content": []})
        if task.status in ("failed", "cancelled"):
            error = task.error or {}
            text = (f"task {task_id} of tool {ctx.tool_name!r} {task.status}: "
                    f"{error.get('message') or task.status_message or task.status}")
            return CallToolResult(content=[TextContent(type="text", text=text)],
                                  is_error=True)
        if task.status == "input_required":
            raise TaskInputRequired(task, ctx.tool_name)
        interval = task.poll_interval_ms or interval
        await anyio.sleep((interval or _DEFAULT_POLL_INTERVAL_MS) / 1000)


class TasksClientExtension(ClientExtension):
    """Declares the Tasks extension on a client's requests and claims the ``"task"``
    result of ``tools/call`` (active on the 2026-07-28 protocol, where extensions are
    negotiated per request). ``session.call_tool(..., allow_claimed=True)`` returns the
    ``CreateTaskResult``; ``Client.call_tool`` follows the task to its end (see
    ``_follow_task``)."""

    identifier = EXTENSION_ID

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=CreateTaskResult,
                            resolve=_follow_task),)
