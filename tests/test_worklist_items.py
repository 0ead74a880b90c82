"""Worklist items: veterinary content, requested keys only, character sets, the encoder."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from sqlalchemy import select

from hub.context import Hub
from hub.models import Order
from tests.worklist_scu import identifier, order, place
from worklist import charset
from worklist.items import EncodingCache, build_item, encode
from worklist.query import parse


def decode(data: bytes, implicit: bool = False) -> Dataset:
    ds = read_dataset(BytesIO(data), is_implicit_VR=implicit, is_little_endian=True)
    ds.decode()
    return ds


def row(hub: Hub, accession: str) -> Order:
    with hub.db.read_session() as s:
        return s.scalars(select(Order).where(Order.accession_number == accession)).one()


def full(hub: Hub, accession: str, cs: str = charset.UTF8, implicit: bool = False) -> Dataset:
    return decode(encode(build_item(row(hub, accession)), None, cs, implicit), implicit)


@pytest.fixture
def vets(hub: Hub) -> Hub:
    place(
        hub,
        [
            order(1),
            order(
                2,
                owner={"last_name": None, "first_name": None, "organization": "Tierheim Süd"},
                patient={"name": "Łatka", "species": "Felis catus", "breed": None, "sex": None},
                priority="stat",
                procedure={"code": None, "description": "Abdomen"},
            ),
            order(3, patient={"species": "axolotl", "weight_kg": None, "neutered": None}),
        ],
    )
    return hub


def test_veterinary_attributes(vets: Hub) -> None:
    ds = full(vets, "A1")
    assert ds.PatientName == "Müller^Rex"
    assert ds.PatientID == "P-1" and ds.IssuerOfPatientID == "pims-main"
    assert ds.PatientSex == "M" and ds.PatientBirthDate == "20190402"
    assert float(ds.PatientWeight) == 31.5
    assert ds.PatientSpeciesDescription
    code = ds.PatientSpeciesCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("448771007", "SCT")
    assert ds.PatientBreedDescription == "Labrador Retriever"
    assert ds.PatientSexNeutered == "ALTERED"
    assert ds.ResponsiblePerson == "Müller^Anna" and ds.ResponsiblePersonRole == "OWNER"
    assert ds.ResponsibleOrganization == ""
    assert ds.ReferringPhysicianName == "Doe^Jane"
    assert ds.RequestedProcedurePriority == "ROUTINE"
    assert ds.RequestedProcedureID == "A1" and ds.AccessionNumber == "A1"
    assert ds.RequestedProcedureDescription == "Thorax, 2 views"
    assert ds.RequestedProcedureCodeSequence[0].CodeValue == "XR-THORAX"
    assert ds.StudyInstanceUID == row(vets, "A1").study_instance_uid
    sps = ds.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "DX_ROOM1" and sps.Modality == "DX"
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        "20261127",
        "143000",
    )
    assert sps.ScheduledProcedureStepID == "A1"
    assert sps.ScheduledProcedureStepStatus == "SCHEDULED"
    assert sps.ScheduledProcedureStepDescription == "Thorax, 2 views"
    assert sps.ScheduledProcedureStepLocation == "main"


def test_organisation_owner_stat_and_unknown_species(vets: Hub) -> None:
    ds = full(vets, "A2")
    assert ds.PatientName == "Tierheim Süd^Łatka"
    assert ds.ResponsiblePerson == "" and ds.ResponsiblePersonRole == ""
    assert ds.ResponsibleOrganization == "Tierheim Süd"
    assert ds.PatientSpeciesCodeSequence[0].CodeValue == "448169003"
    assert ds.PatientSex == "O"
    assert ds.RequestedProcedurePriority == "STAT"
    assert ds.RequestedProcedureID and ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    axolotl = full(vets, "A3")
    assert axolotl.PatientSpeciesDescription == "axolotl"
    assert len(axolotl.PatientSpeciesCodeSequence) == 0
    assert "PatientWeight" not in axolotl and "PatientSexNeutered" not in axolotl


def test_in_progress_is_started(vets: Hub) -> None:
    from hub.services import orders

    with vets.db.session() as s:
        orders.transition(s, s.get(Order, row(vets, "A1").id), "in_progress")
    sps = full(vets, "A1").ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStatus == "STARTED"


def test_only_requested_keys(vets: Hub) -> None:
    q = identifier(
        PatientName="",
        PatientSexNeutered="",
        PatientComments="",  # a key the item has no value for comes back empty
        sps={"Modality": "", "ScheduledProcedureStepStartDate": ""},
    )
    q.PatientSpeciesCodeSequence = []
    spec = parse(q, vets.db.engine.dialect.name).spec
    ds = decode(encode(build_item(row(vets, "A1")), spec, charset.UTF8, False))
    assert [e.keyword for e in ds] == [
        "SpecificCharacterSet",
        "PatientName",
        "PatientSpeciesCodeSequence",
        "PatientSexNeutered",
        "PatientComments",
        "ScheduledProcedureStepSequence",
    ]
    assert ds.PatientComments == ""
    assert ds.PatientSpeciesCodeSequence[0].CodeMeaning  # empty sequence asks for everything
    assert [e.keyword for e in ds.ScheduledProcedureStepSequence[0]] == [
        "Modality",
        "ScheduledProcedureStepStartDate",
    ]


@pytest.mark.parametrize(
    ("cs", "name", "person"),
    [
        (charset.UTF8, "Müller^Rex", "Müller^Anna"),
        (charset.LATIN1, "Müller^Rex", "Müller^Anna"),
        (charset.ASCII, "Mueller^Rex", "Mueller^Anna"),
    ],
)
def test_character_sets(vets: Hub, cs: str, name: str, person: str) -> None:
    data = encode(build_item(row(vets, "A1")), None, cs, False)
    raw_name = name.encode("latin-1" if cs == charset.LATIN1 else "utf-8")
    assert raw_name in data
    ds = decode(data)
    assert ds.get("SpecificCharacterSet") == charset.specific_character_set(cs)
    assert ds.PatientName == name and ds.ResponsiblePerson == person


def test_latin1_transliterates_what_it_cannot_show(vets: Hub) -> None:
    ds = decode(encode(build_item(row(vets, "A2")), None, charset.LATIN1, False))
    assert ds.PatientName == "Tierheim Süd^Latka"


@pytest.mark.parametrize("implicit", [False, True])
def test_encoding_equals_pydicom(vets: Hub, implicit: bool) -> None:
    """Our bytes decode to the same data set that pydicom itself would encode."""
    ours = full(vets, "A1", implicit=implicit)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ours)
    assert decode(fp.getvalue(), implicit) == ours


def test_charset_names() -> None:
    assert charset.normalise(None) == charset.UTF8
    assert charset.normalise("iso_ir 100") == charset.LATIN1
    assert charset.normalise("ISO_IR 6") == charset.ASCII
    assert charset.normalise("GB18030") == charset.UTF8


def test_cache_is_bounded() -> None:
    cache = EncodingCache(max_entries=2)
    for n in range(3):
        cache.put((n,), b"x")
    assert cache.get((0,)) is None and cache.get((2,)) == b"x" and len(cache) == 2
