"""Today (``/console``, every staff role): the day's worklist per site and station
with each order's status, what is booked but not started, studies received today."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub.console.web import is_htmx, person, render
from hub.context import Hub
from hub.models import Order, OrderStatus, Study
from hub.services import orders, studies

router = APIRouter()
LATE_AFTER = timedelta(minutes=15)  # a booked order not started this long after its time


@dataclass
class Station:
    site: str
    station: str
    orders: list[Order] = field(default_factory=list)


@dataclass
class Day:
    day: date
    stations: list[Station]
    not_started: list[Order]
    received: list[Study]
    counts: dict[str, int]
    late_before: datetime  # naive local time, as orders' scheduled_start


def today_in(hub: Hub) -> tuple[date, datetime]:
    """Today's date in the hub's zone, and its midnight as a UTC instant."""
    now = datetime.now(hub.settings.tz)
    midnight = datetime.combine(now.date(), time(), tzinfo=now.tzinfo)
    return now.date(), midnight.astimezone(UTC)


def load_day(hub: Hub) -> Day:
    day, since = today_in(hub)
    with hub.db.read_session() as s:
        sheet = orders.day_sheet(s, day)
        received = studies.received_since(s, since)
    stations = [
        Station(site or "", station or "", list(rows))
        for (site, station), rows in groupby(sheet, key=lambda o: (o.site, o.station_ae_title))
    ]
    counts: dict[str, int] = {}
    for o in sheet:
        counts[o.status] = counts.get(o.status, 0) + 1
    not_started = [o for o in sheet if o.status == OrderStatus.SCHEDULED]
    late_before = datetime.now(hub.settings.tz).replace(tzinfo=None) - LATE_AFTER
    return Day(day, stations, not_started, received, counts, late_before)


@router.get("/console")
async def today(request: Request) -> Response:
    who = await person(request, "today")
    if isinstance(who, Response):
        return who
    day = await run_in_threadpool(load_day, request.app.state.hub)
    template = "today_live.html" if is_htmx(request) else "today.html"
    return render(request, who, template, {"d": day}, current="today")
