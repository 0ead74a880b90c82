"""viewer_url, share links and staff sign-in (docs/interface.md "Links"), audited."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from hub.context import Hub
from hub.models import Share, utcnow
from tests import study_factory as sf
from tests.harness import key_for
from tests.study_factory import place

PNG = b"\x89PNG\r\n\x1a\n"


def _store(hub: Hub, order: dict, n: int = 2) -> tuple[str, list[str]]:
    sops = []
    series = None
    for _ in range(n):
        ds = sf.instance(
            accession=order["accession_number"],
            study_uid=order["study_instance_uid"],
            series_uid=series,
            rows=32,
        )
        series = ds.SeriesInstanceUID
        sf.store(hub, ds)
        sops.append(ds.SOPInstanceUID)
    return order["study_instance_uid"], sops


def _anon(client: TestClient) -> dict[str, str]:
    return {"Authorization": ""}


def test_viewer_needs_staff_and_shows_the_study(hub: Hub, client: TestClient) -> None:
    uid, sops = _store(hub, place(client))
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
    assert r.text.count("preview.png") == len(sops)

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


def test_browser_signs_in_with_a_staff_key(hub: Hub, client: TestClient) -> None:
    uid, _ = _store(hub, place(client), n=1)
    client.headers.pop("Authorization")
    vet_key = key_for(hub, "tech")
    bad = client.post(
        "/viewer/sign-in",
        content=f"key={key_for(hub, 'integration')}&next=/viewer/studies/{uid}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 401
    ok = client.post(
        "/viewer/sign-in",
        content=f"key={vet_key}&next=/viewer/studies/{uid}",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == f"/viewer/studies/{uid}"
    assert "httponly" in ok.headers["set-cookie"].lower()
    assert client.get(f"/viewer/studies/{uid}").status_code == 200  # the cookie carries it
    off_site = client.post(
        "/viewer/sign-in",
        content=f"key={vet_key}&next=https://evil.example/",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert off_site.headers["location"] == "/viewer/"
    client.post("/viewer/sign-out")
    client.cookies.clear()
    assert client.get(f"/viewer/studies/{uid}").status_code == 401


def test_share_links_expire_and_can_be_revoked(hub: Hub, client: TestClient) -> None:
    uid, sops = _store(hub, place(client), n=1)
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
        == 404
    )

    gone = client.delete(f"/api/v1/studies/{uid}/shares/{share['id']}", headers=vet)
    assert gone.status_code == 204
    assert client.get(f"/shared/{token}", headers=_anon(client)).status_code == 404
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
    uid, _ = _store(hub, place(client), n=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    pages = [
        client.get(f"/viewer/studies/{uid}", headers=vet),  # patient data
        client.get(f"/viewer/studies/{uid}", headers=_anon(client)),  # sign-in form
        client.get("/viewer/", headers=vet),
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


def test_sign_in_refuses_another_site(hub: Hub, client: TestClient) -> None:
    client.headers.pop("Authorization")
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = f"key={key_for(hub, 'vet')}&next=/viewer/"
    refused = [
        {"origin": "https://evil.example"},
        {"referer": "https://evil.example/page"},
        {"sec-fetch-site": "cross-site", "origin": "null"},
        {"sec-fetch-site": "same-site", "origin": "https://other.clinic.example"},
        {"origin": "http://testserver.evil.example"},
    ]
    for headers in refused:
        r = client.post(
            "/viewer/sign-in", content=body, headers={**form, **headers}, follow_redirects=False
        )
        assert r.status_code == 403, headers
        assert "another site" in r.text and "set-cookie" not in r.headers
    accepted = [
        {},  # not a browser
        {"origin": "http://testserver"},
        {"referer": "http://testserver/viewer/studies/1.2"},
        {"origin": hub.settings.public_url},
        {"sec-fetch-site": "same-origin", "origin": "null"},  # our page sends no referrer
    ]
    for headers in accepted:
        r = client.post(
            "/viewer/sign-in", content=body, headers={**form, **headers}, follow_redirects=False
        )
        assert r.status_code == 303, headers
