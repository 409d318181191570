"""Make the SDK's replay cheaper without changing what it computes.

The SDK parses every history timestamp with dateutil's generic parser (~0.3 ms each), so an
orchestrator replay costs O(history) parser runs per episode. devhost writes every timestamp
itself in one fixed ISO-8601 form; this parses that form with datetime.fromisoformat and hands
back the same value dateutil would (same instant, same tzinfo), falling back to dateutil
for anything else.
"""
from __future__ import annotations

import importlib
import re
from datetime import datetime

from dateutil import parser as dateutil_parser

_OURS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?Z$")
# Whatever tzinfo dateutil gives a 'Z' timestamp here (tzutc, or tzlocal on a UTC machine).
_Z_TZ = dateutil_parser.parse("2000-01-01T00:00:00Z").tzinfo


def parse_timestamp(text, *args, **kwargs):
    match = _OURS.match(text) if isinstance(text, str) and not args and not kwargs else None
    if match is None:
        return dateutil_parser.parse(text, *args, **kwargs)
    fraction = (match.group(2) or "").ljust(6, "0")[:6]
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}").replace(tzinfo=_Z_TZ)


PATCHED_MODULES = ("azure.durable_functions.models.history.HistoryEvent",
                   "azure.durable_functions.models.DurableOrchestrationStatus")


def install() -> None:
    """History events (every replay) and status documents (every client get_status)."""
    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "dt_parse"):
            module.dt_parse = parse_timestamp
