"""Days as the clinic means them: local dates turned into UTC intervals for queries.

Timestamps are stored in UTC, and SQLite keeps only the wall time of what it is
given, so a bound must be converted to UTC before it reaches a query.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.models import utcnow


def local_today(tz: ZoneInfo | None, now: datetime | None = None) -> date:
    """Today in ``tz`` (None: the machine's zone)."""
    return (now or utcnow()).astimezone(tz).date()


def day_bounds(day: date, tz: ZoneInfo | None) -> tuple[datetime, datetime]:
    """The local day as a UTC interval [start, end); DST days are 23 or 25 hours."""

    def midnight(d: date) -> datetime:
        local = datetime.combine(d, time.min)
        aware = local.replace(tzinfo=tz) if tz else local.astimezone()
        return aware.astimezone(UTC)

    return midnight(day), midnight(day + timedelta(days=1))
