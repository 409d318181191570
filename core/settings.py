"""App settings read from the environment, parsed in one place: a malformed value falls back
to the default (and says so once in the log) instead of failing a request."""
from __future__ import annotations

import logging
import os

_warned: set[str] = set()


def number(name: str, default: float | None = None, minimum: float = 0.0) -> float | None:
    """A non-negative number setting; unset or blank gives `default`."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if value < minimum or value != value:
            raise ValueError
        return value
    except ValueError:
        if name not in _warned:
            _warned.add(name)
            logging.getLogger(__name__).warning("setting %s=%r is not a number >= %s; using %s",
                                                name, raw, minimum, default)
        return default


def integer(name: str, default: int, minimum: int = 0) -> int:
    value = number(name, float(default), float(minimum))
    return int(value) if value is not None else default
