"""Storage overview for admins (docs/interface.md "Storage overview").

Bytes and counts per modality, site and month from the index, the data
directory's free space from its file system, and the studies past the
retention age (listed, never deleted).
"""

from __future__ import annotations

import shutil
from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.schemas import UtcDateTime
from hub.services import clock
from hub.services import storage_overview as so

router = APIRouter(prefix="/api/v1/storage", tags=["storage"])
ADMIN = require()  # counts of every site's patients, the disk: the people who run the hub


class BucketOut(BaseModel):
    studies: int
    instances: int
    bytes: int


class DiskOut(BaseModel):
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


class StorageOut(BaseModel):
    totals: BucketOut
    by_modality: list[dict[str, Any]]
    by_site: list[dict[str, Any]]
    by_month: list[dict[str, Any]]
    month_of: str = "study_date"
    disk: DiskOut
    retention_days: int | None
    past_retention: int | None


class AgedOut(BaseModel):
    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str
    received_at: UtcDateTime


class RetentionOut(BaseModel):
    retention_days: int | None
    cutoff: date | None
    count: int
    items: list[AgedOut]


@router.get("", response_model=StorageOut)
def storage(request: Request, who: Caller = Depends(ADMIN)) -> StorageOut:
    """Bytes, studies and instances per modality, per site (the matched order's;
    null for studies without an order) and per month of the study date, with the
    data directory's free space and how many studies are past the retention age."""
    hub = request.app.state.hub
    days = hub.settings.retention_days
    with hub.db.read_session() as s:
        seen = so.overview(s)
        past = (
            so.past_retention(s, days, clock.local_today(hub.settings.tz), limit=0)[1]
            if days
            else None
        )
    usage = shutil.disk_usage(hub.settings.data_dir)
    return StorageOut(
        totals=BucketOut(**vars(seen.totals)),
        by_modality=so.as_rows(seen.by_modality, "modality"),
        by_site=so.as_rows(seen.by_site, "site"),
        by_month=so.as_rows(seen.by_month, "month"),
        disk=DiskOut(
            path=str(hub.settings.data_dir),
            total_bytes=usage.total,
            used_bytes=usage.used,
            free_bytes=usage.free,
        ),
        retention_days=days,
        past_retention=past,
    )


@router.get("/retention", response_model=RetentionOut)
def retention(
    request: Request,
    limit: int = Query(500, ge=1, le=5000, description="oldest first, at most this many"),
    who: Caller = Depends(ADMIN),
) -> RetentionOut:
    """Studies taken longer ago than VETHUB_RETENTION_DAYS (by study date, else by
    arrival), oldest first. The hub never deletes them itself."""
    hub = request.app.state.hub
    days = hub.settings.retention_days
    if not days:
        return RetentionOut(retention_days=None, cutoff=None, count=0, items=[])
    with hub.db.read_session() as s:
        cutoff, count, aged = so.past_retention(
            s, days, clock.local_today(hub.settings.tz), limit=limit
        )
    return RetentionOut(
        retention_days=days,
        cutoff=cutoff,
        count=count,
        items=[AgedOut(**vars(a)) for a in aged],
    )
