"""Daily QC for the people who run the hub (docs/interface.md "Daily QC").

A thin edge over ``hub.services.qc``: the day is read in the hub's zone and
the report is returned as it is, lists and counts.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from hub.api.auth import Caller, require
from hub.schemas import UtcDateTime
from hub.services import clock, qc

router = APIRouter(prefix="/api/v1/qc", tags=["qc"])
# Everyone who runs the clinic's day reads it; machines get the qc.daily event.
# Patient names of studies, delivery errors: beyond "read the worklist", so not frontdesk.
READ = require("tech", "vet")


class QcOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "date": "2026-11-28",
                    "start": "2026-11-27T23:00:00Z",
                    "end": "2026-11-28T23:00:00Z",
                    "generated_at": "2026-11-29T07:00:03Z",
                    "waiting_minutes": 60,
                    "counts": {
                        "missing_studies": 2,
                        "attached_to_check": 1,
                        "waiting_studies": 0,
                        "failed_deliveries": 1,
                        "shares_refused": 0,
                        "shares_expired_unused": 1,
                        "silent_devices": 1,
                    },
                    "missing_studies": [],
                    "attached_to_check": [],
                    "waiting_studies": [],
                    "failed_deliveries": [],
                    "shares_refused": [],
                    "shares_expired_unused": [],
                    "silent_devices": [],
                }
            ]
        }
    )

    date: date
    start: UtcDateTime
    end: UtcDateTime
    generated_at: UtcDateTime
    waiting_minutes: float
    counts: dict[str, int]
    missing_studies: list[qc.MissingOrder]
    attached_to_check: list[qc.AttachedStudy]
    waiting_studies: list[qc.WaitingStudy]
    failed_deliveries: list[qc.FailedDelivery]
    shares_refused: list[qc.ShareProblem]
    shares_expired_unused: list[qc.ShareProblem]
    silent_devices: list[qc.SilentDevice]


@router.get("", response_model=QcOut)
def daily_qc(
    request: Request,
    day: date | None = Query(
        None,
        alias="date",
        description="the day to check, YYYY-MM-DD in the hub's time zone (default today)",
        examples=["2026-11-28"],
    ),
    who: Caller = Depends(READ),
) -> QcOut:
    """Orders whose day passed without images, studies to double-check, studies
    waiting too long, failed deliveries, share links refused or expired unopened,
    and devices silent all day; each list with its count."""
    hub = request.app.state.hub
    settings = hub.settings
    with hub.db.read_session() as s:
        found = qc.report(
            s,
            day or clock.local_today(settings.tz),
            tz=settings.tz,
            waiting_minutes=settings.qc_waiting_minutes,
        )
    return QcOut.model_validate(qc.as_dict(found))
