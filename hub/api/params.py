"""Integer parameters of the REST API, bounded once.

A row id beyond what the databases store (SQLite and PostgreSQL integers are
64-bit) would otherwise reach the driver and fail there as a 500; bounded
here, it is a 422 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="row id")]
RowIdFilter = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
