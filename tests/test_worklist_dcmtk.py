"""The worklist with DCMTK: echoscu/findscu against `vethub serve`, and wlmscpfs as a referee."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from hub.context import Hub
from tests.harness import ServedHub
from tests.order_corpus import gen_orders, write_worklist_file
from tests.worklist_scu import accessions, find, findscu, identifier, place, running_door

TODAY = date.today()
DA = TODAY.strftime("%Y%m%d")


def test_echoscu_and_findscu_against_vethub_serve(served_hub: ServedHub, tmp_path: Path) -> None:
    bodies = gen_orders(60, seed=11, day=TODAY.isoformat())
    with served_hub.api() as api:
        for body in bodies:
            assert api.post("/api/v1/orders", json=body).status_code == 201
        r = api.put("/api/v1/modalities/OLDDX", json={"character_set": "ISO_IR 100"})
        assert r.status_code in (200, 201), r.text
        # Once a device is registered, unregistered calling AEs are refused (first-run mode over).
        for ae in ("ECHOSCU", "FINDSCU"):
            assert api.put(f"/api/v1/modalities/{ae}", json={}).status_code in (200, 201)

    echo = subprocess.run(
        ["echoscu", "-aet", "ECHOSCU", "-aec", served_hub.ae_title, "127.0.0.1",
         str(served_hub.dicom)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    wrong = subprocess.run(
        ["echoscu", "-aet", "ECHOSCU", "-aec", "WRONG", "127.0.0.1", str(served_hub.dicom)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # Issue #9: refused with A-ASSOCIATE-RJ, called AE title not recognised.
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout, wrong.stderr

    station = bodies[0]["station_ae_title"]
    expected = {
        b["accession_number"]
        for b in bodies
        if b["station_ae_title"] == station and b["scheduled_start"].startswith(TODAY.isoformat())
    }
    keys = [
        "AccessionNumber",
        "PatientName",
        "PatientID",
        "PatientSpeciesDescription",
        "PatientSexNeutered",
        "ResponsiblePerson",
        "ScheduledProcedureStepSequence[0].Modality",
        f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={station}",
        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={DA}",
    ]
    proc, answers = findscu(served_hub.dicom, keys, tmp_path / "utf8", aec=served_hub.ae_title)
    assert proc.returncode == 0, proc.stderr
    assert accessions(answers) == expected
    by_acc = {b["accession_number"]: b for b in bodies}
    for a in answers:
        body = by_acc[str(a.AccessionNumber)]
        owner = body["owner"]["last_name"] or body["owner"]["organization"]
        assert str(a.PatientName) == f"{owner}^{body['patient']['name']}"
        assert a.SpecificCharacterSet == "ISO_IR 192"
        assert "PatientBirthDate" not in a

    # a registered old device gets Latin-1, transliterated where Latin-1 has no letter
    everything = ["AccessionNumber", "PatientName"]
    proc, answers = findscu(
        served_hub.dicom, everything, tmp_path / "latin1", aet="OLDDX", aec=served_hub.ae_title
    )
    assert proc.returncode == 0, proc.stderr
    assert answers and all(a.SpecificCharacterSet == "ISO_IR 100" for a in answers)
    names = {str(a.PatientName) for a in answers}
    assert any("ü" in n or "ñ" in n.lower() or "ø" in n.lower() for n in names), names
    assert "Ł" not in "".join(names)

    # SIGTERM: the DICOM door stops with the rest, cleanly (uvicorn re-raises the signal)
    assert served_hub.stop() in (0, -15)
    assert "vethub stopped" in served_hub.log()
    assert "door did not stop cleanly" not in served_hub.log()
    assert "Traceback" not in served_hub.log()


# -- differential: the same items through DCMTK wlmscpfs --------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def referee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[dict], int]]:
    """wlmscpfs serving the .wl files of 150 generated orders."""
    exe = shutil.which("wlmscpfs")
    assert exe, "DCMTK wlmscpfs is required (apt-get install dcmtk)"
    root = tmp_path_factory.mktemp("wlm")
    bodies = gen_orders(150, seed=5, day=TODAY.isoformat())
    wlm = root / "WLM"
    wlm.mkdir()
    (wlm / "lockfile").touch()  # wlmscpfs serves a folder only when it holds one
    for body in bodies:
        write_worklist_file(body, wlm)
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "-dfp", str(root), "-dfr", "-csk", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("wlmscpfs did not start")
    yield bodies, port
    proc.terminate()
    proc.wait(10)


def _day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).strftime("%Y%m%d")


QUERIES = [
    {"sps": {"ScheduledStationAETitle": "DX_ROOM1", "ScheduledProcedureStepStartDate": _day(0)}},
    {"sps": {"ScheduledStationAETitle": "US_MAIN", "ScheduledProcedureStepStartDate": ""}},
    {"sps": {"ScheduledProcedureStepStartDate": f"{_day(-1)}-{_day(1)}"}},
    {"sps": {"ScheduledProcedureStepStartDate": f"{_day(5)}-"}},
    {"sps": {"ScheduledProcedureStepStartDate": f"-{_day(-20)}", "Modality": "CT"}},
    {
        "sps": {
            "ScheduledProcedureStepStartDate": f"{_day(-3)}-{_day(3)}",
            # a closed time range: with an open one ("1200-") wlmscpfs 3.6.7 was
            # seen to drop every item of the range's last day
            "ScheduledProcedureStepStartTime": "1200-1500",
        }
    },
    {"sps": {"Modality": "MR"}},
    {"keys": {"PatientName": "Mül*"}},
    {"keys": {"PatientName": "Sch*"}},
    {"keys": {"PatientName": "*^B?lla"}},
    {"keys": {"AccessionNumber": "A0500000042"}},
    {"keys": {"PatientID": "P-000001"}},  # wlmscpfs has no wildcards for PatientID
]


@pytest.mark.parametrize("spec", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_same_matches_as_wlmscpfs(hub: Hub, referee: tuple[list[dict], int], spec: dict) -> None:
    bodies, wlm_port = referee
    place(hub, bodies)
    hub.settings.worklist_max_age_days = 0  # wlmscpfs has no cut-off
    keys = {"AccessionNumber": "", "PatientName": "", "PatientID": "", **spec.get("keys", {})}
    sps = {"ScheduledStationAETitle": "", "Modality": "", **spec.get("sps", {})}
    q = identifier(sps=sps, **keys)
    theirs, status, _ = find(wlm_port, q, aec="WLM")
    assert status == 0x0000
    with running_door(hub) as port:
        ours, status, _ = find(port, q)
    assert status == 0x0000
    assert accessions(ours) == accessions(theirs)
    assert len(ours) == len(theirs)
