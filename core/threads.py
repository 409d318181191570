"""Thread ids: `@dafx-<agent lower>@<uuid4>`, the seed's form, which is also the scheduler id
of the agent's thread entity (name `dafx-<agent>`, key = the uuid)."""
from __future__ import annotations

import re
import uuid

_FULL = re.compile(r"^@dafx-([a-z][a-z0-9_-]{0,63})@([0-9a-fA-F-]{32,36})$")


class ThreadIdError(ValueError):
    """The id is not a thread id at all (400), or names another agent (404)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def new_thread_key() -> str:
    return str(uuid.uuid4())


def format_thread_id(agent_name: str, key: str) -> str:
    return f"@dafx-{agent_name.lower()}@{key}"


def _canonical_uuid(text: str) -> str | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return str(value) if len(text) in (32, 36) else None


def parse_thread_id(text: str, agent_name: str) -> str:
    """The thread's uuid key for this agent, from the full id or a bare uuid."""
    candidate = text.strip()
    key = _canonical_uuid(candidate)
    if key:
        return key
    match = _FULL.match(candidate.lower() if candidate.startswith("@dafx-") else candidate)
    if not match or not _canonical_uuid(match.group(2)):
        raise ThreadIdError(f"thread_id {text[:100]!r} is malformed: expected "
                            f"'@dafx-{agent_name.lower()}@<uuid>' or a bare uuid", 400)
    if match.group(1) != agent_name.lower():
        raise ThreadIdError(f"thread {text[:100]!r} does not belong to agent '{agent_name}'", 404)
    return _canonical_uuid(match.group(2))
