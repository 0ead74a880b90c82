"""The message log's ``date`` filter is a day in the hub's zone, on both databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from hub.context import Hub
from hub.models import InboundMessage
from hub.services import messages

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def machine_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's own zone differs from the hub's and from UTC (as on a clinic PC)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_date_filter_is_the_local_day_not_the_utc_day(hub: Hub, machine_in_new_york: None) -> None:
    at = {
        "late_utc_next_local_day": datetime(2026, 11, 27, 23, 30, tzinfo=UTC),  # 00:30 Berlin
        "early_local_day": datetime(2026, 11, 28, 0, 10, tzinfo=UTC),
        "previous_local_day": datetime(2026, 11, 27, 22, 50, tzinfo=UTC),  # 23:50 Berlin
    }
    with hub.db.session() as s:
        for control_id, when in at.items():
            s.add(
                InboundMessage(
                    received_at=when, control_id=control_id, outcome="AA", raw="MSH|", ack="MSA"
                )
            )
    with hub.db.read_session() as s:
        rows, _ = messages.find(s, messages.MessageFilter(date=date(2026, 11, 28)), tz=BERLIN)
    assert {r.control_id for r in rows} == {"late_utc_next_local_day", "early_local_day"}
