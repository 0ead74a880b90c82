"""The diagnostic viewer as served (docs/viewer.md): the banner page, OHIF's pages
and config per scope, its files, the policy they run under, and who may open them.
The viewer in a real browser: tests/test_browser_viewer.py."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api import ohif, ohif_assets
from hub.context import Hub
from hub.services import users
from tests import study_factory as sf
from tests.factories import rex
from tests.harness import key_for

HTML = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(autouse=True)
def _ohif_installed(request: pytest.FixtureRequest) -> None:
    if "hub" in request.fixturenames and not ohif_assets.installed():
        pytest.fail("the OHIF build is not installed: run `make viewer-assets`", pytrace=False)


def _study(client: TestClient, hub: Hub, study_date: str = "20261127", **order: object) -> str:
    placed = client.post("/api/v1/orders", json=rex(**order))
    assert placed.status_code == 201, placed.text
    body = placed.json()
    ds = sf.instance(
        accession=body["accession_number"],
        study_uid=body["study_instance_uid"],
        study_date=study_date,
        patient_id=body["patient"]["id"],
        rows=16,
    )
    sf.store(hub, ds)
    return str(body["study_instance_uid"])


def test_the_page_has_the_banner_the_priors_and_ohif(hub: Hub, client: TestClient) -> None:
    uid = _study(client, hub)
    # Rex's earlier study from the same practice system, and two that are not his:
    # another system's patient P-555, and another animal of this system.
    prior = _study(client, hub, "20250310", placer_order_number="ORD-900", accession_number="A0900")
    other_system = _study(
        client, hub, source="pims-b", placer_order_number="B-1", accession_number="B0001"
    )
    other_animal = rex(placer_order_number="ORD-7", accession_number="A0007")
    other_animal["patient"] = dict(other_animal["patient"], id="P-556", name="Bella")
    client.post("/api/v1/orders", json=other_animal)

    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    page = client.get(f"/viewer/studies/{uid}", headers=vet)
    assert page.status_code == 200
    text = page.text
    for shown in ("Rex", "Labrador Retriever", "male, neutered", "7 y 7 mo", "31.5 kg"):
        assert shown in text
    for shown in ("Anna Smith", "A1001", "2026-11-27", "Jane Doe"):
        assert shown in text
    assert f'src="/viewer/app/viewer?StudyInstanceUIDs={uid}"' in text
    assert f"/viewer/studies/{uid}/dicom.zip" in text
    assert "Priors (1)" in text and "2025-03-10" in text
    assert f"?compare={prior}" in text and other_system not in text
    csp = page.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-src 'self'" in csp
    assert page.headers["cache-control"] == "no-store"

    side = client.get(f"/viewer/studies/{uid}?compare={prior}", headers=vet)
    assert side.status_code == 200
    assert f"StudyInstanceUIDs={uid}%2C{prior}&amp;hangingProtocolId=%40ohif%2FhpCompare" in (
        side.text
    )
    # The side-by-side view opens this animal's studies only.
    refused = client.get(f"/viewer/studies/{uid}?compare={other_system}", headers=vet)
    assert refused.status_code == 404 and "not a prior" in refused.json()["detail"]

    audit = client.get("/api/v1/audit", params={"action": "view"}).json()["items"]
    viewed = {(a["target_id"], (a["detail"] or {}).get("via")) for a in audit}
    assert (uid, "viewer") in viewed and (prior, "viewer") in viewed


def test_an_unmatched_study_shows_what_the_device_sent(hub: Hub, client: TestClient) -> None:
    # Keyed in at the unit, no order: priors are the other unmatched studies of the
    # same patient ID as sent, not another patient's.
    sent = [
        sf.instance(patient_id=pid, patient_name="Doe^Rex", study_date=day, rows=8)
        for pid, day in (("U-1", "20261127"), ("U-1", "20260101"), ("U-2", "20260102"))
    ]
    for ds in sent:
        sf.store(hub, ds)
    uid, prior, other = (str(ds.StudyInstanceUID) for ds in sent)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    page = client.get(f"/viewer/studies/{uid}", headers=vet).text
    assert "Doe Rex" in page and "not matched to an order" in page
    assert "Priors (1)" in page and f"?compare={prior}" in page and other not in page


def test_ohif_opens_for_staff_and_referral_shares_only(hub: Hub, client: TestClient) -> None:
    uid = _study(client, hub)
    client.headers.pop("Authorization")
    app = f"/viewer/app/viewer?StudyInstanceUIDs={uid}"
    sent = client.get(app, headers=HTML, follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"].startswith("/sign-in?next=")
    assert client.get(app).status_code == 401
    assert client.get("/viewer/app/app-config.js").status_code == 401
    desk = {"Authorization": f"Bearer {key_for(hub, 'frontdesk')}"}
    assert client.get(app, headers=desk).status_code == 403

    with hub.db.session() as s:
        users.create(s, "vera", "vet", "vet password 12", actor="test")
    form = {"username": "vera", "password": "vet password 12", "next": app}
    assert client.post("/sign-in", data=form, follow_redirects=False).status_code == 303
    index = client.get(app, headers=HTML)
    assert index.status_code == 200
    doc = index.text
    assert 'window.PUBLIC_URL="/viewer/ohif/"' in doc
    assert 'src="/viewer/app/app-config.js"' in doc and "init-service-worker" not in doc
    assert '<meta name="vethub-annotate" content="1">' in doc
    csrf = users.csrf_token(client.cookies["vethub_session"])
    assert f'<meta name="vethub-csrf" content="{csrf}">' in doc
    assert not re.search(r'(src|href)="/(?!viewer/)', doc)  # nothing left at the root
    # The chunks OHIF loads before its first image download while its bundle compiles.
    preloaded = re.findall(r'<link rel="preload" href="/viewer/ohif/([^"]+)" as="(\w+)">', doc)
    assert {name.split(".")[0] for name, _ in preloaded} == set(ohif_assets.FIRST_CHUNKS)
    assert {kind for _, kind in preloaded} == {"script", "style"}

    csp = index.headers["content-security-policy"]
    assert "'wasm-unsafe-eval'" in csp and "worker-src 'self' blob:" in csp
    assert "http:" not in csp and "https:" not in csp and "'unsafe-eval'" not in csp
    for script in re.findall(r"<script>(.*?)</script>", doc, re.S):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert index.headers["x-frame-options"] == "SAMEORIGIN"
    assert index.headers["cache-control"] == "no-store"

    config = client.get("/viewer/app/app-config.js")
    assert config.status_code == 200 and config.headers["cache-control"] == "no-store"
    assert '"routerBasename": "/viewer/app"' in config.text
    assert '"qidoRoot": "/dicomweb"' in config.text and '"wadoRoot": "/dicomweb"' in config.text
    assert '"imageRendering": "wadors"' in config.text and '"option": "never"' in config.text

    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    shares = {}
    for mode in ("referral", "owner"):
        made = client.post(f"/api/v1/studies/{uid}/shares", json={"mode": mode}, headers=vet)
        assert made.status_code == 201, made.text
        shares[mode] = made.json()["url"].rsplit("/", 1)[-1]
    client.cookies.clear()
    token = shares["referral"]
    shared = client.get(f"/shared/{token}/app/viewer?StudyInstanceUIDs={uid}", headers=HTML)
    assert shared.status_code == 200
    assert f'src="/shared/{token}/app/app-config.js"' in shared.text
    assert '<meta name="vethub-annotate" content="0">' in shared.text
    assert "vethub-csrf" not in shared.text
    config = client.get(f"/shared/{token}/app/app-config.js").text
    assert f'"qidoRoot": "/shared/{token}/dicomweb"' in config
    assert f'"routerBasename": "/shared/{token}/app"' in config
    assert '"showStudyList": false' in config
    # An owner's link is the plain page, not the diagnostic viewer; made-up tokens open nothing.
    assert client.get(f"/shared/{shares['owner']}/app/viewer", headers=HTML).status_code == 404
    assert client.get(f"/shared/{token}x/app/viewer", headers=HTML).status_code == 404
    assert client.get(f"/shared/{token}x/app/app-config.js").status_code == 404
    # Withdrawn: the viewer left open stops at its next page or config load.
    listed = client.get(f"/api/v1/studies/{uid}/shares", headers=vet).json()
    referral = next(x for x in listed if x["mode"] == "referral")
    revoked = client.delete(f"/api/v1/studies/{uid}/shares/{referral['id']}", headers=vet)
    assert revoked.status_code == 204, revoked.text
    assert client.get(f"/shared/{token}/app/viewer", headers=HTML).status_code == 410
    assert client.get(f"/shared/{token}/app/app-config.js").status_code == 410


def test_ohif_files_are_served_once_for_all_with_long_caching(client: TestClient) -> None:
    bundle = next(ohif_assets.OHIF_DIR.glob("app.bundle.*.js")).name
    r = client.get(f"/viewer/ohif/{bundle}", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert b'__webpack_require__.p = "/viewer/ohif/";' in r.content
    assert b'__webpack_require__.p = "/";' not in r.content

    wasm = next(ohif_assets.OHIF_DIR.glob("*.wasm")).name
    w = client.get(f"/viewer/ohif/{wasm}")
    assert w.headers["content-type"] == "application/wasm" and w.content[:4] == b"\0asm"
    css = client.get("/viewer/ohif/app.bundle.css")
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"] == "public, max-age=3600"
    odd = ("..%2F..%2Fpyproject.toml", "nope.js", "a%00b.js", "x" * 5000, "assets/" + "y/" * 900)
    for path in ("index.html", "app-config.js", "sw.js", *odd):
        assert client.get(f"/viewer/ohif/{path}").status_code == 404, path[:40]
    for name in ohif_assets._first_chunk_files(ohif_assets.OHIF_DIR):
        assert client.get(f"/viewer/ohif/{name}").status_code == 200, name
    script = client.get("/viewer/static/vethub-ohif.js")
    assert script.status_code == 200 and "window.vethub" in script.text


def test_without_the_files_the_page_says_how_to_install_them(
    hub: Hub, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = _study(client, hub)
    monkeypatch.setattr(ohif_assets, "OHIF_DIR", tmp_path / "absent")
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    page = client.get(f"/viewer/studies/{uid}", headers=vet)
    assert page.status_code == 503
    assert "make viewer-assets" in page.text and "Rex" in page.text
    assert client.get("/viewer/app/viewer", headers=vet).status_code == 503


@pytest.mark.parametrize(
    ("birth", "on", "shown"),
    [
        (date(2019, 4, 2), date(2026, 11, 27), "7 y 7 mo"),
        (date(2019, 11, 27), date(2026, 11, 27), "7 y"),
        (date(2025, 1, 31), date(2026, 11, 27), "21 mo"),  # months until two years
        (date(2026, 11, 10), date(2026, 11, 27), "17 d"),  # a neonate
        (date(2026, 12, 1), date(2026, 11, 27), None),  # born after the study: not shown
        (None, date(2026, 11, 27), None),
    ],
)
def test_age_as_vets_write_it(birth: date | None, on: date, shown: str | None) -> None:
    assert ohif.age(birth, on) == shown
