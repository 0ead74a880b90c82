"""Keyset paging shared by every list endpoint: an opaque cursor over the row id."""

from __future__ import annotations

import base64
from typing import Any, TypeVar, cast

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Mapped, Session

from hub.errors import Invalid

MAX_LIMIT = 500

T = TypeVar("T")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "id":
            raise ValueError(kind)
        last_id = int(value)
        if not 0 <= last_id < 2**63:
            raise ValueError(value)
        return last_id
    except (ValueError, UnicodeDecodeError):
        raise Invalid.one("cursor", "is not a cursor this API returned") from None


def page(
    session: Session,
    stmt: Select[T],
    id_column: Mapped[Any],  # e.g. sqlmodel.col(Order.id)
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> tuple[list[T], str | None]:
    """One page of ``stmt`` ordered by ``id_column``, and the cursor for the next (or None)."""
    if cursor:
        last = decode_cursor(cursor)
        stmt = stmt.where(id_column < last if newest_first else id_column > last)
    stmt = stmt.order_by(id_column.desc() if newest_first else id_column)
    limit = max(1, min(limit, MAX_LIMIT))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    key = cast(InstrumentedAttribute[Any], id_column).key  # what col() returns at run time
    return rows[:limit], encode_cursor(getattr(rows[limit - 1], key))
