"""viewer_url, share links and the viewer's sign-in (docs/interface.md "Links"), audited."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hub.context import Hub
from hub.models import AuditEvent, Share, utcnow
from hub.services import users
from tests import study_factory as sf
from tests.harness import key_for
from tests.study_factory import place

PNG = b"\x89PNG\r\n\x1a\n"


def _anon(client: TestClient) -> dict[str, str]:
    return {"Authorization": ""}


def test_viewer_needs_staff_and_shows_the_study(hub: Hub, client: TestClient) -> None:
    uid, sops = sf.stored_series(hub, place(client))
    page = f"/viewer/studies/{uid}"
    anon = client.get(page, headers=_anon(client))
    assert anon.status_code == 401 and "Sign in" in anon.text
    assert "Rex" not in anon.text

    desk = {"Authorization": f"Bearer {key_for(hub, 'frontdesk')}"}
    assert client.get(page, headers=desk).status_code == 403

    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    r = client.get(page, headers=vet)
    assert r.status_code == 200
    assert "Rex" in r.text and "Smith" in r.text and "A1001" in r.text
    assert f"/viewer/app/viewer?StudyInstanceUIDs={uid}" in r.text  # OHIF, framed

    img = client.get(f"{page}/instances/{sops[0]}/preview.png", headers=vet)
    assert img.status_code == 200 and img.content.startswith(PNG)
    assert (
        client.get(f"{page}/instances/{sops[0]}/preview.png", headers=_anon(client)).status_code
        == 401
    )

    zipped = client.get(f"{page}/dicom.zip", headers=vet)
    assert zipped.status_code == 200 and zipped.content[:2] == b"PK"

    actions = [a["action"] for a in client.get("/api/v1/audit").json()["items"]]
    assert "view" in actions and "export" in actions
    assert client.get("/viewer/studies/1.2.3.4", headers=vet).status_code == 404


def test_viewer_sends_a_browser_to_sign_in_and_opens_for_its_session(
    hub: Hub, client: TestClient
) -> None:
    uid, _ = sf.stored_series(hub, place(client), n=1)
    client.headers.pop("Authorization")
    page = f"/viewer/studies/{uid}"
    html = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    sent = client.get(page, headers=html, follow_redirects=False)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/sign-in?next={page}"
    api = client.get(page, headers={"accept": "application/json"})
    assert api.status_code == 401 and "Rex" not in api.text

    with hub.db.session() as s:
        users.create(s, "desk", "frontdesk", "front desk password", actor="test")
        users.create(s, "tina", "tech", "tech password 1", actor="test")
    form = {"username": "desk", "password": "front desk password", "next": page}
    assert client.post("/sign-in", data=form, follow_redirects=False).status_code == 303
    assert client.get(page, headers=html).status_code == 403  # frontdesk may not open studies

    client.cookies.clear()
    form = {"username": "tina", "password": "tech password 1", "next": page}
    ok = client.post("/sign-in", data=form, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == page
    opened = client.get(page, headers=html)
    assert opened.status_code == 200 and "Rex" in opened.text
    assert client.get(f"{page}/dicom.zip").status_code == 200
    audit = [e for e in _audit(hub) if e.action == "view"]
    assert audit[-1].actor.startswith("user:") and audit[-1].actor.endswith(":tina")

    client.post(
        "/sign-out", data={"csrf_token": users.csrf_token(client.cookies["vethub_session"])}
    )
    assert client.get(page, headers=html, follow_redirects=False).status_code == 303


def _audit(hub: Hub) -> list[AuditEvent]:
    with hub.db.read_session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_share_links_expire_and_can_be_revoked(hub: Hub, client: TestClient) -> None:
    uid, sops = sf.stored_series(hub, place(client), n=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    desk = {"Authorization": f"Bearer {key_for(hub, 'frontdesk')}"}
    assert client.post(f"/api/v1/studies/{uid}/shares", json={}, headers=desk).status_code == 403
    assert (
        client.post(
            f"/api/v1/studies/{uid}/shares", json={"expires_in_hours": 0}, headers=vet
        ).status_code
        == 422
    )
    assert client.post("/api/v1/studies/9.9.9/shares", json={}, headers=vet).status_code == 404
    r = client.post(f"/api/v1/studies/{uid}/shares", json={"expires_in_hours": 0.5}, headers=vet)
    assert r.status_code == 201, r.text
    share = r.json()
    token = share["url"].rsplit("/", 1)[-1]
    assert len(token) >= 40  # 256 random bits
    assert share["url"].startswith("http://127.0.0.1:8080/shared/")

    opened = client.get(f"/shared/{token}", headers=_anon(client))
    assert opened.status_code == 200 and "Rex" in opened.text
    preview = client.get(f"/shared/{token}/instances/{sops[0]}/preview.png", headers=_anon(client))
    assert preview.content.startswith(PNG)
    assert client.get(f"/shared/{token}x", headers=_anon(client)).status_code == 404

    # A second link, expired by the clock, stops working.
    other = client.post(f"/api/v1/studies/{uid}/shares", json={}, headers=vet).json()
    with hub.db.session() as s:
        s.execute(
            update(Share)
            .where(Share.id == other["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (
        client.get(
            other["url"].replace("http://127.0.0.1:8080", ""), headers=_anon(client)
        ).status_code
        == 410
    )

    gone = client.delete(f"/api/v1/studies/{uid}/shares/{share['id']}", headers=vet)
    assert gone.status_code == 204
    assert client.get(f"/shared/{token}", headers=_anon(client)).status_code == 410
    listed = client.get(f"/api/v1/studies/{uid}/shares", headers=vet).json()
    assert [s["active"] for s in listed] == [False, False]

    audit = client.get("/api/v1/audit", params={"target_id": uid}).json()["items"]
    actions = {a["action"] for a in audit}
    assert {"share", "share.revoke", "view"} <= actions
    assert any(a["actor"].startswith("share:") for a in audit)


def _inline_style_hash(page: str) -> str:
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    return "sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()


def test_every_page_refuses_framing_sniffing_and_caching(hub: Hub, client: TestClient) -> None:
    uid, _ = sf.stored_series(hub, place(client), n=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    pages = [
        client.get(f"/viewer/studies/{uid}", headers=vet),  # patient data
        client.get(f"/viewer/studies/{uid}", headers=_anon(client)),  # 401, a sign-in link
        client.get("/sign-in", headers=_anon(client)),
        client.get("/shared/no-such-token"),
    ]
    for page in pages:
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert f"style-src '{_inline_style_hash(page.text)}'" in csp  # the style still applies
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
    zipped = client.get(f"/viewer/studies/{uid}/dicom.zip", headers=vet)
    assert zipped.status_code == 200 and zipped.headers["cache-control"] == "no-store"
