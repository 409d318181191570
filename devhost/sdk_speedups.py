"""Make the SDK's replay cheaper without changing what it computes.

1. The SDK parses every history timestamp with dateutil's generic parser (~0.3 ms each), so an
orchestrator replay costs O(history) parser runs per episode. devhost writes every timestamp
itself in one fixed ISO-8601 form; this parses that form with datetime.fromisoformat and hands
back the same value dateutil would (same instant, same tzinfo), falling back to dateutil
for anything else.

2. The SDK's TaskOrchestrationExecutor builds a namedtuple *class* in every __init__ (one per
episode, ~0.35 ms each on this machine) for a constant event -> payload table. The table is
built once here, by the SDK's own __init__, and copied into each new executor.
"""
from __future__ import annotations

import importlib
import logging
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
    """History events (every replay) and status documents (every client get_status); the
    executor's constant table."""
    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "dt_parse"):
            module.dt_parse = parse_timestamp
    _share_executor_table()


_TABLE_ATTRIBUTES = {"event_to_SetTaskValuePayload", "task_completion_events"}


def _share_executor_table() -> None:
    from azure.durable_functions.models.TaskOrchestrationExecutor import \
        TaskOrchestrationExecutor as Executor
    if getattr(Executor.__init__, "_devhost_shared", False):
        return
    probe = Executor()
    fresh = object.__new__(Executor)
    fresh.initialize()
    if set(vars(probe)) != set(vars(fresh)) | _TABLE_ATTRIBUTES:
        # this SDK's __init__ does more than build the table and initialize(): leave it be
        logging.getLogger(__name__).info("SDK executor changed shape; not sharing its table")
        return
    table, events = probe.event_to_SetTaskValuePayload, probe.task_completion_events

    def __init__(self):
        self.event_to_SetTaskValuePayload = dict(table)
        self.task_completion_events = set(events)
        self.initialize()

    __init__._devhost_shared = True
    Executor.__init__ = __init__
