"""Tools: schema generation from hints + docstrings, the per-tool activities, the example tools
and the agents' tool settings. The tool activities run through the blueprint functions the
Functions host would call; the example tools write real files."""
from __future__ import annotations

import asyncio
import enum
import json
import threading
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, TypedDict

import pytest

from activities import tools as tool_activities
from activities.errors import ToolError, parse_error_text
from core import tools as registry
from core.agents import CatalogueError, parse_catalogue
from core.tools import ToolDefinitionError, build_spec, tool

EXAMPLES = {"current_time", "calculate", "lookup_order", "search_orders", "refund_order"}


@pytest.fixture
def throwaway():
    """Names of tools a test registers; forgotten afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


def run(name: str, arguments, call_id: str = "call-1"):
    return asyncio.run(tool_activities.run_tool(name, {
        "call_id": call_id, "arguments": arguments, "turn_id": "t1", "thread_id": "th1"}))


# --------------------------------------------------------------------------- schemas


def test_google_docstring_and_hints_give_the_schema():
    def find_flights(origin: str, destination: str, passengers: int = 1, max_price: float = None,
                     direct: bool = False, idempotency_key: str = "") -> dict:
        """Find flights between two airports.

        Prices are in euros. This second paragraph is not part of the description.

        Args:
            origin: IATA code of the departure
                airport, e.g. "CDG".
            destination (str): IATA code of the arrival airport.
            passengers: how many people travel.

        Returns:
            the flights found.
        """

    spec = build_spec(find_flights)
    assert spec.name == "find_flights"
    assert spec.description == "Find flights between two airports."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "origin": {"type": "string",
                       "description": 'IATA code of the departure airport, e.g. "CDG".'},
            "destination": {"type": "string", "description": "IATA code of the arrival airport."},
            "passengers": {"type": "integer", "description": "how many people travel.",
                           "default": 1},
            "max_price": {"type": "number"},
            "direct": {"type": "boolean", "default": False},
        },
        "required": ["origin", "destination"],
        "additionalProperties": False,
    }
    assert spec.takes_idempotency_key and "idempotency_key" not in spec.parameters["properties"]
    assert spec.openai_schema() == {"type": "function", "function": {
        "name": "find_flights", "description": spec.description, "parameters": spec.parameters}}


def test_numpy_docstring():
    def area(width: float, height: float) -> float:
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            The width, in metres.
        height : float
            The height,
            in metres.

        Returns
        -------
        float
        """

    spec = build_spec(area)
    assert spec.description == "Area of a rectangle."
    props = spec.parameters["properties"]
    assert props["width"]["description"] == "The width, in metres."
    assert props["height"]["description"] == "The height, in metres."


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(TypedDict):
    street: str
    city: str


@dataclass
class Line:
    sku: str
    qty: int = 1


def test_rich_hints():
    def rich(mode: Literal["fast", "slow"], colour: Colour, tags: list[str],
             scores: dict[str, float], address: Address, lines: list[Line],
             note: Optional[str] = None, size: Annotated[int, "shoe size, EU"] = 42,
             pair: tuple[int, int] = (1, 2), anything=None) -> None:
        """Rich."""

    props = build_spec(rich).parameters["properties"]
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["colour"] == {"type": "string", "enum": ["red", "green"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["address"] == {"type": "object", "properties": {
        "street": {"type": "string"}, "city": {"type": "string"}},
        "required": ["city", "street"], "additionalProperties": False}
    assert props["lines"] == {"type": "array", "items": {
        "type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        "required": ["sku"], "additionalProperties": False}}
    assert props["note"] == {"type": ["string", "null"]}
    assert props["size"] == {"type": "integer", "description": "shoe size, EU", "default": 42}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "integer"}]
    assert props["anything"] == {}


def test_schema_override_and_its_check():
    schema = {"type": "object", "properties": {"sql": {"type": "string", "maxLength": 200}},
              "required": ["sql"]}

    def query(sql):
        """Run a read-only query."""

    assert build_spec(query, schema=schema).parameters == schema
    with pytest.raises(ToolDefinitionError, match="not a valid JSON schema"):
        build_spec(query, schema={"type": "object", "properties": {"sql": {"type": 12}}})
    with pytest.raises(ToolDefinitionError, match="must describe an object"):
        build_spec(query, schema={"type": "string"})


def test_definitions_that_cannot_work_fail_at_import_with_the_tool_named():
    def bad_hint(when: complex) -> None:
        """x"""

    with pytest.raises(ToolDefinitionError, match=r"tool 'bad_hint', parameter 'when'.*schema="):
        build_spec(bad_hint)

    def splat(*args) -> None:
        """x"""

    with pytest.raises(ToolDefinitionError, match="'args' must be a plain named parameter"):
        build_spec(splat)
    with pytest.raises(ToolDefinitionError, match="timeout_seconds"):
        build_spec(bad_hint, schema={"type": "object"}, timeout_seconds=0)
    with pytest.raises(ToolDefinitionError, match="max_attempts"):
        build_spec(bad_hint, schema={"type": "object"}, max_attempts=0)
    with pytest.raises(ToolDefinitionError, match="requires"):
        build_spec(bad_hint, schema={"type": "object"}, requires="magic")


def test_the_same_name_twice_is_refused(throwaway):
    def twin() -> str:
        """One."""
        return "one"

    tool(twin)
    throwaway.append("twin")
    other = {}
    exec("def twin():\n    '''Two.'''\n", {"__name__": "elsewhere"}, other)
    with pytest.raises(ToolDefinitionError, match="tool 'twin' is defined twice"):
        tool(other["twin"])


def test_every_module_of_tools_is_loaded_and_the_registry_lists_the_examples():
    specs = registry.load_tools()
    assert EXAMPLES <= set(specs)
    assert {specs[n].module for n in EXAMPLES} == {"tools.clock", "tools.calculator", "tools.orders"}
    assert specs["refund_order"].requires_approval and not specs["lookup_order"].requires_approval
    assert [s["function"]["name"] for s in registry.openai_schemas(["calculate", "current_time"])] \
        == ["calculate", "current_time"]
    options = registry.retry_options(specs["refund_order"])
    assert options.max_number_of_attempts == 3 and options.first_retry_interval_in_milliseconds == 1000
    assert specs["calculate"].max_attempts == 1  # deterministic tools do not retry


def test_check_and_parse_arguments():
    spec = registry.get_tool("search_orders")
    assert registry.check_arguments(spec, {"query": "ada", "status": None}) is None
    assert "is not one of" in registry.check_arguments(spec, {"status": "lost"})
    assert "Additional properties" in registry.check_arguments(spec, {"colour": "red"})
    assert registry.parse_arguments('{"a": 1}') == {"a": 1}
    assert registry.parse_arguments("") == {}
    with pytest.raises(ValueError, match="not valid JSON"):
        registry.parse_arguments("{oops")
    with pytest.raises(ValueError, match="must be a JSON object"):
        registry.parse_arguments("[1]")


# --------------------------------------------------------------------------- the activities


def test_one_activity_per_tool_named_after_the_tool():
    import function_app

    activities = {}
    for function in function_app.app.get_functions():
        trigger = function.get_trigger()
        if trigger.type == "activityTrigger":
            activities[function.get_function_name()] = (trigger.name, function.get_user_function())
    assert EXAMPLES <= set(activities)
    assert "call_llm" in activities
    binding, handler = activities["calculate"]
    assert binding == "call"
    result = asyncio.run(handler({"call_id": "c1", "arguments": {"expression": "6*7"},
                                  "turn_id": "t", "thread_id": "th"}))
    assert result == {"expression": "6*7", "result": 42}


def test_invalid_arguments_raise_a_clear_tagged_error():
    with pytest.raises(ToolError) as caught:
        run("lookup_order", {"order": "A1001"})
    kind, status, message = parse_error_text(
        f"Activity function 'lookup_order' failed: ToolError: {caught.value}")
    assert (kind, status) == ("invalid_arguments", 400)
    assert message.startswith("tool 'lookup_order': invalid arguments:")
    assert "'order_id' is a required property" in message
    with pytest.raises(ToolError, match="invalid arguments: limit: 'many' is not of type 'integer'"):
        run("search_orders", {"limit": "many"})
    with pytest.raises(ToolError, match=r"\[invalid_arguments:400\] tool 'calculate': the arguments are not valid JSON"):
        run("calculate", "{not json")
    with pytest.raises(ToolError, match=r"\[bad_request:500\]"):
        asyncio.run(tool_activities.run_tool("calculate", 7))


def test_arguments_may_be_the_models_json_text():
    assert run("calculate", '{"expression": "2**10"}') == {"expression": "2**10", "result": 1024}


def test_a_raising_tool_fails_the_activity_with_its_reason():
    with pytest.raises(ToolError) as caught:
        run("current_time", {"timezone": "Mars/Olympus_Mons"})
    assert str(caught.value).startswith("[tool_failed:500] tool 'current_time' raised ValueError: "
                                        "unknown time zone 'Mars/Olympus_Mons'")


def test_timeouts_sync_and_async(throwaway):
    release = threading.Event()

    @tool(timeout_seconds=0.2, max_attempts=1)
    async def slow_async() -> str:
        """Never done in time."""
        await asyncio.sleep(30)
        return "late"

    @tool(timeout_seconds=0.2, max_attempts=1)
    def slow_sync() -> str:
        """Never done in time either."""
        release.wait(30)
        return "late"

    throwaway += ["slow_async", "slow_sync"]
    threading.Timer(1.0, release.set).start()  # the abandoned thread ends (asyncio.run waits)
    for name in ("slow_async", "slow_sync"):
        with pytest.raises(ToolError, match=rf"\[tool_timeout:504\] tool '{name}' did not finish within 0.2 s"):
            run(name, {})


def test_results_must_be_json(throwaway):
    @tool
    def gives_a_set() -> object:
        """Returns something JSON cannot carry."""
        return {1, 2}

    @tool
    def gives_nan() -> float:
        """Returns NaN."""
        return float("nan")

    throwaway += ["gives_a_set", "gives_nan"]
    with pytest.raises(ToolError, match=r"\[invalid_tool_result:500\] tool 'gives_a_set' returned set, which is not JSON-serialisable"):
        run("gives_a_set", {})
    with pytest.raises(ToolError, match="invalid_tool_result"):
        run("gives_nan", {})


def test_enum_and_dataclass_arguments_are_built_and_the_key_is_passed(throwaway):
    seen = {}

    @tool
    async def paint(colour: Colour, lines: list[Line], idempotency_key: str) -> dict:
        """Paint some lines."""
        seen.update(colour=colour, lines=lines, key=idempotency_key)
        return {"ok": True}

    throwaway.append("paint")
    assert run("paint", {"colour": "red", "lines": [{"sku": "X", "qty": 2}]}, "call_abc") == {"ok": True}
    assert seen == {"colour": Colour.RED, "lines": [Line("X", 2)], "key": "call_abc"}


# --------------------------------------------------------------------------- example tools


def test_current_time_in_a_zone():
    paris = run("current_time", {"timezone": "Europe/Paris"})
    utc = run("current_time", {})
    assert paris["timezone"] == "Europe/Paris" and utc["timezone"] == "UTC"
    assert paris["utc_offset"] in ("+01:00", "+02:00") and utc["utc_offset"] == "+00:00"
    assert paris["abbreviation"] in ("CET", "CEST")
    assert paris["iso"].endswith(paris["utc_offset"]) and paris["date"] in paris["iso"]
    kolkata = run("current_time", {"timezone": "Asia/Kolkata"})
    assert kolkata["utc_offset"] == "+05:30"


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 / 2", 3.5), ("7 // 2", 3), ("-2 ** 2", -4),
    ("2 ^ 8", 256), ("sqrt(16) + abs(-3)", 7), ("round(pi, 3)", 3.142), ("max(1, 5, 3) % 4", 1),
    ("1e3 / 8", 125),
])
def test_calculate(expression, value):
    assert run("calculate", {"expression": expression}) == {"expression": expression, "result": value}


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('true')", "that function call is not allowed"),
    ("(1).__class__", "Attribute is not allowed"),
    ("x + 1", "the name 'x' is not allowed"),
    ("9 ** 9 ** 9", "exponents above 1000"),
    ("10 ** 999", "too large"),
    ("1 / 0", "division by zero"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 600, "longer than 500"),
    ("'a' * 3", "Constant is not allowed"),
])
def test_calculate_refuses_what_is_not_arithmetic(expression, reason):
    with pytest.raises(ToolError) as caught:
        run("calculate", {"expression": expression})
    assert "[tool_failed:500] tool 'calculate' raised ValueError" in str(caught.value)
    assert reason in str(caught.value)


def test_order_lookup_and_search(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLS_DATA_DIR", str(tmp_path))
    order = run("lookup_order", {"order_id": "a1002"})
    assert order["found"] and order["id"] == "A1002" and order["total"] == 438.0
    assert order["customer"] == "Alan Turing" and order["refunded"] == 0
    assert run("lookup_order", {"order_id": "Z9"}) == {
        "found": False, "order_id": "Z9", "message": "there is no order 'Z9'"}
    ada = run("search_orders", {"query": "ada"})
    assert ada["count"] == 2 and [o["id"] for o in ada["orders"]] == ["A1004", "A1001"]
    delivered = run("search_orders", {"query": "keyboard", "status": "delivered"})
    assert {o["id"] for o in delivered["orders"]} == {"A1001", "A1008"}
    assert run("search_orders", {"limit": 3})["count"] == 8
    assert len(run("search_orders", {"limit": 3})["orders"]) == 3


def test_refund_runs_once_per_call_id_and_counts_every_attempt(tmp_path, monkeypatch):
    from tools.orders import read_ledger

    monkeypatch.setenv("TOOLS_DATA_DIR", str(tmp_path))
    args = {"order_id": "A1001", "amount": 29.5, "reason": "mouse broken"}
    first = run("refund_order", args, "call_r1")
    again = run("refund_order", args, "call_r1")  # a retry / crash re-run of the same call
    assert first["refunded"] and not first["duplicate"] and first["amount"] == 29.5
    assert again["duplicate"] and again["refund_id"] == first["refund_id"]
    assert [r["key"] for r in read_ledger()] == ["call_r1"]
    assert [a["key"] for a in read_ledger("refund_attempts.jsonl")] == ["call_r1", "call_r1"]
    assert run("lookup_order", {"order_id": "A1001"})["refunded"] == 29.5
    # a new call is a new refund, bounded by what is left
    too_much = run("refund_order", {**args, "amount": 100}, "call_r2")
    assert too_much == {"refunded": False, "order_id": "A1001", "refundable": 89.0,
                        "message": "the amount must be more than 0 and at most 89.0"}
    cancelled = run("refund_order", {"order_id": "A1004", "amount": 1, "reason": "x"}, "call_r3")
    assert cancelled["refunded"] is False and "cancelled" in cancelled["message"]
    assert len(read_ledger()) == 1


def test_concurrent_runs_of_one_call_refund_once(tmp_path, monkeypatch):
    from tools.orders import read_ledger, refund_order

    monkeypatch.setenv("TOOLS_DATA_DIR", str(tmp_path))
    results = []
    threads = [threading.Thread(target=lambda: results.append(refund_order(
        "A1006", 10.0, "scratch", idempotency_key="call_same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_ledger()) == 1 and len(read_ledger("refund_attempts.jsonl")) == 8
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 7


# --------------------------------------------------------------------------- agents


def _catalogue(**agent):
    return parse_catalogue({"agents": [{"name": "Shop", "instructions": "x", **agent}]}, "test.json")


def test_agent_tool_settings_and_defaults():
    plain = _catalogue()["shop"]
    assert (plain.tools, plain.require_approval, plain.max_steps, plain.max_tool_calls,
            plain.approval_timeout_seconds, plain.response_format) == ((), (), 8, 16, 86400, None)
    agent = _catalogue(tools=["lookup_order", "refund_order"], max_steps=3, max_tool_calls=5,
                       approval_timeout_seconds=60)["shop"]
    assert agent.tools == ("lookup_order", "refund_order")
    # refund_order is declared @tool(requires="approval"): every agent must ask
    assert agent.require_approval == ("refund_order",) and agent.needs_approval("refund_order")
    assert (agent.max_steps, agent.max_tool_calls, agent.approval_timeout_seconds) == (3, 5, 60)
    assert set(agent.to_activity()) == {"name", "instructions", "model", "temperature",
                                        "max_output_tokens"}


def test_unknown_tool_names_fail_naming_agent_and_tool():
    with pytest.raises(CatalogueError, match=r"test.json: agent 'Shop' names the tool 'teleport', "
                                             r"which is not a @tool in the tools/ package \(known tools: .*calculate"):
        _catalogue(tools=["calculate", "teleport"])
    with pytest.raises(CatalogueError, match="agent 'Shop' lists 'calculate' in require_approval "
                                             "but not in its tools"):
        _catalogue(tools=["current_time"], require_approval=["calculate"])
    with pytest.raises(CatalogueError, match="tools of 'Shop' must be a list of tool names"):
        _catalogue(tools="calculate")
    with pytest.raises(CatalogueError, match="max_steps of 'Shop' must be a positive integer"):
        _catalogue(max_steps=0)


def test_the_shipped_catalogue_gives_the_sample_agent_the_example_tools():
    from core.agents import load_catalogue

    agent = load_catalogue()["mydurableagent"]
    assert set(agent.tools) == EXAMPLES and agent.require_approval == ("refund_order",)


def test_the_app_fails_to_start_on_an_unknown_tool(tmp_path):
    """Start-up, for real: devhost refuses the app and says which agent and tool."""
    from conftest import ROOT, DevhostProcess

    catalogue = tmp_path / "agents.json"
    catalogue.write_text(json.dumps({"agents": [{"name": "Bad", "tools": ["teleport"]}]}))
    host = DevhostProcess(ROOT, tmp_path / "hub.sqlite", {"AGENTS_FILE": str(catalogue)})
    try:
        with pytest.raises(RuntimeError) as caught:
            host.start(timeout=120)
    finally:
        host.kill()
    assert "agent 'Bad' names the tool 'teleport'" in str(caught.value)


def test_an_agent_default_response_format_is_checked_at_start():
    agent = _catalogue(response_format={"type": "json_schema", "json_schema": {
        "name": "label", "schema": {"type": "object"}}})["shop"]
    assert agent.response_format == {"type": "json_schema", "json_schema": {
        "name": "label", "schema": {"type": "object"}, "strict": False}}
    with pytest.raises(CatalogueError, match="test.json: response_format of 'Shop': "
                                             "response_format.type must be"):
        _catalogue(response_format={"type": "yaml"})
