"""Integers a client sends in a path or query are bounded: a 422 naming it, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.services.paging import encode_cursor

HUGE = 10**30


def _integer_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    options = schema.get("anyOf", [schema])
    return [s for s in options if s.get("type") == "integer"]


def test_every_integer_parameter_of_the_api_has_a_maximum(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    seen, unbounded = 0, []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for param in op.get("parameters", []):
                for schema in _integer_schemas(param["schema"]):
                    seen += 1
                    if "maximum" not in schema:
                        unbounded.append(f"{method.upper()} {path} {param['name']}")
    assert seen >= 10  # the walk found the id and limit parameters
    assert unbounded == []


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (f"/api/v1/orders/{HUGE}", "order_id"),
        (f"/api/v1/messages/{HUGE}", "message_id"),
        (f"/api/v1/deliveries/{HUGE}", "delivery_id"),
        (f"/api/v1/messages?order_id={HUGE}", "order_id"),
        (f"/api/v1/deliveries?order_id={HUGE}", "order_id"),
        ("/api/v1/orders/-1", "order_id"),
    ],
)
def test_out_of_range_ids_are_422_naming_the_parameter(
    client: TestClient, url: str, name: str
) -> None:
    answer = client.get(url)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == name


def test_a_cursor_beyond_any_row_id_is_refused(client: TestClient) -> None:
    answer = client.get("/api/v1/orders", params={"cursor": encode_cursor(HUGE)})
    assert answer.status_code == 422
    assert "cursor" in answer.text
