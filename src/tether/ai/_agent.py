"""The agent loop as an ordinary workflow.

``Agent(name, model=llm, instructions=..., tools=[...])`` registered with
``app.add_agent(agent)`` is a workflow named ``name`` that takes the task (a string)
and returns the model's final answer (a string). Each turn::

    reply = await model.chat(messages, tools=specs)        # one durable LLM operation
    cut off at max_tokens -> fail with MaxTokensExceeded, running none of its tools
        (allow_truncated=True: a cut text answer is returned as it is)
    a refusal (content_filter) -> fail with ModelRefused, quoting the model
        (allow_refusal=True: a text agent returns it as its answer)
    no tool calls -> return reply.text
    for each tool call, in order: check it (pure); a malformed one is journaled as a
        failed ``<agent>.invalid_tool_call`` step and its error goes back to the model
    for each call needing approval, in order: wait (released) for a human's answer
    launch the remaining calls one after the other (each takes its journal positions),
    then await them together (asyncio.gather)
    append one tool message per call, in the model's order

Every operation (LLM call, tool step, MCP call, child run, approval signal) is
journaled, so after a crash the loop replays to where it stopped: recorded replies and
tool results come back from the journal, nothing already done is paid or run again.

Why the result is the final text and not a richer object: it is what a parent agent
(agent-as-tool), ``tether result`` and a human all want, and it stays stable however
the loop evolves. Turns, tokens and cost are in the run's journal and metrics
(``App.get_run``), where they are recorded anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

import tether
from tether import (
    App,
    Cancelled,
    ConfigError,
    NonRetryable,
    RetryPolicy,
    RunFailed,
    SignalTimeout,
    StepError,
    TetherError,
    ext,
)
from tether.ai._approvals import request_approval
from tether.ai._budget import Budget, checked_budget, publish_limits, spending_of
from tether.ai._interrupt import (
    INTERRUPT_SIGNAL,
    INTERRUPTED_TEXT,
    TurnScope,
    entered,
    interruptibly,
    is_interrupted,
)
from tether.ai._llm import LLM
from tether.ai._tools import (
    ChildCall,
    FunctionTool,
    Tool,
    ToolArgumentError,
    WorkflowTool,
    check_tool_name,
    model_schema,
    start_tool_child,
    tool_name_for,
)
from tether.ai._types import (
    DEFAULT_MAX_TOKENS,
    ChatReply,
    Message,
    ToolCall,
    ToolSpec,
    system_message,
    tool_message,
    user_message,
)

if TYPE_CHECKING:
    from tether.ai.mcp import MCPContext, MCPServer, MCPToolset

__all__ = ["FINAL_RESULT_TOOL", "INTERRUPT_SIGNAL", "STEER_SIGNAL", "Agent", "AgentTool",
           "ChatModel", "InvalidToolCall", "MaxTokensExceeded", "MaxTurnsExceeded",
           "ModelRefused"]

#: The tool an agent with an ``output_type`` gives its final answer with.
FINAL_RESULT_TOOL = "final_result"

#: The signal that steers a running agent (``tether signal RUN message --data '"..."'``).
STEER_SIGNAL = "message"

log = logging.getLogger("tether.ai")

#: Retries of a function tool's step (its exceptions; an invalid argument never retries).
DEFAULT_TOOL_RETRY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=30.0,
                                 max_attempts=3)


class ChatModel(Protocol):
    """What an agent needs of its model: ``tether.ai.LLM``'s durable ``chat``."""

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
                   budget: Any = None, **params: Any) -> ChatReply: ...


#: ``tether.patched`` id of the rule that the last turn's tool calls are not run (runs
#: recorded before it replay as they ran: those tools ran, then the run failed).
_LAST_TURN_RUNS_NO_TOOLS = "tether.ai.agent:last-turn-runs-no-tools"

#: ``tether.patched`` id of the rule that a reply cut off at ``max_tokens`` ends the run
#: with ``MaxTokensExceeded`` (runs recorded before it replay as they ran: a cut answer
#: returned, a cut reply's tool calls checked and run). Journaled only when a reply
#: was cut.
_CUT_REPLY_FAILS = "tether.ai.agent:cut-reply-fails"


#: ``tether.patched`` id of the rule that a refusal (``finish_reason``
#: ``content_filter``) ends the run with ``ModelRefused`` (runs recorded before it
#: replay as they ran: the refusal returned as the answer). Journaled only when a reply
#: is a refusal.
_REFUSAL_FAILS = "tether.ai.agent:refusal-fails"


class ModelRefused(TetherError):
    """The model refused (``finish_reason`` ``content_filter``: OpenAI's ``refusal``,
    Anthropic's ``stop_reason`` ``refusal``, the Responses API's refusal part, a
    content filter). The run fails with the model's words: a refusal is not an answer,
    and it was returned as one, the run ``completed`` (an ``output_type`` agent asked
    again and again for its answer, each turn paid, until ``max_turns``). With
    ``Agent(allow_refusal=True)`` a text agent returns the refusal as its answer
    instead. pydantic-ai (``ContentFilterError``) and the OpenAI Agents SDK
    (``ModelRefusalError``) fail their runs likewise.

    Attributes:
        agent: the agent's name.
        text: what the model said, or ``None``.
        tool_calls: the tools the refused reply asked for (not run).
    """

    __module__ = "tether.ai"

    def __init__(self, agent: str, *, text: str | None, tool_calls: list[str]) -> None:
        said = f": {text[:500]!r}" if text else " (it said nothing)"
        super().__init__(
            f"agent {agent!r}: the model refused to answer (finish_reason content_filter)"
            f"{said}; change the task or the instructions"
            + ("" if tool_calls else ", or Agent(allow_refusal=True) returns a refusal as "
               "the answer"))
        self.agent = agent
        self.text = text
        self.tool_calls = tool_calls


class MaxTurnsExceeded(TetherError):
    """The model was still calling tools in its ``max_turns``-th reply; the run fails,
    without running them (no model would read their results).

    Attributes:
        agent: the agent's name.
        max_turns: the limit.
        last_tools: the tools the last reply asked for.
    """

    __module__ = "tether.ai"

    def __init__(self, agent: str, max_turns: int, last_tools: list[str]) -> None:
        super().__init__(
            f"agent {agent!r} reached max_turns={max_turns} without a final answer (the "
            f"last reply still asked for tools: {', '.join(last_tools) or 'none'}); raise "
            "max_turns or tell the model when to stop in its instructions")
        self.agent = agent
        self.max_turns = max_turns
        self.last_tools = last_tools


class MaxTokensExceeded(TetherError):
    """The model's reply was cut off at its output limit (``max_tokens``; OpenAI's
    ``finish_reason`` ``length``, Anthropic's ``stop_reason`` ``max_tokens``, the
    Responses API's ``incomplete`` for ``max_output_tokens``). The run fails: a cut
    answer is not one (it was returned as if whole), and a tool call the cut may have
    left with half its arguments is never run, nor any other call of that reply. With
    ``Agent(allow_truncated=True)`` a cut text answer is returned as it is instead.

    Attributes:
        agent: the agent's name.
        max_tokens: the limit the call was made with (the agent's ``model_params``, else
            the client's default, Anthropic's 4096), or ``None`` when the provider's
            own default applied.
        output_tokens: the output tokens the reply used, as the provider told them.
        tool_calls: the tools the cut reply asked for (not run).
        text: the text the model wrote before the cut, or ``None``.
    """

    __module__ = "tether.ai"

    def __init__(self, agent: str, *, max_tokens: int | None, output_tokens: int,
                 tool_calls: list[str], text: str | None) -> None:
        limit = (f"max_tokens={max_tokens}" if max_tokens is not None
                 else "the provider's default max_tokens")
        what = (f"while asking for tools ({', '.join(tool_calls)}), not run: their "
                "arguments may be incomplete" if tool_calls else
                f"mid-answer, after {len(text or ''):,} characters")
        super().__init__(
            f"agent {agent!r}: the model's reply was cut off at its output limit ({limit}; "
            f"{output_tokens:,} output tokens used) {what}; raise max_tokens (the agent's "
            "model_params, or the LLM's), or ask for a shorter answer in the instructions"
            + ("" if tool_calls else "; Agent(allow_truncated=True) returns a cut text "
               "answer as it is"))
        self.agent = agent
        self.max_tokens = max_tokens
        self.output_tokens = output_tokens
        self.tool_calls = tool_calls
        self.text = text


class InvalidToolCall(NonRetryable):
    """A tool call the model got wrong: an unknown tool, arguments that are not a JSON
    object, or arguments that do not fit the tool's schema. It is journaled as the
    failure of the ``<agent>.invalid_tool_call`` step, and its message goes back to the
    model as the call's result; the run goes on."""

    __module__ = "tether.ai"


class AgentTool(Tool):
    """Another agent as a tool: each call is a child run of that agent (on its queue)
    with the task the model wrote, and its final answer is the result."""

    durable = True

    def __init__(self, agent: Agent, *, name: str | None = None,
                 description: str | None = None, requires_approval: bool = False) -> None:
        self.agent = agent
        self.name = check_tool_name(
            name or agent.name, f"agent {agent.name!r} used as a tool",
            f" (an agent used as a tool is called by the agent's name); name the tool "
            f"with agent.as_tool(name={tool_name_for(agent.name)!r}), or give the agent "
            "such a name" if name is None else "")
        self.description = description or agent.description or (
            f"Ask the agent {agent.name!r} to do a task; it answers with text.")
        self.parameters = {
            "type": "object",
            "properties": {"task": {"type": "string",
                                    "description": "the task, in full sentences"}},
            "required": ["task"], "additionalProperties": False}
        self.requires_approval = requires_approval

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        obj = super().validate_arguments(arguments)
        problems = [{"argument": k, "problem": "unexpected argument (the tool takes: task)"}
                    for k in obj if k != "task"]
        if not isinstance(obj.get("task"), str):
            problems.append({"argument": "task", "problem": "missing required argument"
                             if "task" not in obj else "Input should be a valid string"})
        if problems:
            raise ToolArgumentError(self.name, problems)
        return obj

    async def launch(self, arguments: dict[str, Any]) -> Awaitable[Any]:
        task = self.validate_arguments(arguments)["task"]
        handle = await start_tool_child(self.agent.name, [task], {}, queue=self.agent.queue)
        return ChildCall(handle, self.name)

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the agent as a child run (inside a workflow only)."""
        return await (await self.launch(arguments))


ToolLike = Any  # Tool | plain function | Agent | MCPToolset | MCPServer


class _FinalResult(Tool):
    """The tool an agent with an ``output_type`` answers with. Its arguments are checked
    against the model in workflow code (pure); it is never invoked."""

    def __init__(self, model: type[pydantic.BaseModel]) -> None:
        self.model = model
        self.name = FINAL_RESULT_TOOL
        self.description = (f"Give your final answer ({model.__name__}); call it once, "
                             "when you are done.")
        self.parameters = model_schema(model)

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        obj = super().validate_arguments(arguments)
        try:
            self.model.model_validate(obj)
        except pydantic.ValidationError as exc:
            raise ToolArgumentError(self.name, [
                {"argument": ".".join(str(p) for p in err.get("loc", ())),
                 "problem": str(err.get("msg", "invalid"))}
                for err in exc.errors()[:10]]) from None
        return obj

    async def invoke(self, arguments: dict[str, Any]) -> Any:  # pragma: no cover
        raise NonRetryable("final_result is answered by the agent, never invoked")


@dataclass(slots=True)
class _Call:
    """One tool call of a turn, on its way through check, approval and launch."""

    index: int
    call: ToolCall
    tool: Tool | None = None
    arguments: dict[str, Any] | None = None
    #: Set when the call is answered without running the tool (malformed, rejected).
    answer: str | None = None
    #: The malformed call's problem, journaled by the invalid_tool_call step.
    problem: str | None = None
    #: A call that is a child run (an agent or workflow tool): its spend is rolled up.
    child: ChildCall | None = None


class Agent:
    """An LLM agent that runs as a durable workflow.

    Args:
        name: the workflow's name (``tether start NAME --input '["the task"]'``).
        model: a ``tether.ai.LLM`` (anything with its durable ``chat``).
        instructions: the system message.
        tools: ``Tool``s (``function_tool``, ``workflow_tool``, ...), plain functions
            (made ``function_tool``s), other ``Agent``s (called as child runs),
            ``MCPToolset``s or ``MCPServer``s (their tools, listed once per run).
        max_turns: LLM calls allowed; when the last one still asks for tools, the run
            fails with ``MaxTurnsExceeded`` without running them.
        budget: the run's budget, passed to every LLM call; the child runs of its tool
            calls (agents, workflows) get shares of what is left of it.
        queue: the queue the agent's runs go to.
        retention: the agent's workflow's own retention policy, as
            ``@app.workflow(retention=)`` takes it (a duration, a ``tether.Retention``,
            ``"forever"``; None: the app's).
        description: what the agent does, when another agent calls it as a tool.
        tool_retry: the retry policy of function tools' steps.
        model_params: extra parameters of every LLM call (``temperature``...).
        output_type: a pydantic model: the agent's answer is an instance of it, validated.
            The model gives it by calling the tool ``final_result`` (its parameters are
            the model's schema), so the answer costs no second model call; arguments that
            do not validate go back to the model as the call's error, as for any tool. A
            plain-text answer that is valid JSON for the schema is accepted too. The run's
            result is then the instance (JSON in the journal, typed for ``result()``).
        steerable: take messages sent to a running agent (the signal ``message``:
            ``tether signal RUN message --data '"also check pricing"'`` or
            ``agent.steer(app, run_id, text)``) into account at its next turn: before each
            model call, and before ending with an answer, the agent takes every message
            waiting (one journaled signal operation each, and one that finds none) and adds
            it to the conversation as a user message. Off by default: it adds operations to
            the journal, which runs started before the change would not have.
        context: MCP resources and prompts (``toolset.resource(uri)``,
            ``toolset.prompt(name, args)``) read at the start of each run, one journaled
            operation each: a resource's text goes to the model as a system message, a
            prompt's messages go before the task (or its text becomes a system message,
            with ``as_instructions=True``).
        interruptible: let a person or a program cut the current turn (the signal
            ``interrupt``: ``agent.interrupt(app, run_id, text)`` or ``tether signal RUN
            interrupt --data '"use the cached data"'``). The model call and the tool
            calls in flight are cancelled; each tool call of the turn left without a
            result gets the result ``interrupted by the user`` (the calls that finished
            keep theirs), so the conversation stays valid for the provider; the next
            turn starts with the interrupt's message, if any, as a user message. The
            cuts are journaled as the steps' outcomes, so replay gives the same
            conversation and runs nothing again. Off by default: each turn starts with a
            journaled check for interrupts, which runs started before would not have.
        stream: publish each turn's text to the run's observers as it arrives
            (``llm.chunk`` events of ``App.events`` and ``tether serve``'s run page and
            SSE stream), when the model is a ``tether.ai.LLM``. The journal records the
            same as without it, and a replayed turn publishes nothing.
        allow_truncated: return a final text answer cut off at ``max_tokens`` as it is.
            By default such a reply fails the run with ``MaxTokensExceeded``, naming the
            limit and the tokens used. A reply cut while asking for tools, or an
            ``output_type`` agent's, fails the run either way: its tool calls are never
            run (the cut may have left one with half its arguments).
        allow_refusal: return a refusal (``finish_reason`` ``content_filter``) as the
            answer. By default it fails the run with ``ModelRefused``, quoting the
            model; an ``output_type`` agent's refusal, or one asking for tools, fails
            either way.

    Raises:
        ConfigError: a bad name, ``max_turns < 1``, a tool that is none of the above, an
            ``output_type`` that is not a pydantic model, ``tools`` that is one tool and
            not a list, a tool named as OpenAI and Anthropic refuse
            (``^[a-zA-Z0-9_-]{1,64}$``; an agent used as a tool: the agent's name, give
            ``as_tool(name=)``).
    """

    def __init__(self, name: str, *, model: ChatModel, instructions: str = "",
                 tools: Iterable[ToolLike] = (), max_turns: int = 20, budget: Any = None,
                 queue: str = "default", description: str = "",
                 tool_retry: RetryPolicy | None = None,
                 model_params: Mapping[str, Any] | None = None,
                 output_type: type[pydantic.BaseModel] | None = None,
                 steerable: bool = False, interruptible: bool = False,
                 stream: bool = True, context: Iterable[MCPContext] = (),
                 allow_truncated: bool = False, retention: Any = None,
                 allow_refusal: bool = False) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"an agent needs a name, got {name!r}")
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ConfigError(f"agent {name!r}: max_turns must be an int >= 1, got {max_turns!r}")
        if not callable(getattr(model, "chat", None)):
            raise ConfigError(f"agent {name!r}: model must be a tether.ai.LLM (something with "
                              f"a durable chat()), got {type(model).__name__}")
        self.name = name
        self.model = model
        self.instructions = instructions
        if isinstance(tools, Tool | Agent | str | Mapping) or callable(tools) or not isinstance(
                tools, Iterable):
            raise ConfigError(f"agent {name!r}: tools takes a list of tools, got "
                              f"one {type(tools).__name__}: write tools=[...] around it")
        self.tools = list(tools)
        for item in self.tools:  # (a name a provider refuses: refused here, not at a call)
            if isinstance(item, Agent):
                item.as_tool()
            elif isinstance(item, Tool):
                check_tool_name(item.name, f"agent {name!r}: tool {item!r}")
        self.max_turns = max_turns
        self.budget = checked_budget(budget, f"agent {name!r}")
        self.queue = queue
        self.retention = retention  # (checked by app.workflow when registered)
        self.description = description
        self.tool_retry = tool_retry or DEFAULT_TOOL_RETRY
        self.model_params = dict(model_params or {})
        if output_type is not None and not (isinstance(output_type, type)
                                            and issubclass(output_type, pydantic.BaseModel)):
            raise ConfigError(f"agent {name!r}: output_type must be a pydantic model class, "
                              f"got {output_type!r}")
        self.output_type = output_type
        self.steerable = steerable
        self.interruptible = interruptible
        self.stream = stream
        self.context = list(context)
        self.allow_truncated = allow_truncated
        self.allow_refusal = allow_refusal
        self._final = _FinalResult(output_type) if output_type is not None else None
        self.app: App | None = None
        self.workflow: Callable[[str], Awaitable[str]] | None = None
        self._static: dict[str, Tool] = {}
        self._toolsets: list[MCPToolset] = []
        self._steps: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {}
        self._invalid_call: Callable[[str, str, str], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, queue={self.queue!r})"

    def as_tool(self, *, name: str | None = None, description: str | None = None,
                requires_approval: bool = False) -> AgentTool:
        """This agent as another agent's tool (each call a child run), called by
        ``name`` (default: the agent's name).

        Raises:
            ConfigError: a name OpenAI and Anthropic refuse (``^[a-zA-Z0-9_-]{1,64}$``).
        """
        return AgentTool(self, name=name, description=description,
                         requires_approval=requires_approval)

    # -- registration -------------------------------------------------------------------------

    def register(self, app: App) -> Agent:
        """Register the workflow ``self.name`` and the steps of the function tools on
        ``app`` (``app.add_agent(agent)`` calls this). Agents used as tools are
        registered too if they are not yet.

        Raises:
            ConfigError: registered on another app already, two tools with one name, an
                MCPToolset built on another app, or a tool of an unknown kind.
        """
        if self.app is app:
            return self
        if self.app is not None:
            raise ConfigError(f"agent {self.name!r} is already registered on another app")
        static: dict[str, Tool] = {}
        toolsets: list[MCPToolset] = []
        for item in self.tools:
            tool = self._as_tool(app, item)
            if tool is None:
                toolsets.append(self._as_toolset(app, item))
                continue
            check_tool_name(tool.name, f"agent {self.name!r}: tool {tool!r}")
            if tool.name in static or (self._final is not None
                                       and tool.name == FINAL_RESULT_TOOL):
                raise ConfigError(f"agent {self.name!r}: two tools are named {tool.name!r}")
            static[tool.name] = tool
        for item in self.context:
            if type(item).__name__ != "MCPContext" or getattr(item.toolset, "app", None) is not app:
                raise ConfigError(f"agent {self.name!r}: context takes MCP resources and "
                                  "prompts of toolsets built on the agent's app "
                                  "(toolset.resource(uri), toolset.prompt(name)), got "
                                  f"{item!r}")
        for tool in static.values():
            if isinstance(tool, AgentTool) and tool.agent.app is None:
                tool.agent.register(app)
            if not tool.durable:
                self._steps[tool.name] = self._tool_step(app, tool)

        async def invalid_tool_call(tool: str, arguments: str, problem: str) -> None:
            raise InvalidToolCall(problem, data={"tool": tool, "arguments": arguments})

        self._invalid_call = app.step(name=f"{self.name}.invalid_tool_call",
                                      retry=RetryPolicy(max_attempts=1))(invalid_tool_call)

        async def run_agent(task: str) -> Any:
            return await self._loop(task)

        run_agent.__name__ = run_agent.__qualname__ = self.name
        run_agent.__annotations__ = {"task": str, "return": self.output_type or str}
        self.workflow = app.workflow(name=self.name, queue=self.queue,
                                     retention=self.retention)(run_agent)
        self._static, self._toolsets, self.app = static, toolsets, app
        return self

    def _as_tool(self, app: App, item: ToolLike) -> Tool | None:
        """``item`` as a Tool, or ``None`` for an MCP toolset/server (listed per run)."""
        if isinstance(item, Tool):
            return item
        if isinstance(item, Agent):
            return item.as_tool()
        kind = type(item).__name__
        if kind in ("MCPToolset", "MCPServer") and type(item).__module__ == "tether.ai.mcp":
            return None
        if callable(item) and getattr(item, "__tether_workflow__", None) is not None:
            raise ConfigError(f"agent {self.name!r}: {getattr(item, '__name__', item)!r} is a "
                              "workflow: wrap it with workflow_tool(...) to make it a tool")
        if callable(item):
            return FunctionTool(item)
        raise ConfigError(f"agent {self.name!r}: cannot use {item!r} as a tool (expected a "
                          "Tool, a function, an Agent, an MCPToolset or an MCPServer)")

    def _as_toolset(self, app: App, item: MCPServer | MCPToolset) -> MCPToolset:
        from tether.ai.mcp import MCPServer, MCPToolset

        if isinstance(item, MCPServer):
            return MCPToolset(app, item)
        if item.app is not app:
            raise ConfigError(f"agent {self.name!r}: {item!r} was built on another app; build "
                              "it with MCPToolset(app, server) on the agent's app")
        return item

    def _tool_step(self, app: App, tool: Tool) -> Callable[[dict[str, Any]], Awaitable[str]]:
        """The durable step that runs ``tool``; it returns the text the model reads.

        Inside it ``tether.step_key()`` (and ``idempotency_headers()``) give the
        call's idempotency key, the same on every retry and after a crash."""

        async def run_tool(arguments: dict[str, Any]) -> str:
            return tool.result_text(await interruptibly(tool.invoke(arguments)))

        return app.step(name=f"{self.name}.tool:{tool.name}", retry=self.tool_retry)(run_tool)

    # -- the loop -------------------------------------------------------------------------------

    async def _loop(self, task: str) -> Any:
        if not isinstance(task, str) or not task.strip():
            raise ConfigError(f"agent {self.name!r} takes its task as a non-empty string, got "
                              f"{task!r}")
        run = ext.current_run()
        if run is not None and isinstance(self.budget, Budget):
            # The run's budget (not only its calls'): the share of it that the child runs
            # of its tool calls get is cut from it (``start_tool_child``).
            spending = spending_of(run)
            spending.budget = self.budget
            publish_limits(spending, run)
        tools = await self._tools_of_run()
        if self._final is not None:
            tools[FINAL_RESULT_TOOL] = self._final
        specs = [ToolSpec.of(t) for t in tools.values()]
        messages: list[Message] = []
        if self.instructions:
            messages.append(system_message(self.instructions))
        for item in self.context:
            messages.extend(await item.messages())
        messages.append(user_message(task))
        reply: ChatReply | None = None
        for turn in range(1, self.max_turns + 1):
            if self.steerable:
                messages.extend(user_message(text) for text in await self._steering())
            if self.interruptible:
                messages.extend(user_message(text) for text in await self._interrupts())
            async with self._turn() as scope:
                tether.set_status(self._status(turn, "thinking"))
                try:
                    reply = await self._ask(messages, specs)
                except Exception as exc:
                    if scope is None or not is_interrupted(exc):
                        raise
                    continue  # cut before the model answered: nothing to add
                messages.append(reply.to_message())
                done, output = await self._rest_of_turn(turn, reply, tools, messages)
            if done:
                return output
        last = [c.name for c in reply.tool_calls] if reply is not None else []
        raise MaxTurnsExceeded(self.name, self.max_turns, last)

    async def _rest_of_turn(self, turn: int, reply: ChatReply, tools: dict[str, Tool],
                            messages: list[Message]) -> tuple[bool, Any]:
        """After the model's reply: ``(True, answer)`` when the run ends with it, else
        ``(False, None)`` with the tool results (or a nudge) added to ``messages``.

        Raises:
            MaxTokensExceeded: the reply was cut off at ``max_tokens`` (see
                ``allow_truncated``).
        """
        if reply.finish_reason == "length" and tether.patched(_CUT_REPLY_FAILS):
            if reply.tool_calls or self._final is not None or not self.allow_truncated:
                raise MaxTokensExceeded(
                    self.name, max_tokens=self._max_tokens(),
                    output_tokens=reply.usage.output_tokens,
                    tool_calls=[c.name for c in reply.tool_calls], text=reply.text)
        if reply.finish_reason == "content_filter" and tether.patched(_REFUSAL_FAILS):
            if reply.tool_calls or self._final is not None or not self.allow_refusal:
                raise ModelRefused(self.name, text=reply.text,
                                   tool_calls=[c.name for c in reply.tool_calls])
        if self._final is not None:
            found, output = self._final_answer(reply, tools)
            if found:
                late = await self._steering() if self.steerable else []
                if not late:
                    tether.set_status(self._status(turn, "answered"))
                    return True, output
                # Superseded by messages that came during the turn: answer again.
                messages.extend(tool_message(call.id, "superseded: the user sent a new "
                                             "message") for call in reply.tool_calls)
                messages.extend(user_message(text) for text in late)
                return False, None
            if not reply.tool_calls:  # text that is not the answer's JSON
                messages.append(user_message(
                    f"Give your final answer by calling the tool {FINAL_RESULT_TOOL!r}."))
                return False, None
        if not reply.tool_calls:
            if self.steerable and await self._steered(messages):
                return False, None
            tether.set_status(self._status(turn, "answered"))
            return True, reply.text or ""
        if turn >= self.max_turns and tether.patched(_LAST_TURN_RUNS_NO_TOOLS):
            # No model will read these tools' results: the run fails without running
            # them (a charge, an email), nor asking a human to approve them.
            return False, None
        answers = await self._tool_calls(turn, reply, tools)
        messages.extend(tool_message(call.id, text)
                        for call, text in zip(reply.tool_calls, answers, strict=True))
        return False, None

    def _max_tokens(self) -> int | None:
        """The output limit of the agent's calls: its ``model_params``, else the
        client's default (Anthropic's), else ``None`` (the provider's own)."""
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = self.model_params.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        if isinstance(self.model, LLM) and self.model.provider == "anthropic":
            value = self.model._options.get("max_tokens", DEFAULT_MAX_TOKENS)
            return value if isinstance(value, int) else None
        return None

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[TurnScope | None]:
        """One turn of an interruptible agent: its steps run in a ``TurnScope`` and a
        watcher sets the scope's event when an interrupt signal comes (the run's live
        events say so, or the run's inbox holds one: ``_pending``). Not journaled: what
        the interrupt cut is, in the steps' outcomes. Other agents: no scope."""
        run = ext.current_run()
        if not self.interruptible or run is None:
            yield None
            return
        scope = TurnScope(lambda sc: self._watch(run, sc), lambda: self._pending(run))
        try:
            with entered(scope):
                yield scope
        finally:
            scope.close()

    @staticmethod
    async def _watch(run: ext.Run, scope: TurnScope) -> None:
        """Set the scope's event when an interrupt reaches the run during the turn.

        The live events tell only of what is published once the subscription is in
        place (on PostgreSQL its LISTEN may start after the model's first chunk came);
        an interrupt sent since the turn took the pending ones (``_interrupts``) is
        still waiting in the run's inbox, so it is looked for there once the
        subscription is live: between the two, none is missed. It used to be: the turn
        ran to its end and only the next one saw the message."""
        listening = asyncio.Event()
        announced = asyncio.ensure_future(Agent._announced(run, listening))
        live = asyncio.ensure_future(listening.wait())
        try:
            await asyncio.wait({announced, live}, return_when=asyncio.FIRST_COMPLETED)
            if not announced.done() and await Agent._pending(run):
                scope.interrupted.set()
                return
            if await announced:
                scope.interrupted.set()
        except TetherError as exc:  # the event channel failed: the next turn's check stays
            log.warning("run %s: cannot watch for interrupts: %s", run.run_id, exc)
        finally:
            live.cancel()
            announced.cancel()
            if announced.done() and not announced.cancelled():
                announced.exception()  # (retrieved: a failure after the inbox said yes)

    @staticmethod
    async def _pending(run: ext.Run) -> bool:
        """Whether an interrupt waits in the run's inbox (sent since the turn took the
        waiting ones: while the run was released, its worker down, or just now)."""
        try:
            return await run.signal_pending(INTERRUPT_SIGNAL)
        except TetherError as exc:  # the watcher and the next turn's check remain
            log.warning("run %s: cannot check for interrupts: %s", run.run_id, exc)
            return False

    @staticmethod
    async def _announced(run: ext.Run, listening: asyncio.Event) -> bool:
        """True when the run's live events announce an interrupt (``listening`` is set
        once they are subscribed to); False if they end."""
        async for data in run.events(ready=listening.set):
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if (isinstance(event, dict) and event.get("type") == "signal"
                    and event.get("name") == INTERRUPT_SIGNAL):
                return True
        return False

    async def _interrupts(self) -> list[str]:
        """The messages of every interrupt waiting (journaled signal operations; the
        last one finds none). An interrupt without a message adds nothing."""
        texts: list[str] = []
        while True:
            try:
                payload = await tether.wait_for_signal(INTERRUPT_SIGNAL, timeout=0)
            except SignalTimeout:
                return texts
            if payload is None or payload == "":
                continue
            texts.append(payload if isinstance(payload, str) else json.dumps(payload))

    async def interrupt(self, app: App, run_id: str, text: str | None = None) -> None:
        """Interrupt the current turn of a running run of this (``interruptible``)
        agent; ``text``, if given, is added to the conversation for the next turn.

        Raises:
            ConfigError: the agent is not interruptible.
            RunNotFound: no such run.
            SignalError: the run has ended.
        """
        if not self.interruptible:
            raise ConfigError(f"agent {self.name!r} is not interruptible: create it with "
                              "interruptible=True")
        await app.signal(run_id, INTERRUPT_SIGNAL, text)

    async def _ask(self, messages: list[Message], specs: list[ToolSpec]) -> ChatReply:
        """One turn's model call (durable); its text streams live if ``self.stream``."""
        if self.stream and isinstance(self.model, LLM):
            reply: ChatReply = await self.model.chat(
                messages, tools=specs or None, budget=self.budget, live=True,
                **self.model_params)
            return reply
        return await self.model.chat(messages, tools=specs or None, budget=self.budget,
                                     **self.model_params)

    async def _steering(self) -> list[str]:
        """Every steering message waiting, in order (journaled signal operations; the
        last one finds none)."""
        texts: list[str] = []
        while True:
            try:
                payload = await tether.wait_for_signal(STEER_SIGNAL, timeout=0)
            except SignalTimeout:
                return texts
            if payload is None or payload == "":  # nothing to say (no --data): taken, no text
                continue
            texts.append(payload if isinstance(payload, str) else json.dumps(payload))

    async def _steered(self, messages: list[Message]) -> bool:
        """Before ending: add the messages that came during the last turn, if any (a
        final answer given then is superseded: the model answers again with them)."""
        late = await self._steering()
        messages.extend(user_message(text) for text in late)
        return bool(late)

    async def steer(self, app: App, run_id: str, text: str) -> None:
        """Send a message to a running run of this (``steerable``) agent; it is taken
        into account at the agent's next turn.

        Raises:
            ConfigError: the agent is not steerable.
            RunNotFound: no such run.
        """
        if not self.steerable:
            raise ConfigError(f"agent {self.name!r} is not steerable: create it with "
                              "steerable=True")
        await app.signal(run_id, STEER_SIGNAL, text)

    def _final_answer(self, reply: ChatReply, tools: Mapping[str, Tool]
                      ) -> tuple[bool, Any]:
        """Pure: the validated answer of a reply (a valid ``final_result`` call, or text
        that is valid JSON for the schema), as ``(True, answer)``; else ``(False, None)``
        (an invalid call is then answered by the tool-call path, with its error)."""
        assert self._final is not None
        # Any valid final_result call is the answer, not only the first one: a valid call
        # left to the tool-call path would have no step to run in.
        for i, call in enumerate(reply.tool_calls):
            if call.name == FINAL_RESULT_TOOL:
                checked = self._check(i, call, tools)
                if checked.problem is None and checked.arguments is not None:
                    return True, self._final.model.model_validate(checked.arguments)
        if not reply.tool_calls and reply.text:
            try:
                return True, self._final.model.model_validate_json(reply.text)
            except pydantic.ValidationError:
                return False, None
        return False, None

    def _status(self, turn: int, state: str) -> dict[str, Any]:
        return {"agent": self.name, "turn": turn, "state": state}

    async def _tools_of_run(self) -> dict[str, Tool]:
        """The static tools and, one journaled operation per toolset, the MCP tools."""
        tools = dict(self._static)
        for toolset in self._toolsets:
            for tool in await toolset.tools():
                if self._final is not None and tool.name == FINAL_RESULT_TOOL:
                    raise ConfigError(
                        f"agent {self.name!r}: MCP server {toolset.server.id!r} has a tool "
                        f"named {FINAL_RESULT_TOOL!r}, the tool of the agent's output_type; "
                        "give the toolset a tool_name_prefix or exclude the tool")
                if tool.name in tools:
                    raise ConfigError(
                        f"agent {self.name!r}: MCP server {toolset.server.id!r} has a tool "
                        f"named {tool.name!r}, as another tool does; give the toolset a "
                        "tool_name_prefix")
                tools[tool.name] = tool
        return tools

    async def _tool_calls(self, turn: int, reply: ChatReply, tools: Mapping[str, Tool]
                          ) -> list[str]:
        """Run one turn's tool calls; the text answer of each, in the model's order."""
        calls = [self._check(i, call, tools) for i, call in enumerate(reply.tool_calls)]
        for c in calls:
            if c.answer is None and c.tool is not None and c.tool.requires_approval:
                await self._approve(turn, c, reply)
        tether.set_status(self._status(turn, "calling tools"))
        launched: list[Awaitable[str]] = []
        run = ext.current_run()
        spending = spending_of(run) if run is not None else None
        if spending is not None:  # the children of the turn split what is left evenly
            spending.splitting = sum(1 for c in calls if c.answer is None and isinstance(
                c.tool, (AgentTool, WorkflowTool)))
        try:
            for c in calls:
                launched.append(await self._launch(c))
        except BaseException:
            for pending in launched:  # never started: close them without a warning
                if asyncio.iscoroutine(pending):
                    pending.close()
            for c in calls:
                if c.child is not None:
                    c.child.close()
            raise
        finally:
            if spending is not None:
                spending.splitting = 1
        # The waits for child runs (agents, workflows as tools) last: a child still going
        # releases the run, which interrupts the steps other calls have in flight (they
        # would run again when the child's result wakes the run: a paid call twice).
        # Their children started at launch, and every position is taken, so awaiting
        # them after the other calls costs no concurrency and changes no position.
        answers: list[str] = [""] * len(calls)
        groups = ([i for i, c in enumerate(calls) if c.child is None],
                   [i for i, c in enumerate(calls) if c.child is not None])
        try:
            for group in groups:
                for i, answer in zip(group, await asyncio.gather(
                        *(launched[i] for i in group)), strict=True):
                    answers[i] = answer
        except BaseException:
            for i in groups[1]:  # never awaited if the first group ended the turn
                pending = launched[i]
                if (asyncio.iscoroutine(pending) and inspect.getcoroutinestate(pending)
                        == inspect.CORO_CREATED):
                    pending.close()
                    child = calls[i].child
                    if child is not None:
                        child.close()
            raise
        # Child runs (agents, workflows) are over: roll their spend into this run's, in
        # the model's order (one journaled step each, so replay adds the same).
        for c in calls:
            if c.child is not None:
                await roll_up_child(self.name, c.child.run_id)
        return answers

    def _check(self, index: int, call: ToolCall, tools: Mapping[str, Tool]) -> _Call:
        """Pure: find the tool and validate the arguments (deterministic on replay)."""
        out = _Call(index, call)
        tool = tools.get(call.name)
        if tool is None:
            names = ", ".join(sorted(tools)) or "none"
            out.problem = f"unknown tool {call.name!r} (the tools are: {names})"
        elif call.parse_error is not None or call.arguments is None:
            out.problem = (f"invalid arguments for tool {call.name!r}: "
                           f"{call.parse_error or 'not a JSON object'}")
        else:
            try:
                out.arguments = tool.validate_arguments(call.arguments)
                out.tool = tool
            except ToolArgumentError as exc:
                out.problem = str(exc)
        if out.problem is not None:
            out.answer = f"error: {out.problem}"
        return out

    async def _approve(self, turn: int, c: _Call, reply: ChatReply) -> None:
        assert c.tool is not None and c.arguments is not None
        reason = (reply.text or "").strip() or c.tool.description or f"call {c.tool.name}"
        decision = await request_approval(
            c.tool.name, c.arguments, reason, approval_id=f"{turn}.{c.index}",
            call_id=c.call.id, status=self._status(turn, "calling tools"))
        if not decision.approved:
            c.answer = ("rejected by a human: " + decision.note if decision.note
                        else "rejected by a human (no note given)")

    async def _launch(self, c: _Call) -> Awaitable[str]:
        """Start one call: its journal positions are taken before this returns."""
        if c.problem is not None:
            assert self._invalid_call is not None
            return self._answered(self._invalid_call(c.call.name, c.call.raw_arguments,
                                                     c.problem), c)
        if c.answer is not None:
            return _done(c.answer)
        tool, arguments = c.tool, c.arguments
        assert tool is not None and arguments is not None
        try:
            if tool.durable:
                pending: Awaitable[Any] = await tool.launch(arguments)
                if isinstance(pending, ChildCall):
                    c.child = pending
                return self._result_text(pending, tool)
            return self._result_text(self._steps[tool.name](arguments), tool, text=True)
        except Cancelled:
            raise
        except Exception as exc:  # the launch itself failed (e.g. arguments not JSON)
            return _done(_failure(tool.name, exc))

    async def _answered(self, pending: Awaitable[Any], c: _Call) -> str:
        """Await the step that journals a malformed call; the answer is fixed."""
        try:
            await pending
        except Cancelled:
            raise
        except Exception:
            pass  # InvalidToolCall: recorded, as intended
        assert c.answer is not None
        return c.answer

    async def _result_text(self, pending: Awaitable[Any], tool: Tool, *, text: bool = False
                           ) -> str:
        try:
            result = await pending
        except Cancelled:
            raise
        except Exception as exc:
            if is_interrupted(exc):
                return INTERRUPTED_TEXT
            return _failure(tool.name, exc)
        return str(result) if text else tool.result_text(result)


async def _done(text: str) -> str:
    return text


async def roll_up_child(agent: str, child_run_id: str) -> dict[str, float]:
    """Add an ended child run's LLM spend (its own and its children's, as its metrics
    say) to this run: to the metrics ``children.runs``, ``children.tokens`` and
    ``children.cost.usd`` (so ``tether show`` gives the tree's totals), and to the
    spending its budget counts, in place of the share of the budget held for it. One
    journaled step ``<agent>.child_spend``: replay adds the same figures again to the
    budget's tally, and nothing to the metrics."""
    run = ext.current_run()
    if run is None:
        return {"tokens": 0.0, "usd": 0.0}

    async def child_spend(run_id: str) -> dict[str, float]:
        m = await run.run_metrics(run_id)
        tokens = (m.get("tokens.input", 0.0) + m.get("tokens.output", 0.0)
                  + m.get("children.tokens", 0.0))
        usd = m.get("cost.usd", 0.0) + m.get("children.cost.usd", 0.0)
        run.add_metrics({"children.runs": 1.0, "children.tokens": tokens,
                         "children.cost.usd": usd})
        return {"tokens": tokens, "usd": usd}

    spend: dict[str, float] = await ext.step(f"{agent}.child_spend", child_spend,
                                             child_run_id, retry=RetryPolicy(max_attempts=5))
    spending_of(run).roll_up(child_run_id, int(spend["tokens"]), float(spend["usd"]))
    return spend


async def call_child(workflow: Callable[..., Awaitable[Any]] | str, /,
                     args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                     queue: str | None = None, tool: str | None = None,
                     owner: str = "tether.ai") -> Any:
    """Run ``workflow`` as a child run bounded by this run's budget, as an agent's tool
    calls are: the child gets its share of what is left with its input (none when the
    run has no budget; refused before the child exists when nothing is left, per the
    run's policy), and once it ended, its spend is rolled up into this run's in place
    of the share (the step ``<owner>.child_spend``, and the metrics ``children.*``),
    whether it completed or failed. For integrations whose tools start child runs
    (``tether.integrations.openai_agents.workflow_tool``). ``tool``: the child serves
    the call of the tool so named (telemetry shows the wait as that tool's call).

    Raises:
        RunFailed: the child failed or was cancelled (its spend rolled up first).
        BudgetExceeded: no share left for the child, with the policy ``fail``.
        OutsideRun: not in workflow code.
    """
    handle = await start_tool_child(workflow, args, dict(kwargs or {}), queue=queue)
    try:
        result = await (ext.child_tool_result(handle, tool) if tool is not None
                        else handle.result())
    except RunFailed:
        await roll_up_child(owner, handle.run_id)
        raise
    await roll_up_child(owner, handle.run_id)
    return result


def split_budget(children: int) -> None:
    """Inside a workflow: the next ``children`` child runs started by ``call_child``
    (or an agent's tool calls) split what is left of the run's budget evenly, instead
    of the first taking all of it and leaving the next nothing. For tool calls a
    framework runs at once (the calls of one model response); each child started
    counts one off. Plain workflow state, as ``set_budget``: call it at the same point
    on every execution (after a journaled result, say). Outside a workflow it does
    nothing.
    """
    run = ext.current_run()
    if run is not None and ext.in_workflow():
        spending_of(run).splitting = max(1, int(children))


def _failure(tool: str, exc: Exception) -> str:
    """What the model reads when a tool failed for good (after its retries)."""
    if isinstance(exc, StepError):
        kind = exc.error_type.rsplit(".", 1)[-1]
        return f"error: tool {tool!r} failed: {kind}: {exc.message}"
    return f"error: tool {tool!r} failed: {type(exc).__name__}: {exc}"
