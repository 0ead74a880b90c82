"""The viewer's saved measurements and notes of a study (docs/interface.md "The viewer").

One document per study, replaced whole on each save: the viewer holds the
full set anyway, and a whole-document write needs no merge rules. A save may
name the version it started from; a different current version is a 409, so
two vets measuring the same study cannot silently overwrite each other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
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
        raise _conflict(current, base_version)
    if row is None:
        row = Annotation(
            study_instance_uid=study_instance_uid, document=items, version=1, updated_by=actor
        )
        s.add(row)
        try:
            s.flush()
        except IntegrityError:  # another first save of this study won the race
            raise _conflict(1, 0) from None
        return row
    # Only if no save committed meanwhile: a concurrent one leaves this UPDATE
    # matching no row (the version moved on), which is the same conflict.
    done = s.execute(
        update(Annotation)
        .where(col(Annotation.id) == row.id, col(Annotation.version) == current)
        .values(document=items, version=current + 1, updated_by=actor, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not isinstance(done, CursorResult) or done.rowcount != 1:
        raise _conflict(current + 1, current)
    s.refresh(row)
    return row


def _conflict(current: int, base_version: int) -> Conflict:
    return Conflict(
        f"the annotations were saved by someone else meanwhile (version {current}, "
        f"this save started from {base_version}); reload and measure again",
        field="base_version",
    )


def _check(items: list[dict[str, Any]]) -> None:
    if len(items) > MAX_ITEMS:
        raise Invalid.one("annotations", f"at most {MAX_ITEMS} per study")
    for n, item in enumerate(items):
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in KINDS:
            raise Invalid.one(
                f"annotations[{n}].type", f"must be one of {', '.join(sorted(KINDS))}"
            )
