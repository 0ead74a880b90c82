"""Images that came before their order, and header rewrites that fail.

A study keyed in at the device before the practice software sent the order
waits; placing or changing the order attaches it at once (same rules as on
arrival), and a waiting study's candidates are ranked against today's orders
when it is shown. A stored file whose header cannot be corrected is named in
the answer and audited, never reported as corrected.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.archive import rewrite
from hub.context import Hub
from hub.models import AuditEvent, OutboxEvent
from hub.schemas import OrderIn
from hub.services import orders, patients, reconcile
from tests import study_factory as sf
from tests.factories import REX
from tests.study_factory import paths, place


def _study(client: TestClient, uid: str) -> dict:
    r = client.get(f"/api/v1/studies/{uid}")
    assert r.status_code == 200, r.text
    return r.json()


def test_placing_the_order_attaches_the_study_that_came_first(hub: Hub, client: TestClient) -> None:
    ds = sf.instance(patient_id="P-555", patient_name="SMITH^REX")  # keyed in at the device
    sf.store(hub, ds)
    uid = ds.StudyInstanceUID
    assert _study(client, uid)["unmatched_reason"] == "no_match"

    order = place(client)  # P-555, Rex, DX, 2026-11-27: the patient_day rule fits
    body = _study(client, uid)  # no timed job has run
    assert body["order_id"] == order["id"] and body["match_method"] == "patient_day"
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
    stored = pydicom.dcmread(paths(hub, uid)[0])
    assert str(stored.PatientName) == "Smith^Rex"  # corrected from the order
    assert stored.PatientBreedDescription == "Labrador Retriever"  # filled in
    with hub.db.read_session() as s:
        kinds = [e.kind for e in s.scalars(select(OutboxEvent))]
        assert "study.reconciled" in kinds
    assert rewrite.rematch_waiting(hub) == []


def test_changing_the_order_attaches_the_study_that_came_first(
    hub: Hub, client: TestClient
) -> None:
    order = place(client, patient={**REX["patient"], "id": "P-000"})  # a typo
    ds = sf.instance(patient_id="P-555", patient_name="SMITH^REX")
    sf.store(hub, ds)
    assert _study(client, ds.StudyInstanceUID)["order_id"] is None

    r = client.patch(
        f"/api/v1/orders/{order['id']}",
        content='{"patient": {"id": "P-555"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert _study(client, ds.StudyInstanceUID)["order_id"] == order["id"]


def test_another_patients_order_is_never_attached(hub: Hub, client: TestClient) -> None:
    ds = sf.instance(patient_id="P-777", patient_name="SMITH^REX")
    sf.store(hub, ds)
    place(client, accession_number="A-OTHER")  # P-555: same name, different animal id
    body = _study(client, ds.StudyInstanceUID)
    assert body["order_id"] is None


def test_waiting_studies_show_the_candidates_of_today(hub: Hub, client: TestClient) -> None:
    ds = sf.instance(patient_id="P-999", patient_name="SMITH^REX")
    sf.store(hub, ds)
    uid = ds.StudyInstanceUID
    assert _study(client, uid)["candidates"] == []  # nothing to offer on arrival

    order = place(client)  # P-555: not this study's patient id, but Rex of the Smiths
    assert _study(client, uid)["order_id"] is None  # no rule attaches it
    offered = [c["order_id"] for c in _study(client, uid)["candidates"]]
    assert offered == [order["id"]]
    listed = client.get("/api/v1/studies", params={"matched": "false"}).json()["items"]
    assert [c["order_id"] for c in listed[0]["candidates"]] == [order["id"]]


def test_the_timed_job_still_matches_when_orders_cannot_rematch(
    hub: Hub, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "_followers", {})  # as for a database no hub opened
    ds = sf.instance(patient_id="P-555", patient_name="SMITH^REX")
    sf.store(hub, ds)
    order = place(client)
    assert _study(client, ds.StudyInstanceUID)["order_id"] is None
    assert rewrite.rematch_waiting(hub) == [ds.StudyInstanceUID]
    assert _study(client, ds.StudyInstanceUID)["order_id"] == order["id"]


def _block(path: Path) -> None:
    """Make a stored file impossible to read or replace: a directory in its place."""
    os.remove(path)
    path.mkdir()
    (path / "keep").write_bytes(b"")


def test_a_file_that_cannot_be_rewritten_is_reported_and_audited(
    hub: Hub, client: TestClient
) -> None:
    order = place(client, accession_number="A-REC")
    study_uid = sf.instance().StudyInstanceUID
    series = sf.instance().SeriesInstanceUID
    for _ in range(2):
        sf.store(hub, sf.instance(study_uid=study_uid, series_uid=series, patient_id=""))
    good, bad = paths(hub, study_uid)
    _block(Path(bad))

    r = client.post(f"/api/v1/studies/{study_uid}/reconcile", json={"order_id": order["id"]})
    assert r.status_code == 200, r.text
    rel_bad = str(Path(bad).relative_to(hub.settings.data_dir))
    assert r.json()["files_not_corrected"] == [rel_bad]
    assert r.json()["order_id"] == order["id"]
    assert pydicom.dcmread(good).AccessionNumber == "A-REC"  # the others were corrected
    with hub.db.read_session() as s:
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "rewrite_failed")).one()
    assert failed.target_id == study_uid
    assert list(failed.detail["failed"]) == [rel_bad]
    assert failed.detail["values"]["AccessionNumber"] == "A-REC"

    # Once the file is back, reconciling again finishes the job and reports nothing.
    shutil.rmtree(bad)
    shutil.copyfile(good, bad)
    r = client.post(f"/api/v1/studies/{study_uid}/reconcile", json={"order_id": order["id"]})
    assert r.json()["files_not_corrected"] == []


def test_a_patient_merge_attaches_the_study_waiting_under_the_prior_id(
    hub: Hub, client: TestClient
) -> None:
    order = place(client)  # P-555
    ds = sf.instance(patient_id="P-OLD", patient_name="SMITH^REX")  # a duplicate record
    sf.store(hub, ds)
    assert _study(client, ds.StudyInstanceUID)["order_id"] is None

    with hub.db.session() as s:
        patients.merge(s, "P-OLD", "P-555", hub.orders, source=REX["source"])
    body = _study(client, ds.StudyInstanceUID)
    assert body["order_id"] == order["id"] and body["match_method"] == "patient_day"
    assert pydicom.dcmread(paths(hub, ds.StudyInstanceUID)[0]).PatientID == "P-555"


def test_an_attachment_rolled_back_to_its_savepoint_leaves_the_files_alone(
    hub: Hub, client: TestClient
) -> None:
    """As when one HL7 message of a committed batch fails after placing its order."""
    ds = sf.instance(patient_id="P-555", patient_name="SMITH^REX")
    sf.store(hub, ds)
    with hub.db.session() as s, contextlib.suppress(RuntimeError), s.begin_nested():
        orders.place(s, OrderIn.model_validate(REX), hub.orders)
        raise RuntimeError("the message fails after its order was placed")
    assert _study(client, ds.StudyInstanceUID)["order_id"] is None
    assert str(pydicom.dcmread(paths(hub, ds.StudyInstanceUID)[0]).PatientName) == "SMITH^REX"
