"""The host ↔ worker wire: framed messages on one duplex stream per worker.

A frame is two 4-byte big-endian lengths, a small JSON header and an optional raw UTF-8 body.
The body carries the big text of a call (an activity input, an orchestration context document,
an entity batch, the SDK's answer) as it is: those are JSON texts already, and escaping them
into a JSON string would cost a copy, an escape and an unescape of every byte each way.
Requests carry an `id`; the worker answers each with the same `id`, in whatever order they
finish, so many invocations are in flight on one stream at once.
"""
from __future__ import annotations

import asyncio
import json
import struct

_LENGTHS = struct.Struct(">II")
_NO_BODY = 0xFFFFFFFF


def encode(message: dict, body: str | None = None) -> bytes:
    header = json.dumps(message, separators=(",", ":")).encode()
    if body is None:
        return _LENGTHS.pack(len(header), _NO_BODY) + header
    data = body.encode()
    return b"".join((_LENGTHS.pack(len(header), len(data)), header, data))


async def read(reader: asyncio.StreamReader) -> tuple[dict, str | None] | None:
    """The next (header, body), or None at end of stream (the other side is gone)."""
    try:
        header_size, body_size = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
        header = json.loads(await reader.readexactly(header_size))
        if body_size == _NO_BODY:
            return header, None
        return header, (await reader.readexactly(body_size)).decode()
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
