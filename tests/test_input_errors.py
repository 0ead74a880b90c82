"""Bad requests are answered so the sender can fix them: the wrong Content-Type is
named, broken JSON points at its line and column, and every invalid field is listed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.factories import REX, rex
from tests.harness import sqlite_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Parsing happens before the database is touched: one SQLite hub for the module."""
    with sqlite_api(tmp_path_factory.mktemp("input")) as client:
        yield client


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_415_saying_so(
    api: TestClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = api.post("/api/v1/orders", content=json.dumps(REX).encode(), headers=headers)
    assert r.status_code == 415, r.text
    detail = r.json()["detail"]
    assert "Content-Type: application/json" in detail and f"got {content_type or 'none'}" in detail
    placed = api.get("/api/v1/orders", params={"placer_order_number": REX["placer_order_number"]})
    assert placed.json()["items"] == []  # nothing was placed


def test_json_with_a_charset_or_a_json_suffix_is_still_json(api: TestClient) -> None:
    for i, ct in enumerate(["application/json; charset=utf-8", "application/merge-patch+json"]):
        body = json.dumps(rex(placer_order_number=f"CS-{i}", accession_number=None)).encode()
        r = api.post("/api/v1/orders", content=body, headers={"Content-Type": ct})
        assert r.status_code == 201, r.text


def test_broken_json_names_line_and_column(api: TestClient) -> None:
    # The second comma after "P1" is column 26 of line 3.
    broken = '{\n  "placer_order_number": "X1",\n  "patient": {"id": "P1",, "name": "Rex"}\n}'
    r = api.post(
        "/api/v1/orders", content=broken.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["errors"] == [
        {
            "field": "body",
            "message": "malformed JSON at line 3, column 26: "
            "Expecting property name enclosed in double quotes",
        }
    ]
    assert body["detail"].startswith("body: malformed JSON at line 3, column 26")


def test_every_invalid_field_is_reported_at_once(api: TestClient) -> None:
    bad = rex(modality="XYZ", station_ae_title="A" * 17, priority="whenever")
    bad["patient"] = {**REX["patient"], "weight_kg": "heavy", "sex": "sometimes"}
    del bad["placer_order_number"]
    r = api.post("/api/v1/orders", json=bad)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {
        "placer_order_number",
        "modality",
        "station_ae_title",
        "priority",
        "patient.weight_kg",
        "patient.sex",
    }
    for field in fields:
        assert field in r.json()["detail"]
