"""Tools an agent can call: a name, a description, a JSON schema of the arguments, and
an ``invoke`` that runs the tool.

A ``Tool`` is the one shape the agent loop knows. ``function_tool`` turns a Python
function into one (the schema comes from the type hints, the descriptions from the
docstring, and ``invoke`` validates the model's arguments against the signature).
``workflow_tool`` makes a tool of a workflow: each call is a child run on the
workflow's own queue. ``tether.ai.mcp.MCPTool`` is a tool of an MCP server.

Durability is not a tool's business but its caller's: the agent runs a tool call as a
step, so the call is journaled, retried by policy, and answered from the journal after
a crash. Code inside that step reads ``tether.step_key()`` (or ``idempotency_headers()``)
to tell the receiving system which repeated side effects to drop. A tool whose
``durable`` is true (an MCP tool, a workflow tool) is already durable when awaited in a
workflow; the agent calls its ``launch`` instead of wrapping it in a step.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import functools
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, overload

import pydantic

import tether
from tether import ConfigError, NonRetryable, TetherError, ext
from tether.ai._budget import INHERIT_BUDGET, child_share, spending_of
from tether.ai._types import header_value

__all__ = [
    "FunctionTool",
    "Tool",
    "ToolArgumentError",
    "WorkflowTool",
    "function_tool",
    "idempotency_headers",
    "workflow_tool",
]


class ToolArgumentError(NonRetryable):
    """The arguments a model gave a tool do not fit its parameters.

    The message is written for the model (it names each bad argument and what was
    expected), so an agent can hand it back as the tool's result and let the model try
    again. It is a ``NonRetryable``: running the same call again cannot succeed.

    Attributes:
        tool: the tool's name.
        errors: one dict per problem: ``argument`` (dotted path), ``problem``.
    """

    __module__ = "tether.ai"

    def __init__(self, tool: str, errors: list[dict[str, str]]) -> None:
        problems = "; ".join(
            f"{e['argument']}: {e['problem']}" if e["argument"] else e["problem"]
            for e in errors
        )
        super().__init__(f"invalid arguments for tool {tool!r}: {problems}",
                         data={"tool": tool, "errors": errors})
        self.tool = tool
        self.errors = errors


#: What OpenAI and Anthropic take as a tool's name; they refuse any other (a 400 on the
#: call that lists it).
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_tool_name(name: object, what: str, fix: str = "") -> str:
    """``name`` if a model provider takes it as a tool's name (``TOOL_NAME``: letters,
    digits, ``_`` and ``-``, 1 to 64 of them).

    Raises:
        ConfigError: any other name, naming the rule (and ``fix``, how to name it).
    """
    if isinstance(name, str) and TOOL_NAME.fullmatch(name):
        return name
    raise ConfigError(
        f"{what}: the tool name {name!r} is not one OpenAI and Anthropic take: a tool "
        "name must match ^[a-zA-Z0-9_-]{1,64}$ (letters, digits, _ and -, at most 64), "
        f"or the first model call listing it fails with a 400{fix}")


def tool_name_for(name: str) -> str:
    """A name a provider takes (``TOOL_NAME``) made of ``name``, to suggest in place
    of it."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", name).strip("_")[:64] or "my_tool"


class Tool(abc.ABC):
    """A tool an agent can call.

    Subclasses set the attributes (as class attributes or in ``__init__``) and
    implement ``invoke``. The argument schema is a JSON schema of ``type: object``, as
    OpenAI function calling and Anthropic tool use expect.

    Attributes:
        name: the name the model calls the tool by.
        description: what the tool does, for the model.
        parameters: JSON schema (``type: object``) of the arguments.
        requires_approval: a human must approve each call before it runs.
        durable: ``invoke`` is itself a durable operation when awaited in a workflow
            (the agent need not wrap it in a step); false for plain tools.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    requires_approval: bool = False
    durable: bool = False

    @abc.abstractmethod
    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the tool with the model's arguments and return its result.

        Inside a step, ``tether.step_key()`` is the call's idempotency key.

        Raises:
            ToolArgumentError: the arguments do not fit the tool's parameters.
        """

    async def launch(self, arguments: dict[str, Any]) -> Awaitable[Any]:
        """In a workflow: start a call of a durable tool and return an awaitable of its
        result, every journal position of the call already taken.

        The agent launches the calls of one model turn one after the other, then awaits
        them together (``asyncio.gather``). Positions are taken in call order only if
        each launch takes its positions before returning, so a durable tool made of
        several operations (a child run: start, then result) performs the first ones
        here. The default returns ``invoke(arguments)`` unstarted, which is right for a
        tool whose ``invoke`` begins with its only operation.
        """
        return self.invoke(arguments)

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """The model's arguments as a dict, checked as far as this tool can check them.

        Accepts a dict or the JSON text of one (models send arguments as text). Pure and
        deterministic, so an agent may call it in workflow code, before the step.

        Raises:
            ToolArgumentError: not a JSON object, or (subclasses) not fitting the schema.
        """
        return _as_object(self.name, arguments)

    def spec(self) -> dict[str, Any]:
        """The tool as a model sees it: ``{"name", "description", "parameters"}``."""
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters}

    def result_text(self, result: Any) -> str:
        """The result of ``invoke`` as text for the model (JSON unless it is a string)."""
        return result_to_text(result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionTool(Tool):
    """A Python function as a tool; build it with ``function_tool``.

    The instance is still callable like the function it wraps.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None, requires_approval: bool = False) -> None:
        if not callable(fn):
            raise ConfigError(f"function_tool needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        doc_description, param_docs = parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else doc_description
        self.requires_approval = requires_approval
        self._is_async = _is_async_callable(fn)
        self._model, self._params = _arguments_model(fn, self.name, param_docs)
        check_tool_name(self.name, f"function_tool({getattr(fn, '__name__', self.name)})",
                        "; name it with function_tool(fn, name="
                        f"{tool_name_for(self.name)!r})" if name is None else "")
        self.parameters = model_schema(self._model)
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """The arguments as given, after checking them against the signature.

        Raises:
            ToolArgumentError: missing, unknown or ill-typed arguments.
        """
        obj = _as_object(self.name, arguments)
        self._validated(obj)
        return obj

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Validate the arguments, then call the function (a plain ``def`` in a thread).

        Raises:
            ToolArgumentError: the arguments do not fit the signature.
        """
        args, kwargs = self._validated(_as_object(self.name, arguments))
        if self._is_async:
            return await self.fn(*args, **kwargs)
        # to_thread copies the context, so tether.step_key() works in a plain def too.
        result = await asyncio.to_thread(self.fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _validated(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        try:
            model = self._model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolArgumentError(self.name, _describe_errors(exc, self._params)) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for field, param in zip(self._model.model_fields, self._params, strict=True):
            value = getattr(model, field)
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value
        return args, kwargs


#: ``start_child``'s own keyword arguments: a workflow tool cannot pass them through.
_CHILD_KEYWORDS = frozenset({"queue", "run_id", "on_parent_cancel"})


async def start_tool_child(workflow: Callable[..., Awaitable[Any]] | str, args: Sequence[Any],
                           kwargs: Mapping[str, Any], *,
                           queue: str | None) -> tether.ChildHandle[Any]:
    """Start the child run that serves a tool call (an agent or a workflow as a tool),
    handing it its share of the run's budget, if the run has one (``child_share``:
    decided by a journaled step, stored with the child's input, so a crash of either
    run changes nothing); the run holds the share until the child's spend is rolled
    up. A share that leaves the child nothing is refused before the child exists.

    Raises:
        OutsideRun: not in workflow code.
        BudgetExceeded: no share left for the child, with the policy ``fail``.
    """
    run = ext.current_run()
    spending = spending_of(run) if run is not None and ext.in_workflow() else None
    wdef = getattr(workflow, "__tether_workflow__", None)
    name = workflow if isinstance(workflow, str) else getattr(wdef, "name", str(workflow))
    decided = await child_share(spending, name) if spending is not None else None
    try:
        handle: tether.ChildHandle[Any] = await ext.start_child(
            workflow, args, kwargs, queue=queue,
            inherit={INHERIT_BUDGET: decided[1].to_dict()} if decided is not None else None)
    except BaseException:
        if spending is not None and decided is not None:
            spending.release(decided[0])
        raise
    if spending is not None and decided is not None:
        spending.rekey(decided[0], handle.run_id)
    return handle


class ChildCall:
    """The wait for a child run's result, with the child's run id (an agent rolls the
    child's spend into its own once the result is in): the call of the tool ``tool``
    (telemetry shows it as one, as a function tool's step)."""

    def __init__(self, handle: tether.ChildHandle[Any], tool: str) -> None:
        self.run_id = handle.run_id
        self._wait = ext.child_tool_result(handle, tool)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait.__await__()

    def close(self) -> None:
        """Drop the wait unstarted (its coroutine closed without a warning)."""
        close = getattr(self._wait, "close", None)
        if close is not None:
            close()


class WorkflowTool(Tool):
    """A workflow as a tool: each call is a child run (``tether.start_child``) on the
    workflow's queue, so the tool scales on its own workers and survives their crashes
    like any run. Build it with ``workflow_tool``.

    The schema comes from the workflow function's signature and docstring, as for
    ``function_tool``. Outside a workflow, ``invoke`` raises: a child run needs a parent.
    """

    durable = True

    def __init__(self, workflow: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None, queue: str | None = None,
                 requires_approval: bool = False) -> None:
        wdef = getattr(workflow, "__tether_workflow__", None)
        if wdef is None:
            raise ConfigError(
                f"workflow_tool needs a workflow (decorated with @app.workflow), got "
                f"{getattr(workflow, '__name__', type(workflow).__name__)!r}")
        self.workflow_name: str = wdef.name
        self.queue: str = queue or wdef.queue
        if name is None:  # (the workflow's name, as the model would call the tool)
            check_tool_name(wdef.name, f"workflow_tool({wdef.name})",
                            " (a workflow tool is called by the workflow's name); name "
                            f"it with workflow_tool(wf, name={tool_name_for(wdef.name)!r})")
        self._signature = FunctionTool(wdef.fn, name=name or wdef.name, description=description)
        clash = [p.name for p in self._signature._params
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in _CHILD_KEYWORDS]
        if clash:
            raise ConfigError(f"workflow tool {self._signature.name!r}: keyword-only "
                              f"parameter {clash[0]!r} clashes with tether.start_child's own")
        self.name = self._signature.name
        self.description = self._signature.description
        self.parameters = self._signature.parameters
        self.requires_approval = requires_approval

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        return self._signature.validate_arguments(arguments)

    async def launch(self, arguments: dict[str, Any]) -> Awaitable[Any]:
        """Start the child run (journaled) and return the wait for its result (its
        position taken). The child's id is ``<parent run id>.<position>`` (see
        ``tether.start_child``)."""
        args, kwargs = self._child_arguments(arguments)
        handle = await start_tool_child(self.workflow_name, args, kwargs, queue=self.queue)
        return ChildCall(handle, self.name)

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the workflow as a child run and return its result.

        Raises:
            ToolArgumentError: the arguments do not fit the signature.
            RunFailed: the child run failed or was cancelled.
            TetherError: not inside a workflow.
        """
        return await (await self.launch(arguments))

    def _child_arguments(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The validated arguments, positional where the signature allows (so a
        parameter named ``queue`` does not collide with ``start_child``'s)."""
        args, kwargs = self._signature._validated(_as_object(self.name, arguments))
        positional = list(args)
        for p in self._signature._params:
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                positional.append(kwargs.pop(p.name))
        return positional, kwargs


def workflow_tool(workflow: Callable[..., Any], *, name: str | None = None,
                  description: str | None = None, queue: str | None = None,
                  requires_approval: bool = False) -> WorkflowTool:
    """Make a tool of a workflow: each call runs it as a child run.

    Args:
        workflow: a function decorated with ``@app.workflow`` (any app: the child is
            started by name, and whichever worker serves ``queue`` runs it).
        name: the tool's name (default: the workflow's name).
        description: overrides the docstring's first paragraph.
        queue: the child's queue (default: the workflow's own).
        requires_approval: a human must approve each call.

    Raises:
        ConfigError: not a workflow, a signature a model cannot be told about, or a
            tool name OpenAI and Anthropic refuse (``^[a-zA-Z0-9_-]{1,64}$``; the
            workflow's, by default): give ``name=``.
    """
    return WorkflowTool(workflow, name=name, description=description, queue=queue,
                        requires_approval=requires_approval)


@overload
def function_tool(fn: Callable[..., Any], /, *, name: str | None = None,
                  description: str | None = None,
                  requires_approval: bool = False) -> FunctionTool: ...


@overload
def function_tool(fn: None = None, /, *, name: str | None = None,
                  description: str | None = None,
                  requires_approval: bool = False) -> Callable[[Callable[..., Any]], FunctionTool]:
    ...


def function_tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
                  description: str | None = None, requires_approval: bool = False
                  ) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a ``Tool`` of a function: ``@function_tool``, ``@function_tool(...)``, or
    ``function_tool(fn, name=...)``.

    The argument schema comes from the type hints (str, int, float, bool, lists, dicts,
    ``Optional``, ``Literal``, enums, dataclasses, pydantic models, ``Annotated[...,
    Field(...)]``) and the defaults; the description is the docstring's first paragraph,
    and a Google-style ``Args:`` section describes each parameter.

    Args:
        fn: the function (``async def`` or plain ``def``).
        name: the tool's name (default: the function's name).
        description: overrides the docstring's first paragraph.
        requires_approval: a human must approve each call.

    Raises:
        ConfigError: the signature has ``*args``/``**kwargs`` or unresolvable hints;
            a name OpenAI and Anthropic refuse (``^[a-zA-Z0-9_-]{1,64}$``: ``<lambda>``,
            ``"my tool"``): give ``name=``.
    """

    def make(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description,
                            requires_approval=requires_approval)

    return make(fn) if fn is not None else make


def idempotency_headers(header: str = "Idempotency-Key") -> dict[str, str]:
    """HTTP headers carrying the current step's idempotency key.

    Inside a step: ``{"Idempotency-Key": tether.step_key()}``, the same on every retry
    and after every crash, so an API that honours the header drops the repeats.
    Outside a step (no durability, nothing to de-duplicate): ``{}``.
    """
    try:
        return {header: header_value(tether.step_key())}  # (ASCII: a run id may not be)
    except TetherError:
        return {}


# -- docstrings -----------------------------------------------------------------------------

_ARGS_HEADERS = {"args:", "arguments:", "parameters:", "params:", "keyword args:",
                 "keyword arguments:"}
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")
_PARAM_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, per-parameter descriptions) of a Google-style docstring.

    The description is the first paragraph, its lines joined by spaces. Parameter
    descriptions come from an ``Args:`` section (``name (type): text`` lines,
    continuation lines indented deeper).
    """
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    first: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()):
            break
        first.append(line.strip())
    params: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if line.strip().lower() in _ARGS_HEADERS),
                 None)
    if start is not None:
        base = _indent(lines[start])
        item_indent: int | None = None
        current: str | None = None
        for line in lines[start + 1:]:
            if not line.strip():
                continue
            indent = _indent(line)
            if indent <= base:
                break
            match = _PARAM_LINE.match(line.strip())
            if match and (item_indent is None or indent <= item_indent):
                item_indent = indent
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(first), params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# -- schema and validation ---------------------------------------------------------------------


def _arguments_model(fn: Callable[..., Any], tool: str, docs: dict[str, str]
                     ) -> tuple[type[pydantic.BaseModel], list[inspect.Parameter]]:
    """A pydantic model of ``fn``'s parameters (extra arguments forbidden).

    Fields are named ``p0, p1, ...`` with the parameter's name as alias, so a parameter
    may be called ``json`` or ``schema`` without shadowing ``BaseModel`` attributes.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {tool!r}: cannot read the signature: {exc}") from None
    target = _unwrap(fn)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {tool!r}: cannot resolve its type hints: {exc}") from None
    fields: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for i, p in enumerate(signature.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigError(
                f"tool {tool!r}: *args and **kwargs cannot be described to a model; "
                "declare each parameter"
            )
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[f"p{i}"] = (annotation, pydantic.Field(default, alias=p.name,
                                                      description=docs.get(p.name)))
        params.append(p)
    try:
        model = pydantic.create_model(
            f"{tool}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
    except Exception as exc:
        raise ConfigError(f"tool {tool!r}: its parameter types have no JSON schema: {exc}"
                          ) from None
    return model, params


def model_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The JSON schema of an arguments model, shaped for function calling.

    ``$ref``s into ``$defs`` are inlined (recursive types keep their ``$defs``), the
    generated ``title``s are dropped, and the root is always ``{"type": "object",
    "properties": ..., "additionalProperties": false}``.
    """
    try:
        raw = model.model_json_schema(by_alias=True)
    except Exception as exc:
        raise ConfigError(f"{model.__name__}: no JSON schema: {exc}") from None
    defs: dict[str, Any] = raw.pop("$defs", {})
    kept: dict[str, Any] = {}
    schema = _inline(raw, defs, kept, ())
    schema = strip_titles(schema)
    out: dict[str, Any] = {"type": "object", "properties": schema.get("properties", {})}
    if schema.get("required"):
        out["required"] = schema["required"]
    out["additionalProperties"] = False
    if kept:
        out["$defs"] = {k: strip_titles(v) for k, v in kept.items()}
    return out


def _inline(node: Any, defs: dict[str, Any], kept: dict[str, Any],
            stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs, kept, stack) for n in node]
    if not isinstance(node, dict):
        return node
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and set(all_of[0]) == {"$ref"}:
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **all_of[0]}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if name in stack or name not in defs:
            # A recursive type cannot be inlined: keep its definition and the reference.
            if name in defs and name not in kept:
                kept[name] = {}
                kept[name] = _inline(defs[name], defs, kept, (*stack, name))
            return {**_inline(siblings, defs, kept, stack), "$ref": ref}
        target = _inline(defs[name], defs, kept, (*stack, name))
        return {**target, **_inline(siblings, defs, kept, stack)}
    return {k: (v if k in ("default", "const", "enum", "examples") else
                _inline(v, defs, kept, stack)) for k, v in node.items()}


_SCHEMA_MAPS = {"properties", "$defs", "patternProperties", "definitions"}
_LITERAL_KEYS = {"default", "const", "enum", "examples", "required"}


def strip_titles(node: Any) -> Any:
    """Drop generated ``title`` keywords; a property *named* title is kept."""
    if isinstance(node, list):
        return [strip_titles(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strip_titles(sub) for name, sub in value.items()}
        elif key in _LITERAL_KEYS:
            out[key] = value
        else:
            out[key] = strip_titles(value)
    return out


def _as_object(tool: str, arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, (str, bytes)):
        text = arguments.decode() if isinstance(arguments, bytes) else arguments
        if not text.strip():
            return {}
        try:
            arguments = json.loads(text)
        except ValueError as exc:
            raise ToolArgumentError(tool, [{"argument": "", "problem":
                                            f"arguments are not valid JSON ({exc})"}]) from None
    if arguments is None:
        return {}
    if not isinstance(arguments, dict):
        raise ToolArgumentError(tool, [{"argument": "", "problem":
                                        "arguments must be a JSON object, got "
                                        f"{type(arguments).__name__}"}])
    return arguments


def _describe_errors(exc: pydantic.ValidationError, params: list[inspect.Parameter]
                     ) -> list[dict[str, str]]:
    expected = ", ".join(p.name for p in params) or "none"
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "missing":
            problem = "missing required argument"
        elif kind == "extra_forbidden":
            problem = f"unexpected argument (the tool takes: {expected})"
        else:
            problem = f"{err.get('msg', 'invalid value')} (got {_short(err.get('input'))})"
        out.append({"argument": loc, "problem": problem})
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(fn: Any) -> Any:
    """The function whose hints and colour count: partials unwrapped, and a callable
    object's ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return fn
    return type(fn).__call__


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(_unwrap(fn))


# -- results --------------------------------------------------------------------------------


def result_to_text(result: Any) -> str:
    """A tool result as text: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)

