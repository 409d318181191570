"""The host ↔ worker wire: length-prefixed JSON frames on one duplex stream per worker.

Each frame is a 4-byte big-endian length and a UTF-8 JSON object. Requests carry an `id`;
the worker answers each with the same `id`, in whatever order they finish, so many
invocations are in flight on one stream at once.
"""
from __future__ import annotations

import asyncio
import json
import struct

_LENGTH = struct.Struct(">I")


def encode(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> dict | None:
    """The next frame, or None at end of stream (the other side is gone)."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        return json.loads(await reader.readexactly(_LENGTH.unpack(header)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
