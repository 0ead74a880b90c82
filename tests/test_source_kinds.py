"""Sources by kind (hub/services/source_kinds.py): a vendor kind's settings are
stored under its key, its secrets sealed, write-only and kept when omitted."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.errors import FieldError
from hub.serve import build_app
from hub.services import sources
from hub.services.deliveries.kinds import DeliveryKind, Registry, Target
from hub.services.source_kinds import SourceKind, SourceKinds
from tests.harness import ADMIN_KEY

KEY = "a passphrase of some length"


def _check(cfg: Mapping[str, Any]) -> list[FieldError]:
    errors = []
    if not cfg.get("base_url"):
        errors.append(FieldError("demo.base_url", "is required"))
    if not cfg.get("password"):
        errors.append(FieldError("demo.password", "is required"))
    return errors


DEMO = SourceKind(
    "demo", "demo", secret_fields=frozenset({"password"}), check=_check, defaults={"page": 10}
)
CALLBACK = DeliveryKind(
    "demo-back", frozenset({"order.completed"}), lambda o: lambda t, c: None, source_kind="demo"
)


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    hub.settings.secret_key = KEY
    registry = Registry([CALLBACK])
    app = build_app(hub, kinds=registry)
    app.state.source_kinds = SourceKinds([DEMO])
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def test_vendor_settings_sealed_and_write_only(api: TestClient, hub: Hub) -> None:
    body = {"kind": "demo", "demo": {"base_url": "https://v.example/", "password": "s3cret"}}
    r = api.put("/api/v1/sources/vendor", json=body | {"results": ["demo-back"]})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["kind"] == "demo"
    assert out["demo"] == {"base_url": "https://v.example/", "page": 10, "password_set": True}
    assert "s3cret" not in r.text and out["status"] == {}
    with hub.db.session() as s:
        row = sources.get(s, "vendor")
        assert "s3cret" not in (row.kind_secrets or "") and "s3cret" not in str(row.kind_settings)
        assert sources.kind_config(row, KEY)["password"] == "s3cret"
        assert Target.of(row).config(KEY) == {
            "base_url": "https://v.example/",
            "page": 10,
            "password": "s3cret",
        }
        sources.set_state(s, "vendor", last_poll="ok", items=3)
    # An update without the secret keeps it; GET shows the adapter's state.
    r = api.put("/api/v1/sources/vendor", json={"kind": "demo", "demo": {"base_url": "https://w/"}})
    assert r.status_code == 200, r.text
    got = api.get("/api/v1/sources/vendor").json()
    assert got["demo"]["password_set"] is True and got["status"] == {"last_poll": "ok", "items": 3}
    with hub.db.session() as s:
        assert sources.kind_config(sources.get(s, "vendor"), KEY)["password"] == "s3cret"


def test_bad_kind_settings_named(api: TestClient, hub: Hub) -> None:
    r = api.put("/api/v1/sources/v", json={"kind": "nope"})
    assert r.status_code == 422 and "unknown source kind 'nope'" in r.text
    r = api.put("/api/v1/sources/v", json={"kind": "demo", "demo": {}, "other": 1})
    fields = {e["field"] for e in r.json()["errors"]}
    assert r.status_code == 422 and fields == {"other"}
    r = api.put("/api/v1/sources/v", json={"kind": "demo", "demo": {}})
    fields = {e["field"] for e in r.json()["errors"]}
    assert r.status_code == 422 and fields == {"demo.base_url", "demo.password"}
    # A vendor's callback kind is not for an hl7 source.
    r = api.put("/api/v1/sources/v", json={"results": ["demo-back"]})
    assert r.status_code == 422 and "for sources of kind 'demo'" in r.text
    hub.settings.secret_key = None
    r = api.put(
        "/api/v1/sources/v", json={"kind": "demo", "demo": {"base_url": "x", "password": "p"}}
    )
    assert r.status_code == 422 and "VETHUB_SECRET_KEY" in r.text
