"""The OpenAPI at /docs is a usable contract: its request examples are accepted as they stand."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_order_example_in_the_openapi_places_an_order(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["OrderIn"]
    [example] = schema["examples"]
    placed = client.post("/api/v1/orders", json=example)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["patient"]["name"] == "Rex"
    assert order["modality"] == "DX"  # filled in from the procedure code


def test_every_documented_route_is_tagged_and_described(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    untagged = [
        f"{method.upper()} {path}"
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if path.startswith("/api/") and not op.get("tags")
    ]
    assert untagged == []
