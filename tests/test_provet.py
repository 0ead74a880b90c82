"""Provet Cloud (adapters/provet/) against the fake Provet of tests/fake_provet.py.

The hub runs in-process (TestClient for the webhook and the API, the DICOM
door on a real port for DCMTK findscu and C-STORE, the delivery worker
stepped by hand); the fake Provet runs on a real socket, so the adapter's
own httpx client, token, retries and Retry-After are exercised for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlmodel import col

from hub.context import Hub
from hub.models import Delivery, Order, as_utc, utcnow
from hub.serve import build_app
from hub.services.deliveries.worker import DeliveryWorker
from tests.fake_provet import CLIENT_ID, CLIENT_SECRET, FakeProvet, Fault, WebhookSender, serving
from tests.harness import ADMIN_KEY
from tests.study_factory import instance, send
from tests.worklist_scu import findscu, running_door

KEY = "provet test secret key, long enough"
TODAY = date.today().isoformat()
DA = TODAY.replace("-", "")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvet]:
    provet = FakeProvet()
    with serving(provet):
        yield provet


@pytest.fixture
def provet(fake: FakeProvet) -> FakeProvet:
    fake.seed(TODAY)
    fake.tokens.clear()
    fake.token_log.clear()
    fake.request_log.clear()
    fake.patches.clear()
    fake.faults.clear()
    fake.down = False
    return fake


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    hub.settings.secret_key = KEY
    with TestClient(build_app(hub), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def register(api: TestClient, base: str, **over: object) -> dict:
    body = {
        "kind": "provet",
        "provet": {
            "base_url": base,
            "provet_id": "4",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            **over,
        },
        "results": ["provet-status"],
        "events": ["study.received", "order.completed", "order.cancelled"],
    }
    r = api.put("/api/v1/sources/clinic", json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


def hook(api: TestClient, base: str, suffix: str = "") -> WebhookSender:
    url = register(api, base)["status"]["webhook_url"]
    return WebhookSender(api.post, urlsplit(url).path + suffix, provet_url=base)


@pytest.fixture
def worker(hub: Hub, api: TestClient) -> Iterator[DeliveryWorker]:
    """The delivery worker, stepped by hand (one for the test: its token cache lives on)."""
    w = DeliveryWorker(hub.db, hub.settings, api.app.state.delivery_kinds)  # type: ignore[attr-defined]
    yield w
    w.stop()


def work(hub: Hub, worker: DeliveryWorker) -> int:
    """One round of the delivery worker, everything pending made due first."""
    with hub.db.session() as s:
        s.execute(
            update(Delivery)
            .where(col(Delivery.status) == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    return worker.run_once()


def jobs(hub: Hub) -> list[Delivery]:
    with hub.db.read_session() as s:
        return list(s.scalars(select(Delivery).where(col(Delivery.kind) == "provet-pull")))


def the_order(hub: Hub, placer: str = "501") -> Order:
    with hub.db.read_session() as s:
        found = list(s.scalars(select(Order).where(col(Order.placer_order_number) == placer)))
    assert len(found) == 1, found
    return found[0]


def test_settings_sealed_url_shown_and_bad_webhooks_refused(
    api: TestClient, hub: Hub, provet: FakeProvet
) -> None:
    r = api.put(
        "/api/v1/sources/clinic",
        json={"kind": "provet", "provet": {"base_url": "ftp://x/4", "page_size": 1000}},
    )
    fields = {e["field"] for e in r.json()["errors"]}
    assert r.status_code == 422
    assert {"provet.base_url", "provet.provet_id", "provet.client_secret"} <= fields
    assert "provet.page_size" in fields

    out = register(api, provet.base_url)
    url = out["status"]["webhook_url"]
    assert url.startswith("http://127.0.0.1:8080/adapters/provet/clinic/") and len(url) > 70
    assert out["provet"]["client_secret_set"] is True and out["provet"]["scope"] == "restapi"
    shown = api.get("/api/v1/sources/clinic")
    assert shown.json()["status"]["webhook_url"] == url
    assert CLIENT_SECRET not in shown.text + api.get("/api/v1/sources").text

    path = urlsplit(url).path
    # Provet retries anything but 200, ten times at most (webhooks.html).
    wrong = WebhookSender(api.post, path[:-3] + "abc")
    assert wrong.send(1) == 404 and [a for _, a, _ in wrong.log] == list(range(1, 11))
    one = {"diagnosticimagingworklist_id": "1"}
    assert api.post(path[:-3] + "abc", data=one).status_code == 404
    assert api.post(path.replace("/clinic/", "/other/"), data={}).status_code == 404
    bad = [
        ({"content": b'{"diagnosticimagingworklist_id": ', "headers": _json}, "not valid JSON"),
        ({"data": {"provet_id": "4"}}, "diagnosticimagingworklist_id is required"),
        ({"data": {"diagnosticimagingworklist_id": "12; DROP"}}, "positive whole number"),
        ({"json": {"diagnosticimagingworklist_id": 5, "provet_id": "9"}}, "provet_id '9'"),
    ]
    for kwargs, detail in bad:
        r = api.post(path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 400 and detail in r.json()["detail"], r.text
    status = api.get("/api/v1/sources/clinic").json()["status"]
    assert status["webhooks_refused"] == 4 and "provet_id" in status["last_refused"]["detail"]
    assert jobs(hub) == []

    # A new URL on request: the old one stops working.
    rotated = register(api, provet.base_url, webhook_rotation=1)["status"]["webhook_url"]
    assert rotated != url
    assert api.post(path, data={"diagnosticimagingworklist_id": "1"}).status_code == 404
    ok = api.post(urlsplit(rotated).path, data={"diagnosticimagingworklist_id": "1"})
    assert ok.status_code == 200


_json = {"content-type": "application/json"}


def test_end_to_end_webhook_worklist_store_status(
    api: TestClient, hub: Hub, provet: FakeProvet, worker: DeliveryWorker, tmp_path: Path
) -> None:
    sender = hook(api, provet.base_url)
    assert sender.send(501) == 200
    assert sender.send(501, as_json=True) == 200  # Provet resends: still one job
    assert len(jobs(hub)) == 1 and sender.log == [(501, 1, 200), (501, 1, 200)]
    work(hub, worker)

    order = the_order(hub)
    assert (order.source, order.status, order.patient_name) == ("clinic", "scheduled", "Fenton")
    assert order.species_description == "Canis lupus familiaris" and order.breed is None
    assert (order.patient_sex, order.patient_id) == ("female", "2130")
    assert (order.owner_last_name, order.owner_first_name) == ("Smith", "John")
    assert (order.modality, order.procedure_description) == ("DX", "Thorax")
    assert (order.referring_vet, order.site) == ("Jane Doe", "Main clinic")
    assert order.notes == "Coughing for two weeks" and order.reason == "Test consultation"
    assert order.scheduled_start == datetime.fromisoformat(f"{TODAY}T10:30:00")
    assert len(provet.token_log) == 1 and provet.token_log[0]["scope"] == "restapi"
    assert provet.calls("consultation") == 1 and provet.calls("patient") == 0  # exposed

    with running_door(hub) as port:
        keys = [
            "AccessionNumber",
            "PatientName",
            "PatientID",
            "PatientSpeciesDescription",
            "ScheduledProcedureStepSequence[0].Modality",
            f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={DA}",
        ]
        proc, answers = findscu(port, keys, tmp_path / "find")
        assert proc.returncode == 0, proc.stderr
        mine = [a for a in answers if a.AccessionNumber == order.accession_number]
        assert len(mine) == 1 and str(mine[0].PatientName) == "Smith^Fenton"
        assert mine[0].PatientSpeciesDescription == "Canis lupus familiaris"
        ds = instance(
            study_uid=order.study_instance_uid,
            accession=order.accession_number,
            patient_id="2130",
            patient_name="Smith^Fenton",
            study_date=TODAY.replace("-", ""),
        )
        assert send(port, [ds]) == [0]
    provet.down = True  # the status PATCH fails: the source says so until one goes through
    work(hub, worker)
    failing = api.get("/api/v1/sources/clinic").json()["status"]
    assert failing["last_error"].startswith("result for worklist 501: ") and not provet.patches
    provet.down = False
    work(hub, worker)

    assert len(provet.patches) == 1
    where, body = provet.patches[0]
    assert where == "diagnosticimaging_worklist/501"
    assert body == {
        "status": "in_progress",
        "viewer_url": f"http://127.0.0.1:8080/viewer/studies/{order.study_instance_uid}",
    }
    status = api.get("/api/v1/sources/clinic").json()["status"]
    assert status["last_pull"] == {"worklist_id": "501", "outcome": "created"}
    assert status["last_result"]["outcome"] == "wrote ['status', 'viewer_url']"
    assert status["last_error"] is None and "HTTP 503" in status["previous_error"]


def test_faults_retried_once_applied_and_visible(
    api: TestClient, hub: Hub, provet: FakeProvet, worker: DeliveryWorker
) -> None:
    sender = hook(api, provet.base_url)

    # The API is down: the webhook is still answered 200, the job fails visibly.
    provet.down = True
    assert sender.send(501) == 200
    work(hub, worker)
    (job,) = jobs(hub)
    assert job.status == "pending" and "HTTP 503" in (job.last_error or "")
    status = api.get("/api/v1/sources/clinic").json()["status"]
    assert (
        status["last_error"].startswith("pull of worklist 501: ")
        and "HTTP 503" in status["last_error"]
    )
    assert status["pull_failures"] == 1
    provet.down = False
    work(hub, worker)
    assert [j.status for j in jobs(hub)] == ["delivered"]
    assert the_order(hub).status == "scheduled"
    # Recovered: no error shown as current, the one before it kept with its time.
    status = api.get("/api/v1/sources/clinic").json()["status"]
    assert status["last_error"] is None and "503" in status["previous_error"]
    assert status["last_ok_at"] >= status["last_error_at"]

    # Slow: no answer within the send timeout is a failed attempt, retried.
    provet.slow["diagnosticimaging_worklist"] = 1.0
    assert sender.send(501) == 200
    impatient = hub.settings.model_copy(update={"delivery_timeout_seconds": 0.3})
    kinds = api.app.state.delivery_kinds  # type: ignore[attr-defined]
    DeliveryWorker(hub.db, impatient, kinds).run_once()
    assert any("in time" in (j.last_error or "") for j in jobs(hub) if j.status == "pending")
    work(hub, worker)
    assert all(j.status == "delivered" for j in jobs(hub))

    # 401 in the middle: one new token, then the update goes through.
    provet.resources["diagnosticimaging_referral"]["77"]["remarks"] = "Now also lame"
    provet.revoke_tokens()
    tokens_before = len(provet.token_log)
    assert sender.send(501) == 200
    work(hub, worker)
    assert len(provet.token_log) == tokens_before + 1
    assert the_order(hub).notes == "Now also lame"

    # 429 with Retry-After: the next attempt waits that long, then succeeds.
    provet.fail("diagnosticimaging_worklist", Fault(429, retry_after="120"))
    assert sender.send(501) == 200
    worker.run_once()
    waiting = [j for j in jobs(hub) if j.status == "pending"]
    assert len(waiting) == 1 and "HTTP 429" in (waiting[0].last_error or "")
    wait = (as_utc(waiting[0].next_attempt_at) - as_utc(utcnow())).total_seconds()
    assert 100 < wait <= 121, wait
    work(hub, worker)
    assert all(j.status == "delivered" for j in jobs(hub))

    # Malformed JSON from the API: retried, then applied.
    provet.fail("diagnosticimaging_referral", Fault(200, malformed=True))
    assert sender.send(501) == 200
    worker.run_once()
    assert any("not JSON" in (j.last_error or "") for j in jobs(hub) if j.status == "pending")
    work(hub, worker)
    assert all(j.status == "delivered" for j in jobs(hub))

    # A code the mapping does not know is kept as text and reported.
    worklist = dict(provet.resources["diagnosticimaging_worklist"]["501"])
    provet.resources["diagnosticimaging_worklist"]["502"] = worklist | {
        "id": 502,
        "modality": provet.url("modality", 2),
    }
    assert sender.send(502) == 200
    work(hub, worker)
    second = the_order(hub, "502")
    assert second.modality is None and second.procedure_description == "Thorax"
    unknown = api.get("/api/v1/sources/clinic").json()["status"]["unknown_codes"]
    assert unknown == {"worklist_id": "502", "codes": ["modality 'Thermography'"]}

    # Deleted in Provet, then a late "created" resend: cancelled once, no error loop.
    del provet.resources["diagnosticimaging_worklist"]["501"]
    assert sender.send(501) == 200
    work(hub, worker)
    assert the_order(hub).status == "cancelled"
    assert sender.send(501) == 200
    work(hub, worker)
    assert the_order(hub).status == "cancelled"
    assert all(j.status == "delivered" for j in jobs(hub))

    # A hook for trigger 8 on its own URL cancels without asking Provet again.
    deleted = WebhookSender(api.post, sender.url + "/deleted")
    calls = len(provet.request_log)
    assert deleted.send(502) == 200
    work(hub, worker)
    assert the_order(hub, "502").status == "cancelled"
    assert [m for m, p in provet.request_log[calls:] if "diagnosticimaging" in p] == ["PATCH"]
    assert provet.patches[-1] == ("diagnosticimaging_worklist/502", {"status": "cancelled"})

    # An id Provet never had: nothing to do, delivered, no order.
    assert sender.send(999) == 200
    work(hub, worker)
    with hub.db.read_session() as s:
        assert s.scalars(select(Order).where(col(Order.placer_order_number) == "999")).all() == []
    assert all(j.status == "delivered" for j in jobs(hub))
    assert the_order(hub, "501").status == the_order(hub, "502").status == "cancelled"

    # Lookups were read once: the modality and target-area lists, the vet by itself.
    assert [provet.calls(r) for r in ("modality", "targetarea", "user")] == [1, 1, 1]

    # Credentials never in API output.
    seen = api.get("/api/v1/sources/clinic").text + api.get("/api/v1/deliveries").text
    assert CLIENT_SECRET not in seen and not any(t in seen for t in provet.tokens)
