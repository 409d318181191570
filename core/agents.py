"""The agent catalogue: agents are configuration (agents.json), not code.

Each agent has a name (matched case-insensitively), instructions (the system prompt), and
optional model/deployment, temperature, max output tokens and context budget. AGENTS_FILE points
at another catalogue file.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
DEFAULT_CONTEXT_TOKENS = 3000


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

    @property
    def entity_name(self) -> str:
        """The thread entity of this agent: thread ids are `@dafx-<agent lower>@<uuid>`."""
        return f"dafx-{self.name}"

    def to_activity(self) -> dict:
        """The small agent description the LLM activity needs."""
        data = asdict(self)
        data.pop("context_tokens")
        return data


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
    for key, default in (("max_output_tokens", None), ("context_tokens", DEFAULT_CONTEXT_TOKENS)):
        value = entry.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise CatalogueError(f"{where}: {key} of '{name}' must be a positive integer")
        limits[key] = value
    model = entry.get("model")
    if model is not None and not isinstance(model, str):
        raise CatalogueError(f"{where}: model of '{name}' must be a string")
    unknown = set(entry) - {"name", "instructions", "model", "temperature", "max_output_tokens",
                            "context_tokens"}
    if unknown:
        raise CatalogueError(f"{where}: unknown keys for agent '{name}': {sorted(unknown)}")
    return Agent(name, instructions, model or None, temperature, **limits)


def parse_catalogue(data: object, where: str = "agents.json") -> dict[str, Agent]:
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, list) or not agents:
        raise CatalogueError(f"{where}: expected {{\"agents\": [ ... ]}} with at least one agent")
    catalogue: dict[str, Agent] = {}
    for entry in agents:
        agent = _agent_from(entry, where)
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
