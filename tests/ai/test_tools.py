"""Function tools: JSON schema from type hints and docstrings, argument validation, sync
and async functions, and the idempotency key inside a step."""

from __future__ import annotations

import dataclasses
import enum
import json
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pytest

import tether
from tether import App, ConfigError, NonRetryable, TetherError
from tether.ai._tools import (
    FunctionTool,
    Tool,
    ToolArgumentError,
    function_tool,
    idempotency_headers,
    parse_docstring,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Filter(pydantic.BaseModel):
    field: str
    values: list[str] = []


class Tree(pydantic.BaseModel):
    name: str
    children: list[Tree] = []


@function_tool
async def search(query: str, limit: int = 10, mode: Literal["fast", "deep"] = "fast",
                 color: Color = Color.RED, near: Point | None = None,
                 where: Filter | None = None, tags: list[str] | None = None,
                 weights: dict[str, float] | None = None,
                 ratio: Annotated[float, pydantic.Field(ge=0, le=1)] = 0.5,
                 exact: bool = False) -> dict[str, Any]:
    """Search the catalogue for items.

    A second paragraph that the model does not need.

    Args:
        query: what to look for,
            in plain words.
        limit (int): at most this many hits.
        near: only items close to this point.

    Returns:
        The hits.
    """
    return {"query": query, "limit": limit, "mode": mode, "color": color, "near": near,
            "where": where, "tags": tags, "weights": weights, "ratio": ratio, "exact": exact}


def walk(node: Any) -> list[dict[str, Any]]:
    """Every schema dict in a schema."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += walk(value)
    elif isinstance(node, list):
        for value in node:
            out += walk(value)
    return out


# -- schema ---------------------------------------------------------------------------------


def test_schema_from_hints_docstring_and_defaults() -> None:
    """Types, descriptions, defaults and required come from the signature and docstring."""
    assert isinstance(search, FunctionTool) and isinstance(search, Tool)
    assert search.name == "search"
    assert search.description == "Search the catalogue for items."
    params = search.parameters
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert props["query"] == {"type": "string",
                              "description": "what to look for, in plain words."}
    assert props["limit"] == {"type": "integer", "default": 10,
                              "description": "at most this many hits."}
    assert props["mode"] == {"type": "string", "enum": ["fast", "deep"], "default": "fast"}
    assert props["color"] == {"type": "string", "enum": ["red", "blue"], "default": "red"}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                       {"type": "null"}], "default": None}
    assert props["weights"]["anyOf"][0] == {"type": "object",
                                            "additionalProperties": {"type": "number"}}
    assert props["ratio"] == {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}
    assert props["exact"] == {"type": "boolean", "default": False}


def test_dataclasses_models_and_enums_are_inlined_without_titles() -> None:
    """Nested types are inlined (no $defs, no $ref) and generated titles are gone."""
    props = search.parameters["properties"]
    near = props["near"]
    assert near["description"] == "only items close to this point."
    point = near["anyOf"][0]
    assert point["type"] == "object"
    assert point["properties"] == {"x": {"type": "integer"},
                                   "y": {"type": "integer", "default": 0}}
    assert point["required"] == ["x"]
    filt = props["where"]["anyOf"][0]
    assert filt["properties"]["values"] == {"type": "array", "items": {"type": "string"},
                                            "default": []}
    text = json.dumps(search.parameters)
    assert "$defs" not in text and "$ref" not in text
    assert all("title" not in node for node in walk(search.parameters))


def test_recursive_types_keep_valid_defs() -> None:
    """A recursive model keeps its definition in $defs, and every $ref resolves."""

    @function_tool
    def plant(tree: Tree) -> str:
        return tree.name

    schema = plant.parameters
    assert set(schema["$defs"]) == {"Tree"}
    for node in walk(schema):
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in schema["$defs"]


def test_a_property_named_title_is_kept() -> None:
    """Only generated titles are dropped: a parameter called ``title`` stays."""

    @function_tool
    def rename(title: str, schema: str = "v1", json: bool = False) -> str:
        return title

    assert set(rename.parameters["properties"]) == {"title", "schema", "json"}
    assert rename.parameters["required"] == ["title"]


def test_decorator_forms_and_overrides() -> None:
    """@function_tool works bare and with options; the tool is still callable."""

    @function_tool()
    def one() -> int:
        """One."""
        return 1

    @function_tool(name="add_numbers", description="Adds.", requires_approval=True)
    def add(a: int, b: int) -> int:
        """Ignored description."""
        return a + b

    assert one.spec() == {"name": "one", "description": "One.",
                          "parameters": {"type": "object", "properties": {},
                                         "additionalProperties": False}}
    assert (add.name, add.description, add.requires_approval) == ("add_numbers", "Adds.", True)
    assert not one.requires_approval and not one.durable
    assert add(2, 3) == 5
    direct = FunctionTool(lambda city: city, name="echo")
    assert direct.parameters["properties"] == {"city": {}}


def test_signatures_that_cannot_be_described_are_refused() -> None:
    """*args, **kwargs and non-callables fail at definition time with ConfigError."""
    with pytest.raises(ConfigError, match=r"\*args and \*\*kwargs"):
        function_tool(lambda *items: items)
    with pytest.raises(ConfigError, match=r"\*args and \*\*kwargs"):
        function_tool(lambda **options: options)
    with pytest.raises(ConfigError, match="needs a function"):
        FunctionTool(42)  # type: ignore[arg-type]


def test_google_docstring_parsing() -> None:
    """First paragraph, then Args entries with types and continuation lines."""
    doc = """Fetch a page.

    Args:
        url (str): the address,
            absolute.
        *headers: extra headers.
        timeout: seconds.

    Raises:
        ValueError: never described as a parameter.
    """
    description, params = parse_docstring(doc)
    assert description == "Fetch a page."
    assert params == {"url": "the address, absolute.", "headers": "extra headers.",
                      "timeout": "seconds."}
    assert parse_docstring("") == ("", {})
    assert parse_docstring("Only a line\nthat wraps.") == ("Only a line that wraps.", {})


# -- invoke -----------------------------------------------------------------------------------


async def test_invoke_validates_and_converts_arguments() -> None:
    """Arguments are coerced and built into the annotated types; defaults fill the rest."""
    out = await search.invoke({"query": "lamp", "limit": "3", "color": "blue",
                               "near": {"x": 1}, "where": {"field": "room"}})
    assert out["limit"] == 3
    assert out["color"] is Color.BLUE
    assert out["near"] == Point(1, 0)
    assert out["where"] == Filter(field="room")
    assert out["mode"] == "fast" and out["tags"] is None


async def test_invoke_accepts_json_text() -> None:
    """Models send arguments as JSON text; invoke parses it (empty text is no arguments)."""
    assert (await search.invoke('{"query": "desk"}'))["query"] == "desk"  # type: ignore[arg-type]

    @function_tool
    def ping() -> str:
        return "pong"

    assert await ping.invoke("") == "pong"  # type: ignore[arg-type]


@pytest.mark.parametrize(("arguments", "expected"), [
    ({}, "query: missing required argument"),
    ({"query": "a", "limit": "ten"}, "limit: Input should be a valid integer"),
    ({"query": 5}, "query: Input should be a valid string (got 5)"),
    ({"query": "a", "mode": "slow"}, "mode: Input should be 'fast' or 'deep'"),
    ({"query": "a", "near": {"y": 2}}, "near.x: missing required argument"),
    ({"query": "a", "ratio": 3}, "ratio: Input should be less than or equal to 1"),
    ({"query": "a", "sort": "asc"}, "sort: unexpected argument (the tool takes: query, limit,"),
    ([1, 2], "arguments must be a JSON object, got list"),
    ("{not json", "arguments are not valid JSON"),
])
async def test_bad_arguments_raise_a_message_for_the_model(arguments: Any,
                                                           expected: str) -> None:
    """Missing, ill-typed and unknown arguments raise ToolArgumentError naming each."""
    with pytest.raises(ToolArgumentError) as info:
        await search.invoke(arguments)
    err = info.value
    assert str(err).startswith("invalid arguments for tool 'search': ")
    assert expected in str(err)
    assert err.tool == "search" and err.errors
    assert isinstance(err, NonRetryable) and isinstance(err, TetherError)


def test_validate_arguments_is_pure_and_returns_the_given_dict() -> None:
    """validate_arguments checks without calling, and returns JSON-able arguments."""
    assert search.validate_arguments('{"query": "x", "near": {"x": 1}}') == {
        "query": "x", "near": {"x": 1}}
    with pytest.raises(ToolArgumentError, match="query: missing"):
        search.validate_arguments({"limit": 1})


async def test_sync_functions_run_in_a_thread_async_ones_on_the_loop() -> None:
    """A plain def runs off the event loop's thread; an async def runs on it."""
    loop_thread = threading.get_ident()

    @function_tool
    def blocking(n: int) -> int:
        return threading.get_ident()

    @function_tool
    async def nonblocking(n: int) -> int:
        return threading.get_ident()

    assert await blocking.invoke({"n": 1}) != loop_thread
    assert await nonblocking.invoke({"n": 1}) == loop_thread


async def test_positional_only_parameters_and_callable_objects() -> None:
    """Positional-only parameters are passed positionally; callable objects work."""

    def scale(value: float, /, factor: float = 2.0) -> float:
        return value * factor

    class Greeter:
        async def __call__(self, name: str) -> str:
            return f"hi {name}"

    assert await function_tool(scale).invoke({"value": 2, "factor": 3}) == 6
    greeter = function_tool(Greeter(), name="greet")
    assert greeter.parameters["required"] == ["name"]
    assert await greeter.invoke({"name": "ada"}) == "hi ada"


def test_result_text() -> None:
    """Strings pass through; other results become JSON for the model."""
    assert search.result_text("plain") == "plain"
    assert search.result_text({"p": Point(1, 2), "c": Color.RED}) == (
        '{"p": {"x": 1, "y": 2}, "c": "red"}')
    assert search.result_text(Filter(field="f")) == '{"field": "f", "values": []}'


def test_custom_tool_subclass() -> None:
    """A Tool subclass sets the attributes and implements invoke."""

    class Clock(Tool):
        name = "clock"
        description = "The time."
        parameters = {"type": "object", "properties": {}}

        async def invoke(self, arguments: dict[str, Any]) -> Any:
            return "noon"

    assert Clock().spec()["name"] == "clock"
    assert Clock().validate_arguments(None) == {}
    with pytest.raises(TypeError):
        Tool()  # type: ignore[abstract]


# -- the idempotency key ---------------------------------------------------------------------


async def test_idempotency_headers_carry_the_step_key(tmp_path: Path) -> None:
    """Inside a step, a tool (even a plain def in a thread) sees the step's key."""
    app = App(f"sqlite:///{tmp_path}/t.db")

    @function_tool
    def charge(amount: int) -> dict[str, str]:
        return {**idempotency_headers(), "amount": str(amount)}

    @app.step(name="tool:charge")
    async def run_tool(arguments: dict[str, Any]) -> dict[str, str]:
        return await charge.invoke(arguments)  # type: ignore[no-any-return]

    @app.workflow
    async def pay() -> list[dict[str, str]]:
        return [await run_tool({"amount": 5}), await run_tool({"amount": 7})]

    async with app.worker():
        handle = await app.start(pay, run_id="pay-1")
        assert await handle.result(timeout=20) == [
            {"Idempotency-Key": "pay-1:0", "amount": "5"},
            {"Idempotency-Key": "pay-1:1", "amount": "7"},
        ]
    await app.close()
    assert idempotency_headers() == {}
    assert await charge.invoke({"amount": 1}) == {"amount": "1"}
    with pytest.raises(TetherError):
        tether.step_key()


def test_tool_names_a_provider_refuses_are_refused_at_definition() -> None:
    """OpenAI and Anthropic take a tool name matching ``^[a-zA-Z0-9_-]{1,64}$`` and answer
    any other with a 400 on the first (paid) call; ``function_tool`` took them."""
    def fine(x: int) -> int:
        return x

    for bad in ("my tool", "a.b", "x" * 65, "café"):
        with pytest.raises(ConfigError, match=r"\^\[a-zA-Z0-9_-\]\{1,64\}\$"):
            function_tool(fine, name=bad)
    with pytest.raises(ConfigError, match=r"'<lambda>'.*function_tool\(fn, name='lambda'\)"):
        function_tool(lambda x: x)
    assert function_tool(fine, name="a-B_9" + "x" * 59).name == "a-B_9" + "x" * 59
    assert function_tool(fine).name == "fine"
