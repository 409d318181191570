"""The agent catalogue: agents are configuration (agents.json), not code.

Each agent has a name (matched case-insensitively), instructions (the system prompt), and
optional model/deployment, temperature, max output tokens and context budget; the tools it may
call (names of `@tool` functions in the `tools/` package), those a person must approve first,
the bounds of its tool loop and a default `response_format` (structured replies). A name that
is not a registered tool fails the start with a message naming the agent and the tool.
AGENTS_FILE points at another catalogue file.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
DEFAULT_CONTEXT_TOKENS = 3000
DEFAULT_MAX_STEPS = 8
DEFAULT_MAX_TOOL_CALLS = 16
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 86400
KEYS = {"name", "instructions", "model", "temperature", "max_output_tokens", "context_tokens",
        "tools", "require_approval", "max_steps", "max_tool_calls", "approval_timeout_seconds",
        "response_format"}


class CatalogueError(ValueError):
    """agents.json is missing, malformed or declares an invalid agent."""


@dataclass(frozen=True)
class Agent:
    name: str
    instructions: str
    model: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    tools: tuple[str, ...] = ()
    require_approval: tuple[str, ...] = ()
    max_steps: int = DEFAULT_MAX_STEPS
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    response_format: dict | None = None

    def __hash__(self) -> int:  # response_format is a dict: hash by the (unique) name
        return hash(self.name.lower())

    def needs_approval(self, tool_name: str) -> bool:
        return tool_name in self.require_approval

    @property
    def entity_name(self) -> str:
        """The thread entity of this agent: thread ids are `@dafx-<agent lower>@<uuid>`."""
        return f"dafx-{self.name}"

    def to_activity(self) -> dict:
        """The small agent description the LLM activity needs (name, instructions, model,
        temperature, max_output_tokens); tools and response_format travel separately."""
        return {"name": self.name, "instructions": self.instructions, "model": self.model,
                "temperature": self.temperature, "max_output_tokens": self.max_output_tokens}


def _names(entry: dict, key: str, name: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogueError(f"{where}: {key} of '{name}' must be a list of tool names")
    if len(set(value)) != len(value):
        raise CatalogueError(f"{where}: {key} of '{name}' names a tool twice")
    return tuple(value)


def _check_tools(agent: Agent, known: dict, where: str) -> Agent:
    """Unknown tool names fail here, naming the agent and the tool; tools declared
    `@tool(requires="approval")` are added to require_approval."""
    for name in agent.tools:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none are defined"
            raise CatalogueError(f"{where}: agent '{agent.name}' names the tool '{name}', which "
                                 f"is not a @tool in the tools/ package (known tools: {listed})")
    for name in agent.require_approval:
        if name not in agent.tools:
            raise CatalogueError(f"{where}: agent '{agent.name}' lists '{name}' in "
                                 "require_approval but not in its tools")
    forced = tuple(n for n in agent.tools if getattr(known[n], "requires_approval", False)
                   and n not in agent.require_approval)
    if forced:
        agent = replace(agent, require_approval=agent.require_approval + forced)
    return agent


def _agent_from(entry: object, where: str) -> Agent:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: each agent must be an object")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CatalogueError(f"{where}: agent name {name!r} must be 1-64 letters, digits, '-' or "
                             "'_', starting with a letter")
    instructions = entry.get("instructions", "")
    if not isinstance(instructions, str):
        raise CatalogueError(f"{where}: instructions of '{name}' must be a string")
    temperature = entry.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise CatalogueError(f"{where}: temperature of '{name}' must be between 0 and 2")
    limits = {}
    for key, default in (("max_output_tokens", None), ("context_tokens", DEFAULT_CONTEXT_TOKENS),
                         ("max_steps", DEFAULT_MAX_STEPS),
                         ("max_tool_calls", DEFAULT_MAX_TOOL_CALLS),
                         ("approval_timeout_seconds", DEFAULT_APPROVAL_TIMEOUT_SECONDS)):
        value = entry.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise CatalogueError(f"{where}: {key} of '{name}' must be a positive integer")
        limits[key] = value
    model = entry.get("model")
    if model is not None and not isinstance(model, str):
        raise CatalogueError(f"{where}: model of '{name}' must be a string")
    unknown = set(entry) - KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys for agent '{name}': {sorted(unknown)}")
    response_format = entry.get("response_format")
    if response_format is not None:
        from core.structured import check_response_format

        try:
            response_format = check_response_format(response_format)
        except ValueError as exc:
            raise CatalogueError(f"{where}: response_format of '{name}': {exc}") from None
    return Agent(name, instructions, model or None, temperature, **limits,
                 tools=_names(entry, "tools", name, where),
                 require_approval=_names(entry, "require_approval", name, where),
                 response_format=response_format)


def parse_catalogue(data: object, where: str = "agents.json",
                    known_tools: dict | None = None) -> dict[str, Agent]:
    """Agents by lower-case name. `known_tools` ({name: spec}) defaults to the tools/ package's
    registry (imported on first need)."""
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, list) or not agents:
        raise CatalogueError(f"{where}: expected {{\"agents\": [ ... ]}} with at least one agent")
    catalogue: dict[str, Agent] = {}
    for entry in agents:
        agent = _agent_from(entry, where)
        if agent.tools or agent.require_approval:
            if known_tools is None:
                from core.tools import load_tools

                known_tools = load_tools()
            agent = _check_tools(agent, known_tools, where)
        if agent.name.lower() in catalogue:
            raise CatalogueError(f"{where}: agent '{agent.name}' is declared twice "
                                 "(names are case-insensitive)")
        catalogue[agent.name.lower()] = agent
    return catalogue


@lru_cache(maxsize=1)
def load_catalogue() -> dict[str, Agent]:
    path = Path(os.environ.get("AGENTS_FILE") or APP_ROOT / "agents.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"agent catalogue {path} not found (set AGENTS_FILE)") from None
    except ValueError as exc:
        raise CatalogueError(f"{path} is not valid JSON: {exc}") from None
    return parse_catalogue(data, str(path))


def find_agent(name: str) -> Agent | None:
    return load_catalogue().get(name.lower())
