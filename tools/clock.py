"""What time is it somewhere: the IANA time-zone database through zoneinfo (tzdata on PyPI
supplies it where the OS has none, e.g. Windows)."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.tools import tool


@tool(max_attempts=1)  # a wrong zone name stays wrong: no point retrying
def current_time(timezone: str = "UTC") -> dict:
    """Get the current date and time in an IANA time zone.

    Args:
        timezone: an IANA time zone name such as "Europe/Paris", "America/New_York" or "UTC".
    """
    try:
        zone = ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}: use an IANA name such as "
                         "'Europe/Paris' or 'America/New_York'") from None
    now = datetime.now(dt_timezone.utc).astimezone(zone)
    offset = now.strftime("%z")
    return {"timezone": str(zone), "iso": now.isoformat(timespec="seconds"),
            "date": now.date().isoformat(), "time": now.strftime("%H:%M:%S"),
            "weekday": now.strftime("%A"), "utc_offset": f"{offset[:3]}:{offset[3:]}",
            "abbreviation": now.tzname()}
