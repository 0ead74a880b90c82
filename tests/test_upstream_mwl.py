"""Upstream DICOM worklist (kind ``upstream-mwl``, adapters/upstream_mwl/), with DCMTK
``wlmscpfs`` and Orthanc's ModalityWorklists plugin as the practice system's worklist.

No veterinary practice system publishes an example worklist item (the project's
pims.md: IDEXX Cornerstone's conformance statement is listed under Sources,
its field use unverified), so the items here use only the attributes of
DICOM PS3.4 Annex K (Modality Worklist) and PS3.3 C.7.1.1 (the veterinary
patient attributes). ``wlmscpfs`` returns none of the veterinary ones (see its
man page, "return keys"), which makes it a faithful stand-in for a system
built for human medicine: species, breed and sex come through the source's
``fields`` mapping (PatientComments, OtherPatientIDs) and the owner through
``PatientName = Owner^Animal``. Orthanc's plugin returns whatever the file
holds, so it carries the veterinary attributes themselves.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy import update
from sqlmodel import col

from adapters.upstream_mwl import config, poll, scu
from hub.context import Hub
from hub.jobs import Jobs
from hub.models import Order
from hub.serve import adapter_jobs, delivery_kinds
from hub.services import orders
from hub.services.deliveries.worker import DeliveryWorker
from tests.harness import free_port, start_listener
from tests.order_corpus import order_to_mwl
from tests.study_factory import instance, store
from tests.worklist_scu import findscu, running_door

WLMSCPFS = shutil.which("wlmscpfs")
STORESCP = shutil.which("storescp")
ORTHANC = shutil.which("Orthanc")
WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
TODAY = date.today().strftime("%Y%m%d")
# Species and breed in the comments, the neuter state as the second "other ID".
FIELDS = {
    "species": {"from": "PatientComments", "pattern": "Species: *([^;]+)"},
    "breed": {"from": "PatientComments", "pattern": "Breed: *([^;]+)"},
    "sex": "OtherPatientIDs[1]",
}


def item(rp_id: str, patient_id: str | None, name: str, **attrs: Any) -> Dataset:
    """A human-medicine style worklist item (PS3.4 K.6): no veterinary attributes."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = attrs.pop("accession", f"ACC-{rp_id}")
    ds.PatientName = name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientSex = attrs.pop("sex", "O")
    ds.StudyInstanceUID = attrs.pop("study_uid", generate_uid())
    ds.RequestedProcedureID = rp_id
    ds.RequestedProcedureDescription = attrs.pop("description", "Thorax two views")
    ds.ReferringPhysicianName = "Doe^Jane"
    step = Dataset()
    step.ScheduledStationAETitle = "DX_ROOM1"
    step.ScheduledProcedureStepStartDate = TODAY
    step.ScheduledProcedureStepStartTime = "093000"
    step.Modality = attrs.pop("modality", "DX")
    step.ScheduledProcedureStepID = f"SPS-{rp_id}"
    step.ScheduledProcedureStepDescription = "Thorax"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def write(folder: Path, ds: Dataset, name: str | None = None) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{name or ds.RequestedProcedureID}.wl"
    ds.save_as(path, enforce_file_format=True)
    return path


class Wlm:
    """One wlmscpfs; each test serves its own AE title's folder (``-dfp root/<AE>``)."""

    def __init__(self, root: Path) -> None:
        assert WLMSCPFS, "DCMTK wlmscpfs is required (make deps-system)"
        self.root, self.port = root, free_port()
        argv = [WLMSCPFS, "-dfp", str(root), "-dfr", "-csk", str(self.port)]
        self.proc = start_listener(argv, self.port)

    def folder(self) -> tuple[str, Path]:
        ae = "UP" + uuid.uuid4().hex[:10].upper()
        path = self.root / ae
        path.mkdir()
        (path / "lockfile").touch()  # wlmscpfs serves a folder only when it holds one
        return ae, path


@pytest.fixture(scope="module")
def wlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wlm]:
    server = Wlm(tmp_path_factory.mktemp("wlm"))
    yield server
    server.proc.terminate()
    server.proc.wait(5)


def register(client: TestClient, name: str, ae: str, port: int, **more: Any) -> dict:
    body = {"kind": "upstream-mwl", "upstream": {"ae_title": ae, "host": "127.0.0.1"} | more}
    body["upstream"]["port"] = port
    r = client.put(f"/api/v1/sources/{name}", json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


def by_placer(hub: Hub, source: str) -> dict[str, Order]:
    with hub.db.read_session() as s:
        found, _ = orders.find(s, orders.OrderFilter(source=source), limit=100)
        for o in found:
            s.expunge(o)
        return {o.placer_order_number: o for o in found}


def status(client: TestClient, name: str) -> dict:
    r = client.get(f"/api/v1/sources/{name}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


# -- settings and the hub's timed job ---------------------------------------------


def test_settings_are_checked_and_the_hub_job_polls_each_source_when_due(
    hub: Hub, client: TestClient
) -> None:
    out = register(client, "cstone", "CSTONE", 104, fields=FIELDS)
    assert out["kind"] == "upstream-mwl" and out["status"] == {}
    up = out["upstream"]
    assert up["ae_title"] == "CSTONE" and up["port"] == 104 and up["fields"] == FIELDS
    assert up["interval_s"] == 60 and up["calling_ae_title"] == "VETHUB"
    assert up["query"] == {"ScheduledStationAETitle": "", "Modality": ""}
    bad = {
        "ae_title": "A" * 17,
        "host": "not a host",
        "port": 0,
        "interval_s": 1,
        "character_set": "KLINGON",
        "query": {"PatientWeight": "", "ScheduledStationAETitle": "bad\\ae"},
        "fields": {"species": "NoSuchKeyword", "colour": "PatientComments", "breed": 7},
        "sex": "M",
    }
    r = client.put("/api/v1/sources/cstone", json={"kind": "upstream-mwl", "upstream": bad})
    assert r.status_code == 422, r.text
    named = {e["field"] for e in r.json()["errors"]}
    assert named == {f"upstream.{k}" for k in (
        "ae_title", "host", "port", "interval_s", "character_set", "query.PatientWeight",
        "query.ScheduledStationAETitle", "fields.species", "fields.colour", "fields.breed", "sex",
    )}, r.text  # fmt: skip
    assert "not a DICOM keyword" in r.text
    r = client.put("/api/v1/sources/other", json={"kind": "upstream-mwl"})
    assert r.status_code == 422 and "upstream" in r.text
    assert client.get("/api/v1/sources/cstone").json()["upstream"]["port"] == 104

    # The composition root adds the poll to the hub's jobs; each source is polled
    # when its interval is up (a stand-in upstream answers here: no sockets).
    jobs = Jobs(hub)
    adapter_jobs(jobs, hub)
    assert jobs.scheduler.get_job("upstream_mwl_poll") is not None
    asked: list[str] = []
    undated = item("RP9", "P-9", "Jones^Tom")  # no start: the hub takes "now", once
    del undated.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate

    def finder(up: config.Upstream, today: date) -> list[Dataset]:
        asked.append(up.ae_title)
        return [undated] if up.ae_title == "FAST" else []

    register(client, "fast", "FAST", 104, interval_s=10)
    register(client, "slow", "SLOW", 104, interval_s=3600)
    assert client.put("/api/v1/sources/plain", json={}).status_code == 201  # hl7: not polled
    poller = poll.Poller(hub, finder)
    assert sorted(poller.tick()) == ["cstone", "fast", "slow"]
    assert sorted(asked) == ["CSTONE", "FAST", "SLOW"]
    assert poller.tick() == []  # none is due again yet
    poller.last["fast"] -= 10
    assert status(client, "fast")["placed"] == 1
    earlier = datetime(2026, 1, 2, 3, 4, 5)  # as if placed long ago: "now" has moved on
    with hub.db.session() as s:
        s.execute(update(Order).where(col(Order.source) == "fast").values(scheduled_start=earlier))
    poller.last["fast"] -= 10
    assert poller.tick() == ["fast"]
    st = status(client, "fast")
    assert (st["last_result"], st["items"], st["unchanged"], st["updated"]) == ("ok", 1, 1, 0)
    assert by_placer(hub, "fast")["RP9"].scheduled_start == earlier


# -- polling wlmscpfs -------------------------------------------------------------


def test_the_upstream_list_becomes_orders_kept_in_step_and_served_to_devices(
    hub: Hub, client: TestClient, wlm: Wlm, tmp_path: Path
) -> None:
    ae, folder = wlm.folder()
    register(client, "cstone", ae, wlm.port, fields=FIELDS)
    bella = item(
        "RP1", "P-1", "Smith^Bella",
        PatientComments="Species: Canine; Breed: Beagle", OtherPatientIDs=["T-99", "FS"],
    )  # fmt: skip
    rex = item(
        "RP2", "P-2", "Müller^Rex", ResponsiblePerson="Müller^Anna",
        PatientComments="Species: FEL", sex="M",
    )  # fmt: skip
    uid = generate_uid()
    zeb = item("RP3", "P-3", "Okafor^Zed", study_uid=uid, modality="DR",
               PatientComments="Species: Zebu")  # fmt: skip
    nobody = item("RP4", None, "Doe^Nemo")
    for ds in (bella, rex, zeb, nobody):
        write(folder, ds)
    # a second step of RP1's procedure: one order per requested procedure
    step2 = copy.deepcopy(bella)
    step2.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = "SPS-RP1-2"
    write(folder, step2, "RP1-step2")

    out = poll.poll(hub, "cstone")
    assert out is not None and (out.items, out.placed, out.refused) == (5, 3, 1), out
    assert any(w.startswith("RP1: another item") for w in out.warnings), out.warnings
    (folder / "RP1-step2.wl").unlink()
    got = by_placer(hub, "cstone")
    assert set(got) == {"RP1", "RP2", "RP3"}
    b = got["RP1"]
    assert (b.patient_name, b.owner_last_name, b.patient_id) == ("Bella", "Smith", "P-1")
    assert (b.species_code, b.breed, b.patient_sex, b.patient_neutered) == (
        "448771007", "Beagle", "female", True,
    )  # fmt: skip
    assert (b.accession_number, b.requested_procedure_id) == ("ACC-RP1", "RP1")
    assert b.scheduled_step_id in ("SPS-RP1", "SPS-RP1-2")  # whichever step came first
    assert b.referring_vet == "Jane Doe" and b.status == "scheduled"
    r = got["RP2"]
    assert (r.owner_last_name, r.owner_first_name, r.patient_name) == ("Müller", "Anna", "Rex")
    assert r.species_description == "Felis catus"  # vendor code FEL, mappings/vendors
    z = got["RP3"]
    assert z.study_instance_uid == uid and z.modality == "DX"  # DR mapped to DX
    assert z.species_description == "Zebu"  # unknown: kept as text, reported
    st = status(client, "cstone")
    assert st["last_result"] == "ok" and st["items"] == 5 and st["placed"] == 3
    assert st["unknown_codes"] == {"species": ["Zebu"]}
    assert st["refused"] == 1 and "RP4" in st["errors"][0] and "patient" in st["errors"][0]

    # The hub's own worklist serves them beside an order placed over REST.
    rest = client.post("/api/v1/orders", json=_rest_order()).json()
    keys = [
        "AccessionNumber", "PatientName", "PatientSpeciesDescription", "PatientSexNeutered",
        "ResponsiblePerson", "StudyInstanceUID",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=DX_ROOM1",
        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={TODAY}",
    ]  # fmt: skip
    with running_door(hub) as port:
        proc, answers = findscu(port, keys, tmp_path / "find")
    assert proc.returncode == 0, proc.stderr
    seen = {str(a.AccessionNumber): a for a in answers}
    assert set(seen) == {"ACC-RP1", "ACC-RP2", "ACC-RP3", rest["accession_number"]}
    assert str(seen["ACC-RP1"].PatientName) == "Smith^Bella"
    assert seen["ACC-RP1"].PatientSpeciesDescription == "Canis lupus familiaris"
    assert seen["ACC-RP1"].PatientSexNeutered == "ALTERED"
    assert str(seen["ACC-RP2"].ResponsiblePerson) == "Müller^Anna"
    assert seen["ACC-RP3"].StudyInstanceUID == uid

    # A changed item updates its order; the others stay as they were.
    bella.PatientComments = "Species: Canine; Breed: Beagle mix"
    write(folder, bella)
    out = poll.poll(hub, "cstone")
    assert out is not None and (out.updated, out.unchanged, out.placed) == (1, 2, 0), out
    got = by_placer(hub, "cstone")
    assert got["RP1"].breed == "Beagle mix" and got["RP1"].version == 2
    assert got["RP1"].scheduled_step_id == "SPS-RP1"
    assert got["RP2"].version == 1

    # RP3's study arrives and, by a route on the source, goes on to the upstream's
    # archive (DCMTK storescp registered as a node); another study stays here.
    archive = tmp_path / "archive"
    with storescp("CSTONEPACS", archive) as port:
        r = client.put("/api/v1/modalities/CSTONEPACS", json={"host": "127.0.0.1", "port": port})
        assert r.status_code in (200, 201), r.text
        route = {"destination": "CSTONEPACS", "when": "received", "filter": {"source": "cstone"}}
        assert client.put("/api/v1/routes/to-cstone", json=route).status_code == 201
        sop = generate_uid()
        store(hub, instance(study_uid=uid, sop_uid=sop, accession="ACC-RP3", patient_id="P-3",
                            patient_name="Okafor^Zed"))  # fmt: skip
        store(hub, instance(accession="OTHER"))
        worker = DeliveryWorker(hub.db, hub.settings, delivery_kinds())
        try:
            worker.run_once()
        finally:
            worker.stop()
    [d] = client.get("/api/v1/deliveries", params={"kind": "dicom-forward"}).json()["items"]
    assert d["status"] == "delivered", d
    assert [p.name for p in archive.iterdir()] == [f"DX.{sop}"]

    # Items gone: cancelled, unless their study has arrived.
    (folder / "RP2.wl").unlink()
    (folder / "RP3.wl").unlink()
    out = poll.poll(hub, "cstone")
    assert out is not None and (out.cancelled, out.kept, out.items) == (1, 1, 2), out
    got = by_placer(hub, "cstone")
    assert got["RP2"].status == "cancelled" and got["RP3"].status != "cancelled"
    assert got["RP1"].status == "scheduled"
    assert client.get(f"/api/v1/orders/{rest['id']}").json()["status"] == "scheduled"
    st = status(client, "cstone")
    assert (st["cancelled"], st["kept"], st["items"]) == (1, 1, 2)

    # The upstream down, or refusing us: nothing changes, the status says why.
    (folder / "RP1.wl").unlink()  # were a poll to succeed now, RP1 would be cancelled
    register(client, "cstone", ae, free_port(), fields=FIELDS)  # nobody listens there
    assert poll.poll(hub, "cstone") is None
    st = status(client, "cstone")
    assert st["last_result"] == "failed" and "cannot reach" in st["last_error"]
    assert st["last_error_at"] == st["last_poll_at"] > st["last_ok_at"]
    assert st["failures_in_a_row"] == 1 and st["items"] == 2  # the last good poll's count
    register(client, "cstone", "NOSUCHAE", wlm.port, fields=FIELDS)  # no such folder
    assert poll.poll(hub, "cstone") is None
    st = status(client, "cstone")
    assert "rejected the association" in st["last_error"] and st["failures_in_a_row"] == 2
    assert by_placer(hub, "cstone")["RP1"].status == "scheduled"
    register(client, "cstone", ae, wlm.port, fields=FIELDS)  # back: now RP1's absence counts
    assert poll.poll(hub, "cstone") is not None
    st = status(client, "cstone")
    assert (st["last_result"], st["last_error"], st["failures_in_a_row"]) == ("ok", None, 0)
    # Recovered, not forgotten: what failed and when, and the later success.
    assert "rejected the association" in st["previous_error"]
    assert st["last_ok_at"] > st["last_error_at"]
    assert st["cancelled"] == 1 and by_placer(hub, "cstone")["RP1"].status == "cancelled"


def _rest_order() -> dict:
    return {
        "source": "pims-main",
        "placer_order_number": "ORD-REST-1",
        "patient": {"id": "P-9", "name": "Tom", "species": "cat"},
        "owner": {"last_name": "Jones"},
        "procedure": {"description": "Abdomen"},
        "modality": "DX",
        "station_ae_title": "DX_ROOM1",
    }


@contextmanager
def storescp(ae: str, out: Path) -> Iterator[int]:
    """DCMTK storescp as the upstream's archive; yields its port."""
    assert STORESCP, "DCMTK storescp is required (make deps-system)"
    out.mkdir()
    port = free_port()
    proc = start_listener([STORESCP, "-aet", ae, "-od", str(out), str(port)], port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


# -- faults of the C-FIND itself (a pynetdicom SCP that misbehaves on purpose) ------


def test_a_partial_or_failed_answer_is_a_failed_poll() -> None:
    mode = {"now": ""}

    def on_find(event: evt.Event) -> Any:
        answer = Dataset()
        answer.PatientID, answer.RequestedProcedureID = "P-1", "RP1"
        if mode["now"] == "slow":
            time.sleep(1.3)
        for _ in range(3 if mode["now"] == "many" else 1):
            yield 0xFF00, answer
        yield (0xC000 if mode["now"] == "fail" else 0x0000), None

    ae = AE(ae_title="BADWL")
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    base = {"ae_title": "BADWL", "host": "127.0.0.1", "port": server.server_address[1]}
    try:
        for now, settings, why in [
            ("fail", {}, r"status 0xC000"),
            ("many", {"max_items": 2}, r"more than max_items=2"),
            ("slow", {"timeout_s": 1}, r"no C-FIND response within 1 s"),
        ]:
            mode["now"] = now
            with pytest.raises(scu.PollFailed, match=why):
                scu.find(config.Upstream.of(base | settings), date.today())
        mode["now"] = "ok"
        assert len(scu.find(config.Upstream.of(base), date.today())) == 1
    finally:
        server.shutdown()


# -- Orthanc's worklist plugin as the upstream ---------------------------------------


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Orthanc (Debian package) with its ModalityWorklists plugin on a folder of .wl files."""
    if ORTHANC is None or not WORKLIST_PLUGIN.exists():
        pytest.fail("Orthanc with its worklist plugin is required (make deps-system)")
    work = tmp_path_factory.mktemp("orthanc")
    (work / "wl").mkdir()
    dicom, http = free_port(), free_port()
    cfg = {
        "Name": "upstream",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHWL",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        # Orthanc answers a worklist C-FIND only from a modality it knows.
        "DicomModalities": {"vethub": ["VETHUB", "127.0.0.1", 1]},
        "Plugins": [str(WORKLIST_PLUGIN)],
        "Worklists": {"Enable": True, "Database": str(work / "wl")},
    }
    (work / "orthanc.json").write_text(json.dumps(cfg))
    proc = start_listener([ORTHANC, str(work / "orthanc.json")], dicom)
    yield dicom, work / "wl"
    proc.kill()  # a throw-away instance: SIGTERM costs Orthanc seconds of shutdown
    proc.wait(10)


def test_orthanc_worklist_with_veterinary_attributes(
    hub: Hub, client: TestClient, orthanc: tuple[int, Path]
) -> None:
    port, folder = orthanc
    register(client, "orthwl", "ORTHWL", port)
    body = {
        "source": "x",
        "placer_order_number": "ORD-7",
        "accession_number": f"O{uuid.uuid4().hex[:8].upper()}",
        "patient": {"id": "P-7", "name": "Rex", "species": "dog", "breed": "Labrador Retriever",
                    "sex": "male", "neutered": True, "birth_date": "2019-04-02"},
        "owner": {"last_name": "Smith", "first_name": "Anna"},
        "procedure": {"code": "XR-THORAX", "description": "Thorax"},
        "modality": "DX",
        "station_ae_title": "DX_ROOM1",
        "scheduled_start": f"{date.today().isoformat()}T10:00:00",
    }  # fmt: skip
    ds = order_to_mwl(body)
    write(folder, ds, body["accession_number"])
    try:
        out = poll.poll(hub, "orthwl")
    finally:
        (folder / f"{body['accession_number']}.wl").unlink()
    assert out is not None and out.placed == 1 and not out.refused, out
    [o] = by_placer(hub, "orthwl").values()
    assert o.placer_order_number == str(ds.RequestedProcedureID)
    assert (o.species_code, o.breed, o.patient_sex, o.patient_neutered) == (
        "448771007", "Labrador Retriever", "male", True,
    )  # fmt: skip
    assert (o.owner_last_name, o.owner_first_name, o.patient_name) == ("Smith", "Anna", "Rex")
    assert o.patient_birth_date == date(2019, 4, 2) and o.procedure_code == "XR-THORAX"
    assert o.study_instance_uid == ds.StudyInstanceUID
