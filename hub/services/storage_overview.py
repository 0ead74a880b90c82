"""What the archive holds, grouped for the people who plan its disks.

One grouped query over instances joined to their study (and the study's
order for the site) gives bytes and counts per modality, site and month at
once; the three views are folded from it, since modality, site and month are
all properties of the study. The month is the study date's (when the images
were taken), so an imported old archive lands in its own years.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Instance, Order, Study


@dataclass
class Bucket:
    studies: int = 0
    instances: int = 0
    bytes: int = 0

    def add(self, studies: int, instances: int, size: int) -> None:
        self.studies += studies
        self.instances += instances
        self.bytes += size


@dataclass
class Overview:
    totals: Bucket = field(default_factory=Bucket)
    by_modality: dict[str, Bucket] = field(default_factory=dict)
    by_site: dict[str | None, Bucket] = field(default_factory=dict)
    by_month: dict[str | None, Bucket] = field(default_factory=dict)


def overview(s: Session) -> Overview:
    month = func.substr(col(Study.study_date), 1, 6)
    stmt = (
        select(
            col(Study.modality),
            col(Order.site),
            month,
            func.count(func.distinct(col(Study.id))),
            func.count(col(Instance.id)),
            func.coalesce(func.sum(col(Instance.size)), 0),
        )
        .select_from(Instance)
        .join(Study, col(Study.id) == col(Instance.study_id))
        .outerjoin(Order, col(Order.id) == col(Study.order_id))
        .group_by(col(Study.modality), col(Order.site), month)
    )
    out = Overview()
    for modality, site, yyyymm, studies, instances, size in s.execute(stmt):
        counts = (int(studies), int(instances), int(size))
        out.totals.add(*counts)
        out.by_modality.setdefault(modality or "", Bucket()).add(*counts)
        out.by_site.setdefault(site, Bucket()).add(*counts)
        label = f"{yyyymm[:4]}-{yyyymm[4:6]}" if yyyymm and len(yyyymm) == 6 else None
        out.by_month.setdefault(label, Bucket()).add(*counts)
    return out


@dataclass(frozen=True)
class Aged:
    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str
    received_at: datetime


def past_retention(
    s: Session, days: int, today: date, *, limit: int = 500
) -> tuple[date, int, list[Aged]]:
    """(cutoff, how many, the oldest ``limit``): studies taken before ``today - days``.

    A study without a study date counts by when it arrived. Listing only: what
    to delete, and whether the law still wants it kept, is a person's call.
    """
    cutoff = today - timedelta(days=days)
    dated = col(Study.study_date) != ""
    old = or_(
        dated & (col(Study.study_date) < cutoff.strftime("%Y%m%d")),
        ~dated & (col(Study.created_at) < datetime.combine(cutoff, time())),
    )
    total = int(s.execute(select(func.count()).select_from(Study).where(old)).scalar_one())
    rows = s.scalars(
        select(Study).where(old).order_by(col(Study.study_date), col(Study.id)).limit(limit)
    )
    listed = [
        Aged(
            r.study_instance_uid,
            r.patient_id,
            r.patient_name,
            r.study_date,
            r.modality,
            r.created_at,
        )
        for r in rows
    ]
    return cutoff, total, listed


def as_rows(buckets: dict[Any, Bucket], key: str) -> list[dict[str, Any]]:
    """Largest first, as the API lists them."""
    ordered = sorted(buckets.items(), key=lambda kv: (-kv[1].bytes, str(kv[0])))
    return [{key: k, **vars(b)} for k, b in ordered]
