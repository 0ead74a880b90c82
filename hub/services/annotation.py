"""The viewer's saved measurements and notes of a study (docs/interface.md "The viewer").

One document per study, replaced whole on each save: the viewer holds the
full set anyway, and a whole-document write needs no merge rules. A save may
name the version it started from; a different current version is a 409, so
two vets measuring the same study cannot silently overwrite each other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import Conflict, Invalid
from hub.models import Annotation, utcnow

KINDS = frozenset({"length", "angle", "text", "arrow", "ellipse", "rectangle", "probe"})
MAX_ITEMS = 2000


def of_study(s: Session, study_instance_uid: str) -> Annotation | None:
    stmt = select(Annotation).where(col(Annotation.study_instance_uid) == study_instance_uid)
    return s.scalars(stmt).first()


def save(
    s: Session,
    study_instance_uid: str,
    items: list[dict[str, Any]],
    actor: str,
    base_version: int | None = None,
) -> Annotation:
    """Replace the study's annotations; ``base_version`` (0 for "none yet") guards
    against overwriting a save made meanwhile."""
    _check(items)
    row = of_study(s, study_instance_uid)
    current = row.version if row is not None else 0
    if base_version is not None and base_version != current:
        raise Conflict(
            f"the annotations were saved by someone else meanwhile (version {current}, "
            f"this save started from {base_version}); reload and measure again",
            field="base_version",
        )
    if row is None:
        row = Annotation(
            study_instance_uid=study_instance_uid, document=items, version=1, updated_by=actor
        )
        s.add(row)
    else:
        row.document = items
        row.version = current + 1
        row.updated_by = actor
        row.updated_at = utcnow()
    s.flush()
    return row


def _check(items: list[dict[str, Any]]) -> None:
    if len(items) > MAX_ITEMS:
        raise Invalid.one("annotations", f"at most {MAX_ITEMS} per study")
    for n, item in enumerate(items):
        kind = item.get("type")
        if kind not in KINDS:
            raise Invalid.one(
                f"annotations[{n}].type", f"must be one of {', '.join(sorted(KINDS))}"
            )
