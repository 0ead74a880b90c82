"""Every instant in an API answer is ISO 8601 in UTC with an explicit offset, on SQLite
(which hands timestamps back naive) as on PostgreSQL (aware)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.models import Delivery, Study
from tests.factories import REX

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00")
LOOKS_LIKE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T")
# The clinic's wall-clock time the order was booked for, as the PIMS gave it
# (docs/interface.md: naive = the hub's local time zone), not an instant.
WALL_CLOCK = {"scheduled_start"}


def timestamps(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from timestamps(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from timestamps(v, key)
    elif isinstance(value, str) and LOOKS_LIKE_TIME.match(value) and key not in WALL_CLOCK:
        yield key, value


def test_every_instant_is_utc_with_an_offset(hub: Hub, client: TestClient) -> None:
    with hub.db.session() as s:
        s.add(Study(study_instance_uid="1.2.826.1", unmatched_reason="no_match"))
        s.add(
            Delivery(
                uuid=str(uuid.uuid4()),
                source="pims-main",
                kind="webhook",
                event_kind="order.completed",
                outbox_event_id=1,
                delivered_at=datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
            )
        )
    answers = [
        client.post("/api/v1/orders", json=REX),
        client.put("/api/v1/modalities/DX_ROOM1", json={"modality": "DX"}),
        client.put("/api/v1/sources/pims-main", json={}),
        client.get("/api/v1/orders"),
        client.get("/api/v1/modalities"),
        client.get("/api/v1/keys"),
        client.get("/api/v1/audit"),
        client.get("/api/v1/deliveries"),
        client.get("/api/v1/studies", params={"matched": "false"}),
    ]
    seen: dict[str, str] = {}
    for r in answers:
        assert r.status_code in (200, 201), (r.request.url, r.text)
        for key, value in timestamps(r.json()):
            assert INSTANT.fullmatch(value), f"{r.request.url.path}: {key}={value!r}"
            seen[key] = value
    # Enough kinds of timestamp came by for the check to mean something.
    assert {"created_at", "updated_at", "at", "delivered_at", "last_received_at"} <= set(seen)
    assert seen["delivered_at"] == "2026-11-01T08:00:00+00:00"
