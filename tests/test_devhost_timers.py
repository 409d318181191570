"""Timer triggers: NCRONTAB/TimeSpan schedules and a timer-started orchestration."""
import time
from datetime import datetime, timezone

import pytest

from devhost.schedules import ScheduleError, parse_schedule

T0 = datetime(2026, 11, 22, 3, 7, 30, tzinfo=timezone.utc)  # a Sunday


@pytest.mark.parametrize("schedule,expected", [
    ("0 */5 * * * *", datetime(2026, 11, 22, 3, 10, 0, tzinfo=timezone.utc)),
    ("*/10 * * * * *", datetime(2026, 11, 22, 3, 7, 40, tzinfo=timezone.utc)),
    ("0 0 9 * * Mon-Fri", datetime(2026, 11, 23, 9, 0, 0, tzinfo=timezone.utc)),
    ("0 30 2 1 Jan *", datetime(2027, 1, 1, 2, 30, 0, tzinfo=timezone.utc)),
    ("0 0 0 13 * Fri", datetime(2027, 8, 13, 0, 0, 0, tzinfo=timezone.utc)),  # both must match
    ("15 4 * * *", datetime(2026, 11, 22, 4, 15, 0, tzinfo=timezone.utc)),  # five fields
    ("0 0 12 * * 7", datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)),  # 7 = Sunday
    ("00:00:10", datetime(2026, 11, 22, 3, 7, 40, tzinfo=timezone.utc)),
])
def test_next_occurrence(schedule, expected):
    assert parse_schedule(schedule).next_after(T0) == expected


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * * *", "0 0 0 31 Feb *", "*/0 * * * * *",
                                 "0 0 0 * Foo *", "00:00:00"])
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ScheduleError):
        parse_schedule(bad).next_after(T0)


def test_a_timer_trigger_starts_orchestrations(devhost_factory):
    host = devhost_factory("timers", env={"TICK_SCHEDULE": "*/1 * * * * *"}).start()
    deadline = time.time() + 15
    done = []
    while time.time() < deadline and len(done) < 3:
        listed = host.request("GET", "/runtime/webhooks/durabletask/instances").json()
        done = [i for i in listed if i["runtimeStatus"] == "Completed"]
        time.sleep(0.2)
    assert len(done) >= 3  # run_on_startup + at least two scheduled ticks
    assert all(i["name"] == "ticked" and i["output"] == {"past_due": False} for i in done)
    assert "tick: timerTrigger (%TICK_SCHEDULE%)" in host.log()


def test_a_bad_schedule_stops_devhost_with_a_readable_message(devhost_factory):
    host = devhost_factory("timers", env={"TICK_SCHEDULE": "every minute"})
    with pytest.raises(RuntimeError) as failed:
        host.start()
    assert "timer function 'tick'" in str(failed.value)
    assert "Traceback" not in str(failed.value)
