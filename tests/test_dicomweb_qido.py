"""QIDO-RS (docs/interface.md "DICOMweb"): matching, paging, the DICOM JSON
answer, share links and refusals on both databases, and dicomweb-client
against a whole ``vethub serve``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from hub.context import Hub
from hub.dicomweb import qido_query
from hub.services import links
from tests import study_factory as sf
from tests.harness import ServedHub, key_for

JSON = "application/dicom+json"


@dataclass
class Stored:
    rex: str  # matched to the REX order by its study UID, DX, 2 instances
    rex_series: str
    rex_sops: list[str]
    bella: str  # unmatched CT, January
    max: str  # unmatched US, December, 1 series


def _store(hub: Hub, client: TestClient) -> Stored:
    order = sf.place(client)
    rex, series = order["study_instance_uid"], generate_uid()
    sops: list[str] = []
    for n in (2, 1):  # stored out of order: answered by InstanceNumber
        ds = sf.instance(
            study_uid=rex,
            series_uid=series,
            accession="",  # matched by the order's Study Instance UID, which gives A1001
            patient_name="REX",  # the device's; the order corrects it
            rows=16,
            InstanceNumber=str(n),
            Columns=24,
        )
        sf.store(hub, ds)
        sops.insert(0, ds.SOPInstanceUID)
    bella = sf.instance(
        patient_id="P-9",
        patient_name="Jones^Bella",
        modality="CT",
        study_date="20260105",
        sop_class=sf.CT,
        StudyDescription="Abdomen",
    )
    sf.store(hub, bella)
    mx = sf.instance(
        patient_id="P-10", patient_name="O'Brien^Max", modality="US", study_date="20261231"
    )
    sf.store(hub, mx)
    return Stored(rex, series, sops, bella.StudyInstanceUID, mx.StudyInstanceUID)


def _uids(r: Any) -> list[str]:
    body = r.json()
    return [a["0020000D"]["Value"][0] for a in body]


def _value(result: dict, tag: str) -> Any:
    return result[tag].get("Value", [None])[0]


def test_studies_match_and_answer_dicom_json(hub: Hub, client: TestClient) -> None:
    st = _store(hub, client)
    r = client.get("/dicomweb/studies")
    assert r.status_code == 200 and r.headers["content-type"].startswith(JSON)
    assert _uids(r) == [st.max, st.rex, st.bella]  # newest study date first
    rex = r.json()[1]
    assert rex["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Smith^Rex"}]}
    assert _value(rex, "00100020") == "P-555" and _value(rex, "00080050") == "A1001"
    assert _value(rex, "00080005") == "ISO_IR 192"
    assert rex["00080061"] == {"vr": "CS", "Value": ["DX"]}
    assert _value(rex, "00201206") == 1 and _value(rex, "00201208") == 2
    assert _value(rex, "00080090") == {"Alphabetic": "Jane Doe"}  # the referring vet
    assert _value(rex, "00102292") == "Labrador Retriever"  # breed, from the order
    assert _value(rex, "00081190") == f"http://testserver/dicomweb/studies/{st.rex}"
    assert rex["00200010"] == {"vr": "SH"}  # required, unknown: present and empty
    assert list(rex) == sorted(rex)

    def found(**params: str) -> list[str]:
        got = client.get("/dicomweb/studies", params=params)
        assert got.status_code == 200, got.text
        return _uids(got)

    assert found(PatientName="smith*") == [st.rex]  # the device sent REX
    assert found(PatientName="*bel?a") == [st.bella]  # wildcards, any case
    assert found(PatientName="jones^bella") == [st.bella]
    assert found(PatientName="o'brien*", fuzzymatching="true") == [st.max]
    assert found(PatientName="%") == []  # SQL wildcards are plain characters
    assert found(PatientID="P-9") == [st.bella]
    assert found(PatientID="P-555") == [st.rex]
    assert found(**{"00100020": "P-1*"}) == [st.max]
    assert found(AccessionNumber="A1001") == [st.rex]  # the order's: the device sent none
    assert found(StudyDescription="abd*") == [st.bella]
    assert found(StudyDate="20260105") == [st.bella]
    assert found(StudyDate="20260101-20261130") == [st.rex, st.bella]
    assert found(StudyDate="-20260131") == [st.bella]
    assert found(StudyDate="20261201-") == [st.max]
    assert found(StudyTime="10-1016") == [st.max, st.rex, st.bella]
    assert found(StudyTime="1100-") == []
    assert found(StudyInstanceUID=f"{st.bella},{st.max}") == [st.max, st.bella]
    assert found(StudyInstanceUID=f"{st.rex}\\{st.max}") == [st.max, st.rex]
    assert found(ModalitiesInStudy="CT") == [st.bella]
    assert found(**{"00080061": "us,dx"}) == [st.max, st.rex]
    assert found(limit="1", offset="1") == [st.rex]
    assert found(offset="3") == [] and found(limit="1000000000") == _uids(r)
    assert found(PatientID="", includefield="00081030,PatientAge") == _uids(r)

    ignored = client.get("/dicomweb/studies", params={"Modality": "CT"})
    assert _uids(ignored) == _uids(r)  # a series attribute: not matched on at study level
    assert "Modality" in ignored.headers["warning"]


def test_series_and_instances(hub: Hub, client: TestClient) -> None:
    st = _store(hub, client)
    r = client.get(f"/dicomweb/studies/{st.rex}/series")
    assert r.status_code == 200 and len(r.json()) == 1
    series = r.json()[0]
    assert _value(series, "0020000E") == st.rex_series and _value(series, "00080060") == "DX"
    assert _value(series, "00200011") == 1 and _value(series, "00201209") == 2
    assert _value(series, "00081190") == (
        f"http://testserver/dicomweb/studies/{st.rex}/series/{st.rex_series}"
    )
    assert "00100010" not in series  # study attributes only when asked for
    asked = client.get(f"/dicomweb/studies/{st.rex}/series", params={"includefield": "all"})
    assert _value(asked.json()[0], "00100010") == {"Alphabetic": "Smith^Rex"}

    r = client.get(f"/dicomweb/studies/{st.rex}/series/{st.rex_series}/instances")
    got = r.json()
    assert [_value(i, "00080018") for i in got] == st.rex_sops
    assert [_value(i, "00200013") for i in got] == [1, 2]
    assert _value(got[0], "00280010") == 16 and _value(got[0], "00280011") == 24
    assert _value(got[0], "00080016") == sf.DX
    assert _value(got[0], "00081190").endswith(
        f"/studies/{st.rex}/series/{st.rex_series}/instances/{st.rex_sops[0]}"
    )
    assert len(client.get(f"/dicomweb/studies/{st.rex}/instances").json()) == 2

    everywhere = client.get("/dicomweb/series", params={"Modality": "CT"}).json()
    assert [_value(s, "0020000D") for s in everywhere] == [st.bella]
    assert _value(everywhere[0], "00100010") == {"Alphabetic": "Jones^Bella"}
    one = client.get("/dicomweb/instances", params={"SOPInstanceUID": st.rex_sops[1]}).json()
    assert [_value(i, "00200013") for i in one] == [2]
    assert client.get(f"/dicomweb/studies/{generate_uid()}/series").json() == []

    # Indexed before migration 0012: no numbers or size known, none answered.
    order = sf.place(client, placer_order_number="ORD-2", accession_number="A2002")
    old = client.get(f"/dicomweb/studies/{sf.indexed_study(hub, order)}/instances").json()
    assert len(old) == 2 and not {"00200013", "00280010", "00280011"} & set(old[0])


def test_share_sees_one_study_and_roles(hub: Hub, client: TestClient) -> None:
    st = _store(hub, client)
    with hub.db.session() as s:
        _, token = links.create_share(s, st.rex, 1, "test")
    anon = {"Authorization": ""}
    root = f"/shared/{token}/dicomweb"
    r = client.get(f"{root}/studies", headers=anon)
    assert _uids(r) == [st.rex]
    assert _value(r.json()[0], "00081190") == f"http://testserver{root}/studies/{st.rex}"
    assert client.get(f"{root}/studies?PatientID=P-9", headers=anon).json() == []
    assert _uids(client.get(f"{root}/series", headers=anon)) == [st.rex]
    assert client.get(f"{root}/studies/{st.bella}/series", headers=anon).status_code == 404
    assert client.get(f"/shared/{token}x/dicomweb/studies", headers=anon).status_code == 404

    assert client.get("/dicomweb/studies", headers=anon).status_code == 401
    desk = {"Authorization": f"Bearer {key_for(hub, 'frontdesk')}"}
    assert client.get("/dicomweb/studies", headers=desk).status_code == 403
    integration = {"Authorization": f"Bearer {key_for(hub, 'integration')}"}
    assert len(client.get("/dicomweb/studies", headers=integration).json()) == 3


def test_bad_queries_are_400_naming_the_fault(
    hub: Hub, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _store(hub, client)
    bad = {
        "limit=abc": "limit",
        "limit=-1": "limit",
        "limit=0": "limit",
        "offset=-5": "offset",
        "limit=1&limit=2": "limit",
        "Bogus=1": "Bogus",
        "0010002=x": "0010002",
        "PatientID=a&00100020=b": "00100020",
        "StudyDate=2026-01-01x": "StudyDate",
        "StudyDate=20261399": "StudyDate",
        "StudyDate=20261201-20261101": "StudyDate",
        "StudyTime=2561": "StudyTime",
        "StudyInstanceUID=../../etc": "StudyInstanceUID",
        "ModalitiesInStudy=%3Cx%3E": "ModalitiesInStudy",
        "includefield=NotAKeyword": "NotAKeyword",
        f"PatientName={'x' * 300}": "PatientName",
        "PatientID=P%00": "PatientID",
        "Bogus%00=1": "Bogus",
    }
    for query, named in bad.items():
        r = client.get(f"/dicomweb/studies?{query}")
        assert r.status_code == 400 and named in r.json()["detail"], (query, r.text)
    for path in ("1.2.abc", "1." + "2" * 70, "%2E%2E", "1.2%2F..%2F3"):
        r = client.get(f"/dicomweb/studies/{path}/series")
        assert r.status_code in (400, 404), (path, r.text)
    r = client.get(f"/dicomweb/studies/{st.rex}/series/x.y/instances")
    assert r.status_code == 400 and "series" in r.json()["detail"]
    assert client.get("/dicomweb/studies", headers={"Accept": "application/xml"}).status_code == 406

    monkeypatch.setattr(qido_query, "DEFAULT_LIMIT", 2)
    monkeypatch.setattr(qido_query, "MAX_LIMIT", 2)
    page = client.get("/dicomweb/studies")
    assert len(page.json()) == 2
    assert "Additional results can be requested" in page.headers["warning"]
    capped = client.get("/dicomweb/studies?limit=50")
    assert len(capped.json()) == 2 and "warning" in capped.headers
    asked = client.get("/dicomweb/studies?limit=2")  # the client knows to page on
    assert len(asked.json()) == 2 and "warning" not in asked.headers


def test_dicomweb_client_searches_a_served_hub(served_hub: ServedHub) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = [
        sf.instance(study_uid=study, series_uid=series, InstanceNumber=str(n), rows=8)
        for n in (1, 2, 3)
    ]
    other = sf.instance(patient_id="P-1", patient_name="Jones^Bella", modality="CT")
    other.SOPClassUID = other.file_meta.MediaStorageSOPClassUID = sf.CT
    assert sf.send(served_hub.dicom, [*datasets, other]) == [0, 0, 0, 0]
    web = DICOMwebClient(
        url=f"{served_hub.url}/dicomweb",
        headers={"Authorization": f"Bearer {served_hub.key}"},
    )
    found = web.search_for_studies(search_filters={"PatientName": "smith*"}, fields=["all"])
    assert [f["0020000D"]["Value"][0] for f in found] == [study]
    assert found[0]["00201208"]["Value"] == [3]
    assert len(web.search_for_studies(limit=1, offset=1)) == 1
    assert web.search_for_studies(search_filters={"ModalitiesInStudy": "MR"}) == []
    got = web.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in got] == [series]
    inst = web.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert [i["00200013"]["Value"][0] for i in inst] == [1, 2, 3]
    # dicomweb-client sends ``Host`` without the port, and RetrieveURL follows the Host.
    assert inst[0]["00081190"]["Value"][0].startswith("http://127.0.0.1")
    assert inst[0]["00081190"]["Value"][0].endswith(
        f"/dicomweb/studies/{study}/series/{series}/instances/{datasets[0].SOPInstanceUID}"
    )
