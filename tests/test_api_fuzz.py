"""Nothing a client sends may produce a 500: random bodies and parameters."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["placer_order_number", "accession_number", "patient", "owner", "procedure", "modality"]
order_like = st.fixed_dictionaries(
    {},
    optional={
        **{f: json_values for f in FIELDS},
        "patient": st.fixed_dictionaries(
            {"id": json_values, "name": json_values},
            optional={"species": json_values, "birth_date": json_values, "weight_kg": json_values},
        ),
        "scheduled_start": json_values,
    },
)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=order_like)
def test_random_order_bodies_never_500(client: TestClient, body: dict) -> None:
    r = client.post("/api/v1/orders", json=body)
    assert r.status_code in (200, 201, 409, 422), r.text
    assert "detail" in r.json() or r.status_code in (200, 201)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_500(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/v1/orders", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (200, 201, 409, 422), r.text


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["status", "date", "limit", "cursor", "modality", "patient_id"]),
        st.text(max_size=30),
    ),
    patch=json_values,
)
def test_random_queries_and_patches_never_500(
    client: TestClient, params: dict, patch: object
) -> None:
    assert client.get("/api/v1/orders", params=params).status_code in (200, 422)
    r = client.patch(
        "/api/v1/orders/1",
        content=json.dumps(patch),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code in (200, 404, 409, 422), r.text
