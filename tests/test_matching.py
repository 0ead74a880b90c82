"""The matching rules as pure functions: no DB, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.services.matching import OrderFacts, StudyFacts, animal_key, match_study


def order(id: int, **kw: str) -> OrderFacts:
    base = dict(
        accession_number=f"A{id}",
        study_instance_uid=f"1.2.3.{id}",
        patient_id="P-1",
        animal_name="Rex",
        owner_name="Smith",
        modality="DX",
        scheduled_date="20261127",
        status="scheduled",
    )
    base.update(kw)
    return OrderFacts(id=id, **base)  # type: ignore[arg-type]


def study(**kw: str) -> StudyFacts:
    base = dict(
        study_instance_uid="9.9.9",
        accession_number="",
        patient_id="P-1",
        patient_name="Smith^Rex",
        modality="DX",
        study_date="20261127",
    )
    base.update(kw)
    return StudyFacts(**base)  # type: ignore[arg-type]


def test_accession_first() -> None:
    m = match_study(study(accession_number="A2"), [order(1), order(2)])
    assert (m.order_id, m.method, m.reason) == (2, "accession", None)


def test_accession_refused_when_patient_id_differs() -> None:
    # The accession of Rex's order typed onto images keyed in for Bella.
    m = match_study(
        study(accession_number="A1", patient_id="P-2", patient_name="Jones^Bella"), [order(1)]
    )
    assert m.order_id is None and m.reason == "conflict"
    assert m.candidates[0].order_id == 1


def test_accession_with_empty_patient_id_matches() -> None:
    m = match_study(study(accession_number="A1", patient_id=""), [order(1)])
    assert m.method == "accession" and m.order_id == 1


def test_study_uid_second_and_refused_on_conflict() -> None:
    assert match_study(study(study_instance_uid="1.2.3.1"), [order(1)]).method == "study_uid"
    m = match_study(study(study_instance_uid="1.2.3.1", patient_id="P-7"), [order(1)])
    assert m.reason == "conflict"


def test_unknown_accession_falls_through_to_later_rules() -> None:
    m = match_study(study(accession_number="NOPE"), [order(1)])
    assert m.method == "patient_day" and m.order_id == 1


@pytest.mark.parametrize(
    "device_name",
    ["Smith^Rex", "SMITH^REX", "smith^rex", "Someone Else^Rex", "^R E X", "Smith^Rex^^^"],
)
def test_patient_day_name_agrees_ignoring_case_spacing_and_owner(device_name: str) -> None:
    m = match_study(study(patient_name=device_name), [order(1)])
    assert m.method == "patient_day" and m.order_id == 1


def test_accents_fold() -> None:
    assert animal_key("Bärli") == animal_key("BARLI") == animal_key("bar li")
    m = match_study(
        study(patient_name="Mueller^Barli"), [order(1, animal_name="Bärli", owner_name="Müller")]
    )
    assert m.order_id == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"patient_name": "Smith^Rexx"}, "no_match"),  # typo: a person decides
        ({"patient_name": "Rex"}, "no_match"),  # no given-name component
        ({"modality": "US"}, "no_match"),
        ({"study_date": "20261128"}, "no_match"),
        ({"patient_id": "P-9"}, "no_match"),
        ({"patient_id": ""}, "no_match"),
    ],
)
def test_patient_day_needs_every_part(change: dict, reason: str) -> None:
    m = match_study(study(**change), [order(1)])
    assert m.order_id is None and m.reason == reason


def test_patient_day_only_for_open_orders_and_can_be_switched_off() -> None:
    assert match_study(study(), [order(1, status="completed")]).order_id is None
    assert match_study(study(), [order(1, status="cancelled")]).order_id is None
    m = match_study(study(), [order(1)], patient_day=False)
    assert m.order_id is None and m.reason == "no_match"
    assert m.candidates[0].order_id == 1


def test_two_fitting_orders_are_two_candidates_not_a_choice() -> None:
    m = match_study(study(), [order(1), order(2), order(3, modality="US")])
    assert m.order_id is None and m.reason == "ambiguous"
    assert {c.order_id for c in m.candidates[:2]} == {1, 2}


def test_candidates_are_ranked() -> None:
    orders = [
        order(1, patient_id="P-1", animal_name="Rex"),  # same patient, same day
        order(2, patient_id="P-5", animal_name="Rex", owner_name="Smith"),  # duplicate record?
        order(3, patient_id="P-8", animal_name="Bella", owner_name="Jones"),  # unrelated
        order(4, patient_id="P-1", animal_name="Rex", scheduled_date="20261001"),  # old visit
    ]
    m = match_study(study(patient_name="Smith^Rexx", study_date="20261127"), orders)
    assert m.order_id is None
    ranked = [c.order_id for c in m.candidates]
    # Same patient id today first; the same patient's old visit still outranks a
    # look-alike record under another id (the id is the stronger identity signal);
    # an unrelated animal is no candidate at all.
    assert ranked == [1, 4, 2]
    assert "same patient id" in m.candidates[0].reasons
    assert "same day" in m.candidates[0].reasons and "same day" not in m.candidates[1].reasons
    assert "same patient id" not in m.candidates[2].reasons


_ids = st.sampled_from(["P-1", "P-2", "P-3", ""])
_names = st.sampled_from(["Rex", "Rexx", "Bella", "Tiger", "Bärli", ""])
_days = st.sampled_from(["20261126", "20261127", "20261128", ""])
_mods = st.sampled_from(["DX", "US", "CT", ""])
_status = st.sampled_from(["scheduled", "in_progress", "completed", "cancelled"])


@st.composite
def _orders(draw: st.DrawFn) -> list[OrderFacts]:
    n = draw(st.integers(0, 6))
    return [
        order(
            i + 1,
            patient_id=draw(_ids.filter(bool)),
            animal_name=draw(_names.filter(bool)),
            owner_name=draw(st.sampled_from(["Smith", "Jones"])),
            modality=draw(_mods),
            scheduled_date=draw(_days.filter(bool)),
            status=draw(_status),
        )
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(
    orders=_orders(),
    pid=_ids,
    animal=_names,
    day=_days,
    modality=_mods,
    accession=st.sampled_from(["", "A1", "A2", "A9"]),
    uid=st.sampled_from(["9.9.9", "1.2.3.1", "1.2.3.2"]),
    patient_day=st.booleans(),
)
def test_never_attached_to_another_patients_order(
    orders, pid, animal, day, modality, accession, uid, patient_day
) -> None:
    s = study(
        study_instance_uid=uid,
        accession_number=accession,
        patient_id=pid,
        patient_name=f"Smith^{animal}",
        modality=modality,
        study_date=day,
    )
    m = match_study(s, orders, patient_day=patient_day)
    if m.order_id is None:
        assert m.reason in ("no_match", "ambiguous", "conflict") and m.method is None
        return
    chosen = next(o for o in orders if o.id == m.order_id)
    assert not pid or chosen.patient_id == pid  # a stated patient id is never overridden
    if m.method == "accession":
        assert chosen.accession_number == accession
    elif m.method == "study_uid":
        assert chosen.study_instance_uid == uid
    else:
        assert m.method == "patient_day" and patient_day
        fitting = [
            o
            for o in orders
            if o.patient_id == pid
            and o.status in ("scheduled", "in_progress")
            and o.modality == modality
            and o.scheduled_date == day
            and animal_key(o.animal_name) == animal_key(animal)
        ]
        assert fitting == [chosen]  # exactly one open order fits
