"""Submission times as nbgrader keeps them: naive UTC in gradebook.db, read from
timestamp.txt, LMS downloads and due dates with the same parser nbgrader uses, so both agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def parse_utc(timestamp: str) -> datetime:
    """A submission time as nbgrader stores it: naive UTC (as nbgrader.utils.parse_utc)."""
    import dateutil.parser
    import dateutil.tz

    parts = timestamp.split(" ")
    if len(parts) == 3:  # "2026-11-20 12:00:00.000000 UTC": a zone name or a numeric offset
        zone: Any = parts[2]
        try:
            zone = int(zone)
        except ValueError:
            zone = dateutil.tz.gettz(zone)
        moment = dateutil.parser.parse(" ".join([*parts[:2], "TZ"]), tzinfos={"TZ": zone})
    else:
        moment = dateutil.parser.parse(timestamp)
    if moment.tzinfo is not None:
        moment = (moment - moment.utcoffset()).replace(tzinfo=None)
    return moment
