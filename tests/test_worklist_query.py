"""PS3.4 C.2.2.2 matching as SQL, run against real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from hub.context import Hub
from hub.models import Order
from hub.services import orders
from tests.worklist_scu import identifier, order, place
from worklist.query import QueryError, Scope, parse, statement

NOW = datetime.now().replace(microsecond=0)
TODAY = NOW.strftime("%Y-%m-%d")
YESTERDAY = (NOW - timedelta(days=1)).strftime("%Y-%m-%d")
TOMORROW = (NOW + timedelta(days=1)).strftime("%Y-%m-%d")


def da(iso: str) -> str:
    return iso.replace("-", "")


@pytest.fixture
def wl(hub: Hub) -> Hub:
    """A small worklist with the awkward cases the rules are about."""
    place(
        hub,
        [
            order(1, scheduled_start=f"{TODAY}T08:00:00"),
            order(
                2,
                owner={"last_name": "MULLER", "first_name": None},
                patient={"name": "Bella", "breed": None, "sex": "female", "neutered": False},
                scheduled_start=f"{TODAY}T10:30:00",
                priority="stat",
            ),
            order(
                3,
                owner={"last_name": "O'Brien"},
                patient={"name": "Tom", "species": "cat"},
                station_ae_title="US_ROOM1",
                modality="US",
                scheduled_start=f"{YESTERDAY}T16:00:00",
                site="north",
            ),
            order(
                4,
                owner={"last_name": None, "first_name": None, "organization": "Happy Paws Shelter"},
                patient={"name": "Max_1%", "sex": None, "neutered": None},
                scheduled_start=f"{TOMORROW}T07:45:00",
            ),
            order(5, owner={"last_name": "Smith"}, scheduled_start=f"{TOMORROW}T18:00:00"),
        ],
    )
    return hub


def run(hub: Hub, ds: Dataset, **kw: object) -> set[str]:
    query = parse(ds, hub.db.engine.dialect.name)
    stmt = statement(query, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    with hub.db.read_session() as s:
        return {row.accession_number for row in s.execute(stmt)}


def sps(**keys: object) -> Dataset:
    return identifier(AccessionNumber="", sps={"ScheduledStationAETitle": "", **keys})


ALL = {"A1", "A2", "A3", "A4", "A5"}


def test_universal_and_empty_sequence(wl: Hub) -> None:
    assert run(wl, identifier(AccessionNumber="")) == ALL
    assert run(wl, identifier(AccessionNumber="*", PatientName="**")) == ALL
    ds = identifier(AccessionNumber="")
    ds.ScheduledProcedureStepSequence = []
    assert run(wl, ds) == ALL


def test_single_value_and_wildcards(wl: Hub) -> None:
    assert run(wl, identifier(AccessionNumber="A3")) == {"A3"}
    assert run(wl, identifier(AccessionNumber="A?")) == ALL
    assert run(wl, identifier(AccessionNumber="a3")) == set()  # SH is case-sensitive
    assert run(wl, sps(ScheduledStationAETitle="US_*")) == {"A3"}
    assert run(wl, sps(ScheduledStationAETitle="DX_ROOM?")) == ALL - {"A3"}
    assert run(wl, sps(Modality="US")) == {"A3"}


def test_person_names_ignore_case_and_accents(wl: Hub) -> None:
    assert run(wl, identifier(PatientName="Müller^Rex")) == {"A1"}
    assert run(wl, identifier(PatientName="mül*")) == {"A1", "A2"}
    assert run(wl, identifier(PatientName="MULLER^BELLA^^^")) == {"A2"}
    assert run(wl, identifier(PatientName="*^Tom")) == {"A3"}
    assert run(wl, identifier(PatientName="Happy Paws*")) == {"A4"}
    assert run(wl, identifier(PatientName="Müller")) == set()  # single value: the whole name


def test_sql_special_characters_are_plain_text(wl: Hub) -> None:
    assert run(wl, identifier(PatientName="O'B*")) == {"A3"}
    assert run(wl, identifier(PatientName="*MAX_1%")) == {"A4"}
    assert run(wl, identifier(PatientName="*MAX_1_")) == set()  # '_' is no wildcard here
    assert run(wl, identifier(PatientName="%")) == set()
    assert run(wl, identifier(PatientName="*[A-Z]*")) == set()  # no GLOB classes either
    hostile = "x' OR '1'='1"
    assert run(wl, identifier(PatientID=hostile)) == set()
    assert run(wl, identifier(AccessionNumber="A1'; DROP TABLE orders; --")) == set()
    with wl.db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 5
    # the values are bound parameters, never part of the SQL text
    stmt = statement(parse(identifier(PatientID=hostile), wl.db.engine.dialect.name), now=NOW)
    assert hostile not in str(stmt.compile(dialect=wl.db.engine.dialect))


def test_date_ranges(wl: Hub) -> None:
    assert run(wl, sps(ScheduledProcedureStepStartDate=da(TODAY))) == {"A1", "A2"}
    assert run(wl, sps(ScheduledProcedureStepStartDate=f"{da(TODAY)}-")) == ALL - {"A3"}
    assert run(wl, sps(ScheduledProcedureStepStartDate=f"-{da(TODAY)}")) == {"A1", "A2", "A3"}
    both = f"{da(YESTERDAY)}-{da(TODAY)}"
    assert run(wl, sps(ScheduledProcedureStepStartDate=both)) == {"A1", "A2", "A3"}


def test_date_and_time_range_form_one_interval(wl: Hub) -> None:
    # yesterday 16:00 (A3) lies inside "yesterday 12:00 to today 09:00"; today 10:30 does not
    q = sps(
        ScheduledProcedureStepStartDate=f"{da(YESTERDAY)}-{da(TODAY)}",
        ScheduledProcedureStepStartTime="1200-0900",
    )
    assert run(wl, q) == {"A1", "A3"}
    # one day with a time range: just that window of the day
    q = sps(ScheduledProcedureStepStartDate=da(TODAY), ScheduledProcedureStepStartTime="0900-")
    assert run(wl, q) == {"A2"}
    # time alone: every day, that time of day
    assert run(wl, sps(ScheduledProcedureStepStartTime="-0800")) == {"A1", "A4"}
    assert run(wl, sps(ScheduledProcedureStepStartTime="1030")) == {"A2"}


def test_datetime_key(wl: Hub) -> None:
    q = sps(ScheduledProcedureStepStartDateTime=f"{da(TODAY)}0900-{da(TOMORROW)}08")
    assert run(wl, q) == {"A2", "A4"}


def test_uid_lists(wl: Hub) -> None:
    with wl.db.read_session() as s:
        uids = dict(s.execute(select(Order.accession_number, Order.study_instance_uid)).all())
    assert run(wl, identifier(StudyInstanceUID=[uids["A1"], uids["A4"]])) == {"A1", "A4"}
    assert run(wl, identifier(StudyInstanceUID=uids["A2"])) == {"A2"}
    with pytest.raises(QueryError):
        run(wl, identifier(StudyInstanceUID="1.2.*"))


def test_coded_values(wl: Hub) -> None:
    assert run(wl, identifier(RequestedProcedurePriority="STAT")) == {"A2"}
    assert run(wl, identifier(PatientSex="F")) == {"A2"}
    assert run(wl, identifier(PatientSex="O")) == {"A4"}
    assert run(wl, identifier(PatientSexNeutered="UNALTERED")) == {"A2"}
    assert run(wl, sps(ScheduledProcedureStepStatus="STARTED")) == set()
    with wl.db.session() as s:
        o = s.scalars(select(Order).where(Order.accession_number == "A5")).one()
        orders.transition(s, o, "in_progress")
    assert run(wl, sps(ScheduledProcedureStepStatus="STARTED")) == {"A5"}
    species = Dataset()
    species.CodeValue = "448169003"
    q = identifier(AccessionNumber="")
    q.PatientSpeciesCodeSequence = [species]
    assert run(wl, q) == {"A3"}


def test_empty_stored_value_never_matches(wl: Hub) -> None:
    assert run(wl, identifier(PatientBreedDescription="*")) == ALL  # universal
    assert run(wl, identifier(PatientBreedDescription="?*")) == ALL - {"A2"}
    assert run(wl, identifier(ResponsibleOrganization="?*")) == {"A4"}
    assert run(wl, sps(ScheduledPerformingPhysicianName="Doe*")) == set()
    assert run(wl, identifier(ResponsiblePersonRole="OWNER")) == ALL - {"A4"}


def test_only_open_orders_and_the_age_cut_off(wl: Hub) -> None:
    place(wl, [order(6, scheduled_start=(NOW - timedelta(days=10)).isoformat())])
    with wl.db.session() as s:
        orders.cancel(s, s.scalars(select(Order.id).where(Order.accession_number == "A5")).one())
    assert run(wl, identifier(AccessionNumber=""), max_age_days=7) == {"A1", "A2", "A3", "A4"}
    assert run(wl, identifier(AccessionNumber=""), max_age_days=0) == {"A1", "A2", "A3", "A4", "A6"}
    # the cut-off is measured in time, not whole days
    evening = datetime.fromisoformat(f"{TODAY}T20:00:00")
    found = run(wl, identifier(AccessionNumber=""), max_age_days=0.5, now=evening)
    assert found == {"A1", "A2", "A4"}  # A1 at 08:00 is exactly 12 hours old
    found = run(wl, identifier(AccessionNumber=""), max_age_days=0.5, now=evening.replace(second=1))
    assert found == {"A2", "A4"}


def test_scoping_applies_only_where_the_query_is_silent(wl: Hub) -> None:
    scope = Scope(station="US_ROOM1")
    assert run(wl, sps(), scope=scope) == {"A3"}
    assert run(wl, sps(ScheduledStationAETitle="DX_ROOM1"), scope=scope) == ALL - {"A3"}
    assert run(wl, identifier(AccessionNumber=""), scope=Scope(site="north")) == {"A3"}
    assert run(wl, identifier(AccessionNumber=""), scope=Scope(modality="US")) == {"A3"}
    window = Scope(date_window_days=0)
    assert run(wl, sps(), scope=window) == {"A1", "A2"}
    assert run(wl, sps(ScheduledProcedureStepStartDate=da(TOMORROW)), scope=window) == {"A4", "A5"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: sps(ScheduledProcedureStepStartDate="2026-11-27"),
        lambda: sps(ScheduledProcedureStepStartDate="20261127-20261128-20261129"),
        lambda: sps(ScheduledProcedureStepStartTime="25"),
        lambda: sps(ScheduledProcedureStepStartDate="yesterday"),
        lambda: identifier(StudyInstanceUID="1.2.3'--"),
    ],
)
def test_malformed_values_are_refused(hub: Hub, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryError) as err:
        parse(make(), hub.db.engine.dialect.name)
    assert err.value.status == 0xA900 and err.value.comment


def test_malformed_structure_is_refused(hub: Hub) -> None:
    ds = identifier(AccessionNumber="")
    ds.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(QueryError, match="at most one item"):
        parse(ds, hub.db.engine.dialect.name)
    wrong_vr = Dataset()
    wrong_vr.add_new(0x00400100, "LO", "not a sequence")
    with pytest.raises(QueryError):
        parse(wrong_vr, hub.db.engine.dialect.name)
