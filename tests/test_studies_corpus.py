"""A corpus of messy, realistic arrivals through the real ingest path (both DBs).

The one property that matters: no study is ever attached to the wrong order.
Every case names the order it must attach to, or None (it must wait).
"""

from __future__ import annotations

import pydicom
from fastapi.testclient import TestClient

from hub.context import Hub
from tests import study_factory as sf
from tests.study_factory import paths, place


def _order(client: TestClient, key: str, pid: str, animal: str, owner: str, **kw: str) -> dict:
    return place(
        client,
        placer_order_number=f"ORD-{key}",
        accession_number=f"A{key}",
        patient={"id": pid, "name": animal, "species": kw.pop("species", "canine")},
        owner={"last_name": owner},
        **kw,
    )


def _ingest(hub: Hub, **kw: str) -> str:
    ds = sf.instance(**kw)  # type: ignore[arg-type]
    sf.store(hub, ds)
    return ds.StudyInstanceUID


def test_nothing_is_attached_to_the_wrong_order(hub: Hub, client: TestClient) -> None:
    o = {
        "rex": _order(client, "100", "P-100", "Rex", "Smith"),
        "bella": _order(client, "101", "P-101", "Bella", "Jones", modality="US"),
        "tiger1": _order(client, "102", "P-102", "Tiger", "Müller", species="cat"),
        "tiger2": _order(client, "103", "P-103", "Tiger", "Müller", species="cat"),
        "max": _order(client, "200", "P-200", "Max", "Weber"),
        "luna1": _order(client, "300", "P-300", "Luna", "Brown"),
        "luna2": _order(client, "301", "P-300", "Luna", "Brown"),
    }
    cases = [
        # (study attributes, expected order key or None, expected reason/method)
        (dict(accession="A100", patient_id="P-100", patient_name="SMITH^REX"), "rex", "accession"),
        # Rex's accession on images keyed in for Bella: refused.
        (dict(accession="A100", patient_id="P-101", patient_name="Jones^Bella"), None, "conflict"),
        # A typo in the animal name: a person decides.
        (
            dict(patient_id="P-101", patient_name="Jones^Bela", modality="US", sop_class=sf.US),
            None,
            "no_match",
        ),
        # Two cats with the same name and owner: the patient id tells them apart...
        (dict(patient_id="P-102", patient_name="Mueller^Tiger"), "tiger1", "patient_day"),
        # ...and without one nothing may be chosen.
        (dict(patient_id="", patient_name="Müller^Tiger"), None, "no_match"),
        # The same dog under a second (duplicate) patient id: not attached to P-200's order.
        (dict(patient_id="P-201", patient_name="Weber^Max"), None, "no_match"),
        # Two open orders fit: two candidates, no choice.
        (dict(patient_id="P-300", patient_name="Brown^Luna"), None, "ambiguous"),
        # Device used the worklist's study UID but lost the patient id: trusted.
        (
            dict(
                study_uid=o["bella"]["study_instance_uid"],
                patient_id="",
                modality="US",
                sop_class=sf.US,
            ),
            "bella",
            "study_uid",
        ),
        # Keyed in with nothing but an animal name.
        (dict(patient_id="", patient_name="^Rex"), None, "no_match"),
        # A mistyped accession that matches nothing falls through to patient + day.
        (
            dict(accession="A10O", patient_id="P-100", patient_name="Smith^Rex"),
            "rex",
            "patient_day",
        ),
        # Right patient and name, wrong modality for the order.
        (
            dict(patient_id="P-100", patient_name="Smith^Rex", modality="US", sop_class=sf.US),
            None,
            "no_match",
        ),
    ]
    results = []
    for attrs, _, _ in cases:
        results.append(_ingest(hub, **attrs))  # type: ignore[arg-type]

    checked = 0
    for (attrs, want, how), uid in zip(cases, results, strict=True):
        body = client.get(f"/api/v1/studies/{uid}").json()
        expected_id = o[want]["id"] if want else None
        assert body["order_id"] == expected_id, (attrs, body)
        if want:
            assert body["match_method"] == how
            stored = paths(hub, uid)
            assert len(stored) == 1 and body["instance_count"] == 1
            for path in stored:  # coerced headers name the right animal
                header = pydicom.dcmread(path)
                assert header.PatientID == o[want]["patient"]["id"]
                assert header.AccessionNumber == o[want]["accession_number"]
            checked += 1
        else:
            assert body["unmatched_reason"] == how, (attrs, body)

    assert checked == sum(1 for _, want, _ in cases if want)  # every matched study's files

    by_uid = dict(zip(results, cases, strict=True))
    # The waiting studies offer the orders a person would look at first.
    tigers = next(u for u, c in by_uid.items() if c[0].get("patient_name") == "Müller^Tiger")
    cands = [c["order_id"] for c in client.get(f"/api/v1/studies/{tigers}").json()["candidates"]]
    assert set(cands[:2]) == {o["tiger1"]["id"], o["tiger2"]["id"]}
    dup = next(u for u, c in by_uid.items() if c[0].get("patient_id") == "P-201")
    cands = [c["order_id"] for c in client.get(f"/api/v1/studies/{dup}").json()["candidates"]]
    assert cands[0] == o["max"]["id"]
    typo = next(u for u, c in by_uid.items() if c[0].get("patient_name") == "Jones^Bela")
    cands = [c["order_id"] for c in client.get(f"/api/v1/studies/{typo}").json()["candidates"]]
    assert cands[0] == o["bella"]["id"]
