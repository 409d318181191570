"""Runs the app's timer triggers on their NCRONTAB/TimeSpan schedules (UTC), like the host.

Not durable across restarts (Azure keeps schedule status in storage to report past-due runs);
`run_on_startup` is honoured. A failing invocation is logged and the schedule goes on.
"""
from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timezone

from azure.functions.timer import TimerRequest

from .config import resolve_setting
from .engine import Engine
from .errors import ConfigError
from .loader import TimerFunction
from .schedules import Schedule, ScheduleError, parse_schedule

log = logging.getLogger("devhost.timers")


def schedule_of(function: TimerFunction) -> Schedule:
    text = resolve_setting(function.schedule, dict(os.environ))
    try:
        return parse_schedule(text)
    except ScheduleError as exc:
        raise ConfigError(f"timer function '{function.name}': {exc}") from None


class TimerTriggers:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.schedules = {f.name: schedule_of(f) for f in engine.index.timers}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for function in self.engine.index.timers:
            task = asyncio.ensure_future(self._run(function))
            task.add_done_callback(self._report)
            self._tasks.append(task)

    @staticmethod
    def _report(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a timer schedule stopped", exc_info=task.exception())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, function: TimerFunction) -> None:
        schedule = self.schedules[function.name]
        if function.run_on_startup:
            await self.invoke(function, past_due=False)
        while True:
            now = datetime.now(timezone.utc)
            due = schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            late = (datetime.now(timezone.utc) - due).total_seconds()
            await self.invoke(function, past_due=late > 1.0)

    async def invoke(self, function: TimerFunction, past_due: bool) -> None:
        await self.engine.invoker.run_timer(function, TimerRequest(past_due=past_due))
