"""The worklist as clinics' devices meet it (issue #12): the query's character set,
modality aliases, and the patient details an order carries (alerts, microchip,
age, reason, requesting vet), asked by pynetdicom and by DCMTK findscu.

One hub and one DICOM door per database for the module; the orders are placed once.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes

from hub.context import Hub
from hub.mappings import MappingError, default_mappings_dir, load_mappings
from hub.services import modalities
from tests.conftest import BACKENDS
from tests.harness import empty_tables, make_settings
from tests.worklist_scu import find, findscu, identifier, order, place, running_door
from worklist import charset as charsets
from worklist.items import T, encode_answer, patient_age

TODAY = date.today()
START = f"{TODAY.isoformat()}T10:00:00"
DA = TODAY.strftime("%Y%m%d")

ORDERS = [
    # Müller fits Latin-1; all the details a practice system may send.
    order(
        1,
        scheduled_start=START,
        reason="lameness left fore",
        patient={
            "birth_date": "2019-04-02",
            "alerts": ["caution: bites", "epileptic"],
            "microchip": "276098106123456",
            "other_ids": [{"id": "T-55", "issuer": "SKG tattoo", "type": "TEXT"}],
        },
    ),
    # Łukasiewicz does not fit Latin-1.
    order(
        2, scheduled_start=START, owner={"last_name": "Łukasiewicz"}, patient={"breed": "Wäller"}
    ),
    # A phosphor-plate order among the DX ones, and an ultrasound.
    order(3, scheduled_start=START, modality="CR", owner={"last_name": "Meier"}),
    order(4, scheduled_start=START, modality="US", station_ae_title="US_ROOM1"),
    # Young animals: ages in months and days.
    order(5, scheduled_start=START, patient={"birth_date": f"{TODAY.year - 1}-{TODAY:%m-%d}"}),
]
DOG, CAT = "448771007", "448169003"
ALIASES, BREEDS = "modality_aliases.yaml", "breeds.yaml"
DEVICES = {
    "LEGACY": {},  # registered without a character set: UTF-8 unless the query says otherwise
    "CRREADER": {"modality": "CR", "scope_modality": True},
    "FINDSCU": {},
}


@pytest.fixture(scope="module", params=BACKENDS)
def door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Hub, int]]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'vethub.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    hub = Hub.open(make_settings(tmp, url), upgrade=True)
    if request.param == "postgresql":
        empty_tables(hub.db)
    hub.settings.worklist_max_age_days = 0
    place(hub, ORDERS)
    with hub.db.session() as s:
        for ae, values in DEVICES.items():
            modalities.put(s, ae, values, actor="test")
    try:
        with running_door(hub) as port:
            yield hub, port
    finally:
        hub.close()


def ask(port: int, aet: str = "LEGACY", charset: str | None = None, **sps: str) -> list[Dataset]:
    q = identifier(
        charset=charset,
        AccessionNumber="",
        PatientName="",
        sps={"Modality": "", "ScheduledProcedureStepStartDate": DA, **sps},
    )
    answers, status, _ = find(port, q, aet=aet)
    assert status == 0x0000
    return answers


def by_accession(answers: list[Dataset]) -> dict[str, Dataset]:
    return {str(a.AccessionNumber): a for a in answers}


def test_latin1_query_is_answered_in_latin1_where_the_answer_fits(door: tuple[Hub, int]) -> None:
    _, port = door
    answers = by_accession(ask(port, charset="ISO_IR 100"))
    assert answers["A1"].SpecificCharacterSet == "ISO_IR 100"
    assert str(answers["A1"].PatientName) == "Müller^Rex"
    # Ł has no Latin-1 letter: that answer goes out in the device's set, intact.
    assert answers["A2"].SpecificCharacterSet == "ISO_IR 192"
    assert str(answers["A2"].PatientName) == "Łukasiewicz^Rex"
    # No character set in the query: the device's setting, as before.
    assert {a.SpecificCharacterSet for a in ask(port)} == {"ISO_IR 192"}


def test_findscu_latin1_query_gets_latin1_umlauts(door: tuple[Hub, int], tmp_path: Path) -> None:
    _, port = door
    keys = [
        "SpecificCharacterSet=ISO_IR 100",
        "AccessionNumber=A1",
        "PatientName",
        "ScheduledProcedureStepSequence[0].Modality",
    ]
    proc, answers = findscu(port, keys, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [a.SpecificCharacterSet for a in answers] == ["ISO_IR 100"]
    assert str(answers[0].PatientName) == "Müller^Rex"


def test_cr_query_finds_dx_orders_answered_as_cr(door: tuple[Hub, int]) -> None:
    _, port = door
    cr = by_accession(ask(port, Modality="CR"))
    assert set(cr) == {"A1", "A2", "A3", "A5"}
    assert {a.ScheduledProcedureStepSequence[0].Modality for a in cr.values()} == {"CR"}
    dx = by_accession(ask(port, Modality="DX"))
    assert set(dx) == set(cr)
    assert {a.ScheduledProcedureStepSequence[0].Modality for a in dx.values()} == {"DX"}
    assert set(by_accession(ask(port, Modality="US"))) == {"A4"}
    assert set(by_accession(ask(port, Modality="C*"))) == {"A3"}  # wildcards: no aliases
    # A device scoped to its modality sees the aliases' orders too, under its own code.
    scoped = ask(port, aet="CRREADER")
    assert {str(a.AccessionNumber) for a in scoped} == set(cr)
    assert {a.ScheduledProcedureStepSequence[0].Modality for a in scoped} == {"CR"}


def test_findscu_cr_query_finds_dx_orders(door: tuple[Hub, int], tmp_path: Path) -> None:
    _, port = door
    keys = [
        "AccessionNumber",
        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={DA}",
        "ScheduledProcedureStepSequence[0].Modality=CR",
    ]
    proc, answers = findscu(port, keys, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {str(a.AccessionNumber) for a in answers} == {"A1", "A2", "A3", "A5"}
    assert {a.ScheduledProcedureStepSequence[0].Modality for a in answers} == {"CR"}


DETAILS = dict(
    MedicalAlerts="",
    OtherPatientIDsSequence=[],
    PatientAge="",
    PatientBirthDate="",
    ReasonForTheRequestedProcedure="",
    RequestingPhysician="",
    ReferencedStudySequence=[],
    PatientBreedCodeSequence=[],
)


def test_order_details_fill_the_worklist_item(door: tuple[Hub, int]) -> None:
    _, port = door
    q = identifier(AccessionNumber="", **DETAILS)
    answers, status, _ = find(port, q, aet="LEGACY")
    assert status == 0x0000
    a = by_accession(answers)
    rex = a["A1"]
    assert list(rex.MedicalAlerts) == ["caution: bites", "epileptic"]
    chip, tattoo = rex.OtherPatientIDsSequence
    assert (chip.PatientID, chip.TypeOfPatientID) == ("276098106123456", "RFID")
    assert (tattoo.PatientID, tattoo.IssuerOfPatientID, tattoo.TypeOfPatientID) == (
        "T-55",
        "SKG tattoo",
        "TEXT",
    )
    born = date(2019, 4, 2)
    years = TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
    assert rex.PatientAge == f"{years:03d}Y"
    assert rex.ReasonForTheRequestedProcedure == "lameness left fore"
    assert str(rex.RequestingPhysician) == "Doe^Jane"
    (breed,) = rex.PatientBreedCodeSequence  # "Labrador Retriever", mappings/breeds.yaml
    assert (breed.CodeValue, breed.CodingSchemeDesignator) == ("62137007", "SCT")
    assert breed.CodeMeaning == "Labrador retriever dog breed"
    assert a["A5"].PatientAge == "012M"
    # An order without the details still answers, the keys present and empty.
    plain = a["A2"]
    for keyword in ("MedicalAlerts", "ReasonForTheRequestedProcedure"):
        assert keyword in plain and not plain[keyword].value
    assert plain.OtherPatientIDsSequence == []
    assert plain.ReferencedStudySequence == []
    assert plain.PatientBreedCodeSequence == []  # a breed the catalogue does not know
    assert plain.PatientAge == rex.PatientAge  # same birth date as Rex


# -- the pieces, without a door ------------------------------------------------


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (date(2026, 11, 8), "20261129", "021D"),
        (date(2026, 10, 29), "20261129", "001M"),
        (date(2025, 12, 30), "20261129", "010M"),
        (date(2024, 11, 30), "20261129", "023M"),
        (date(2024, 11, 29), "20261129", "002Y"),
        (date(2022, 4, 2), "20261129", "004Y"),
        (date(2026, 11, 30), "20261129", ""),  # born after the appointment: a typo, no age
        (None, "20261129", ""),
    ],
)
def test_patient_age_in_dicom_as(born: date | None, on: str, age: str) -> None:
    assert patient_age(born, on) == age


@pytest.mark.parametrize(
    ("value", "charset"),
    [
        ("ISO_IR 100", "ISO_IR 100"),
        ("ISO_IR 6", "ASCII"),
        ("iso_ir 192", "ISO_IR 192"),
        ("ISO_IR 144", "ISO_IR 144"),
        ("", None),
        (None, None),
        (MultiValue(str, ["", "ISO 2022 IR 100"]), None),  # code extensions: not answered in
        ("ISO 2022 IR 87", None),
    ],
)
def test_the_query_character_set(value: object, charset: str | None) -> None:
    assert charsets.of_query(value) == charset


def test_an_ascii_query_gets_the_devices_set_for_an_umlaut() -> None:
    item = {T["PatientName"]: ("PN", "Müller^Rex")}
    spec = ((T["PatientName"], None),)
    plain = encode_answer(
        {T["PatientName"]: ("PN", "Smith^Rex")}, spec, "ASCII", "ISO_IR 192", True
    )
    assert b"ISO_IR" not in plain and b"Smith^Rex" in plain
    umlaut = encode_answer(item, spec, "ASCII", "ISO_IR 100", True)
    assert b"ISO_IR 100" in umlaut and "Müller".encode("latin-1") in umlaut


@pytest.mark.parametrize(
    ("name", "text", "fault"),
    [
        (ALIASES, "groups:\n  - [DX, XRAY]\n", "unknown DICOM modality 'XRAY'"),
        (ALIASES, "groups:\n  - [DX, CR]\n  - [CR, RG]\n", "CR is already in another group"),
        (ALIASES, "groups:\n  - [DX]\n", "at least two different modalities"),
        (ALIASES, "aliases: []\n", "groups"),
        (BREEDS, "breeds:\n  - {code: lab, meaning: Labrador}\n", "not a SNOMED CT concept id"),
        (
            BREEDS,
            "breeds:\n  - {code: '1234567', meaning: A, synonyms: [x]}\n"
            "  - {code: '7654321', meaning: B, synonyms: [X]}\n",
            "'X' of 'B' already names 'A'",
        ),
    ],
)
def test_a_broken_mapping_file_stops_the_start(
    tmp_path: Path, name: str, text: str, fault: str
) -> None:
    for kept in ("species.yaml", "procedures.yaml"):
        shutil.copy(default_mappings_dir() / kept, tmp_path / kept)
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match=re.escape(name)) as err:
        load_mappings(tmp_path)
    assert fault in str(err.value)


def test_aliases_and_breeds_shipped_and_absent(tmp_path: Path) -> None:
    shipped = load_mappings()
    assert shipped.modality_aliases.of("CR") == ("CR", "DX")
    assert shipped.breeds.resolve("Schäferhund", DOG).code == "42252000"  # type: ignore[union-attr]
    assert shipped.breeds.resolve("mixed", DOG).code == "132619000"  # type: ignore[union-attr]
    assert shipped.breeds.resolve("mixed", None) is None  # a dog's or a cat's?
    assert shipped.breeds.resolve("Labrador", CAT) is None
    for name in ("species.yaml", "procedures.yaml"):
        shutil.copy(default_mappings_dir() / name, tmp_path / name)
    old = load_mappings(tmp_path)
    assert old.modality_aliases.of("CR") == ("CR",)
    assert old.breeds.resolve("Labrador", DOG) is None


def test_shipped_breed_codes_are_dicom_cid_7480() -> None:
    cid = codes.CID7480
    known = {c.value: c.meaning for c in (getattr(cid, name) for name in cid.dir())}
    path = default_mappings_dir() / "breeds.yaml"
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["breeds"]
    assert entries
    for entry in entries:
        assert known.get(entry["code"]) == entry["meaning"], entry
