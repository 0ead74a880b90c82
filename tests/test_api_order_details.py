"""Order details for the worklist (issue #12): alerts, microchip, other ids and reason
over REST: placed, read back, patched, refused when malformed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import REX, rex

DETAILED = rex(
    reason="lameness left fore",
    patient={
        **REX["patient"],
        "alerts": "caution: bites",  # one text is a list of one
        "microchip": "276098106123456",
        "other_ids": [{"id": "T-55", "issuer": "SKG tattoo"}],
    },
)


def test_details_round_trip_and_patch(client: TestClient) -> None:
    placed = client.post("/api/v1/orders", json=DETAILED)
    assert placed.status_code == 201, placed.text
    out = placed.json()
    assert out["reason"] == "lameness left fore"
    patient = out["patient"]
    assert patient["alerts"] == ["caution: bites"]
    assert patient["microchip"] == "276098106123456"
    assert patient["other_ids"] == [{"id": "T-55", "issuer": "SKG tattoo", "type": "TEXT"}]
    # the same body again is the same order
    again = client.post("/api/v1/orders", json=DETAILED)
    assert (again.status_code, again.json()["id"]) == (200, out["id"])

    url = f"/api/v1/orders/{out['id']}"
    patch = {"patient": {"alerts": ["caution: bites", "epileptic"], "microchip": None}}
    changed = client.patch(url, json=patch)
    assert changed.status_code == 200, changed.text
    assert changed.json()["patient"]["alerts"] == ["caution: bites", "epileptic"]
    assert changed.json()["patient"]["microchip"] is None
    got = client.get(url).json()
    assert got["patient"]["other_ids"] == patient["other_ids"]
    assert got["reason"] == "lameness left fore"


def test_orders_without_details_read_as_empty(client: TestClient) -> None:
    out = client.post("/api/v1/orders", json=REX).json()
    assert out["reason"] is None
    assert (out["patient"]["alerts"], out["patient"]["microchip"]) == ([], None)
    assert out["patient"]["other_ids"] == []


def test_malformed_details_are_refused_by_field(client: TestClient) -> None:
    bad = rex(
        patient={
            **REX["patient"],
            "alerts": ["x" * 65],
            "other_ids": [{"id": "T-1", "type": "MAGIC"}],
        },
        reason="a\\b",
    )
    r = client.post("/api/v1/orders", json=bad)
    assert r.status_code == 422
    text = r.text
    for field in ("patient.alerts", "patient.other_ids", "reason"):
        assert field in text, text
