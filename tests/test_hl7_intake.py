"""HL7 order and patient messages through the door into the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hub.context import Hub
from hub.models import AuditEvent, InboundMessage, Order, Study
from hub.services import orders
from tests.harness import key_for
from tests.mllp_client import DoorThread, ack_segments, sample
from worklist.items import build_item, tag


@pytest.fixture
def door(hub: Hub) -> Iterator[DoorThread]:
    d = DoorThread(hub)
    yield d
    d.stop()


def placer(hub: Hub, source: str, number: str) -> Order:
    with hub.db.read_session() as s:
        return orders.find_by_placer(s, source, number)


def count(hub: Hub, model: type) -> int:
    with hub.db.read_session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_new_order_lands_with_every_field(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        ack = ack_segments(c.send(sample("orm_o01_nw_v251_utf8.hl7")))
    assert ack["MSA"][1:3] == ["AA", "PMS000042"]
    assert "ERR" not in ack
    assert ack["MSH"][9] == "ACK^O01^ACK" and ack["MSH"][18] == "UNICODE UTF-8"
    o = placer(hub, "VETPMS", "ORD-7781")
    assert (o.patient_id, o.patient_name, o.owner_last_name, o.owner_first_name) == (
        "P-10234",
        "Rex",
        "Müller",
        "Jörg",
    )
    assert o.owner_id == "C-77"
    assert o.species_code == "448771007" and o.breed == "Labrador retriever"
    assert (o.patient_sex, o.patient_neutered, o.patient_weight_kg) == ("male", True, 32.5)
    assert str(o.patient_birth_date) == "2019-06-02"
    assert (o.accession_number, o.modality, o.station_ae_title) == ("A7781", "DX", "DX_ROOM1")
    assert o.scheduled_start.isoformat() == "2026-11-27T14:30:00"
    assert o.referring_vet == "Amy Jones" and o.site == "main" and o.priority == "routine"
    assert o.notes == "Coughing 2 weeks\nOwner reports & worries"
    assert o.name_key == "MULLER^REX"
    with hub.db.read_session() as s:
        row = s.scalars(select(InboundMessage)).one()
    assert (row.outcome, row.order_id, row.patient_id, row.type) == (
        "AA",
        o.id,
        "P-10234",
        "ORM^O01",
    )
    assert "Müller" in row.raw and row.ack.startswith("MSH|")


def test_resend_gets_the_same_ack_and_changes_nothing(hub: Hub, door: DoorThread) -> None:
    msg = sample("orm_o01_nw_v251_utf8.hl7")
    with door.client() as c:
        first = c.send(msg)
        again = c.send(msg)
    assert first == again
    assert count(hub, Order) == 1
    with hub.db.read_session() as s:
        rows = list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))
    assert [r.duplicate_of for r in rows] == [None, rows[0].id]


def test_change_cancel_and_discontinue(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        assert ack_segments(c.send(sample("orm_o01_nw_v251_utf8.hl7")))["MSA"][1] == "AA"
        assert ack_segments(c.send(sample("orm_o01_xo.hl7")))["MSA"][1] == "AA"
        o = placer(hub, "VETPMS", "ORD-7781")
        assert o.scheduled_start.isoformat() == "2026-11-27T16:00:00"
        assert (o.station_ae_title, o.priority, o.version) == ("DX_ROOM2", "stat", 2)
        assert o.owner_id == "C-77"  # absent in the XO: unchanged
        assert ack_segments(c.send(sample("orm_o01_ca.hl7")))["MSA"][1] == "AA"
        assert placer(hub, "VETPMS", "ORD-7781").status == "cancelled"
        # a cancelled order cannot be discontinued: AE naming the state
        dc = ack_segments(c.send(sample("orm_o01_dc.hl7")))
    assert dc["MSA"][1:3] == ["AE", "PMS000045"]
    assert dc["ERR"][3].startswith("207^") and dc["ERR"][4] == "E"
    assert "cancelled" in dc["ERR"][8]


def test_cancel_of_unknown_order_is_ae_204(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        ack = ack_segments(c.send(sample("orm_o01_ca.hl7")))
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2] == "ORC^1^2^1^1" and ack["ERR"][3].startswith("204^")
    with hub.db.read_session() as s:
        assert s.scalars(select(InboundMessage)).one().outcome == "AE"


def test_omi_with_ipc_tq1(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        assert ack_segments(c.send(sample("omi_o23_nw_ipc.hl7")))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-8001")
    assert (o.accession_number, o.modality, o.station_ae_title) == ("A8001", "US", "US_NORTH")
    assert o.scheduled_start.isoformat() == "2026-11-27T15:00:00"
    assert (o.owner_last_name, o.species_code, o.patient_neutered) == ("Ñúñez", "448169003", False)
    assert o.referring_vet == "María Peña"


# -- the sender's identifiers win (interface.md "HL7 identifiers from the sender") ----

OMI = sample("omi_o23_nw_ipc.hl7").decode()
IPC_UID = "1.2.826.0.1.3680043.10.543.8001"
ZDS = sample("orm_o01_org_owner_zsegments.hl7").decode()
ZDS_UID = "1.2.826.0.1.3680043.10.543.9100"


def test_omi_ipc_identifiers_reach_the_order_and_the_worklist(hub: Hub, door: DoorThread) -> None:
    # IPC-1 accession, IPC-2 requested procedure id, IPC-3 study UID, IPC-4 step id:
    # the device must put the RIS's UID on the study, or the RIS never finds its images.
    with door.client() as c:
        assert ack_segments(c.send(OMI.encode()))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-8001")
    assert (o.accession_number, o.study_instance_uid) == ("A8001", IPC_UID)
    assert (o.requested_procedure_id, o.scheduled_step_id) == ("RP8001", "SPS8001")
    item = build_item(o)
    assert item[tag("StudyInstanceUID")][1] == IPC_UID
    assert item[tag("RequestedProcedureID")][1] == "RP8001"


def test_zds_uid_is_the_study_uid_and_a_zds_text_the_accession(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        assert ack_segments(c.send(ZDS.encode()))["MSA"][1] == "AA"
        other = ZDS.replace(ZDS_UID, "ACC-9200").replace("ORD-9100", "ORD-9200")
        other = other.replace("PMS000070", "PMS000071")
        assert ack_segments(c.send(other.encode()))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-9100")
    assert o.study_instance_uid == ZDS_UID and o.accession_number != ZDS_UID
    o = placer(hub, "VETPMS", "ORD-9200")
    assert o.accession_number == "ACC-9200" and o.study_instance_uid.startswith("2.25.")


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (OMI.replace(IPC_UID, "1.2.826.0.1.3680043.10.543.08001"), "IPC^1^3^1^1"),
        (OMI.replace(IPC_UID, "not-a-uid"), "IPC^1^3^1^1"),
        (OMI.replace(IPC_UID, "1." + "2" * 63), "IPC^1^3^1^1"),
        (ZDS.replace(ZDS_UID, "1.2.03.9100"), "ZDS^1^1^1^1"),
    ],
)
def test_malformed_study_uid_is_ar_naming_the_field(
    hub: Hub, door: DoorThread, text: str, location: str
) -> None:
    with door.client() as c:
        ack = ack_segments(c.send(text.encode()))
    assert ack["MSA"][1] == "AR" and ack["ERR"][2] == location
    assert ack["ERR"][3].startswith("102^") and "study_instance_uid" in ack["ERR"][8]
    assert count(hub, Order) == 0


def test_study_uid_of_another_order_is_ae_205(hub: Hub, door: DoorThread) -> None:
    second = OMI.replace("ORD-8001", "ORD-8002").replace("|A8001|", "|A8002|")
    second = second.replace("PMS000050", "PMS000051")
    with door.client() as c:
        assert ack_segments(c.send(OMI.encode()))["MSA"][1] == "AA"
        ack = ack_segments(c.send(second.encode()))
    assert ack["MSA"][1] == "AE" and ack["ERR"][2] == "IPC^1^3^1^1"
    assert ack["ERR"][3].startswith("205^")
    assert count(hub, Order) == 1


def test_xo_may_bring_the_senders_study_uid_later(hub: Hub, door: DoorThread) -> None:
    without = OMI.replace(IPC_UID, "")
    change = OMI.replace("ORC|NW|", "ORC|XO|").replace("PMS000050", "PMS000052")
    with door.client() as c:
        assert ack_segments(c.send(without.encode()))["MSA"][1] == "AA"
        assert placer(hub, "VETPMS", "ORD-8001").study_instance_uid.startswith("2.25.")
        assert ack_segments(c.send(change.encode()))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-8001")
    assert o.study_instance_uid == IPC_UID and o.version == 2


@pytest.mark.parametrize(
    ("name", "source", "number", "expect"),
    [
        (
            "orm_o01_v23_latin1.hl7",
            "OLDPMS",
            "AUF-1001",
            ("Schröder", "Bärbel", "Becken HD-Röntgen"),
        ),
        ("orm_o01_animal_first_lf.hl7", "clinicware", "CW-ORD-55", ("Øster", "Whisky", None)),
        ("orm_o01_custom_encoding.hl7", "VETPMS", "ORD-9001", ("Côté", "Filou", None)),
    ],
)
def test_charsets_line_ends_encodings_and_profiles(
    hub: Hub, door: DoorThread, name: str, source: str, number: str, expect: tuple
) -> None:
    with door.client() as c:
        raw = c.send(sample(name))
    ack = ack_segments(raw, "latin-1" if "latin1" in name else "utf-8")
    assert ack["MSA"][1] == "AA", raw
    o = placer(hub, source, number)
    assert (o.owner_last_name, o.patient_name) == expect[:2]
    if expect[2]:
        assert o.procedure_description == expect[2]


def test_alternative_profile_reads_zsegment_and_converts(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        c.send(sample("orm_o01_animal_first_lf.hl7"))
    o = placer(hub, "clinicware", "CW-ORD-55")
    assert (o.species_code, o.breed, o.patient_neutered) == ("35354009", "Haflinger", True)
    assert o.patient_weight_kg == 480.0 and o.modality == "DX"  # grams, and RAD -> DX
    with hub.db.read_session() as s:
        assert s.scalars(select(InboundMessage)).one().profile == "animal-first"


def test_organisation_owner_and_z_segments(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        assert ack_segments(c.send(sample("orm_o01_org_owner_zsegments.hl7")))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-9100")
    assert (o.owner_organization, o.owner_last_name, o.priority) == ("Police K9 Unit", None, "stat")
    assert o.species_code == "448771007"


def test_adt_updates_open_orders_and_merge_moves_them(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        c.send(sample("orm_o01_nw_v251_utf8.hl7"))
        assert ack_segments(c.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
        assert ack_segments(c.send(sample("adt_a08.hl7")))["MSA"][1] == "AA"
        o = placer(hub, "VETPMS", "ORD-7781")
        assert (o.owner_last_name, o.owner_first_name, o.name_key) == (
            "Schmidt",
            "Eva",
            "SCHMIDT^REX",
        )
        assert o.patient_weight_kg == pytest.approx(31.75, abs=0.01)  # 70 lb
        with hub.db.session() as s:  # images that came in under the prior id
            s.add(Study(study_instance_uid="1.2.3.4", patient_id="P-10234", patient_name="X^Rex"))
        assert ack_segments(c.send(sample("adt_a40.hl7")))["MSA"][1] == "AA"
    o = placer(hub, "VETPMS", "ORD-7781")
    assert o.patient_id == "P-10000" and o.status == "scheduled"
    with hub.db.read_session() as s:
        assert s.scalars(select(Study)).one().patient_id == "P-10000"
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "merge")).one()
    assert audit.detail == {
        "prior_patient_id": "P-10234",
        "source": "VETPMS",
        "orders": [o.id],
        "studies": ["1.2.3.4"],
    }
    with hub.db.read_session() as s:
        rows = list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))
    assert [r.type for r in rows] == ["ORM^O01", "ADT^A04", "ADT^A08", "ADT^A40"]
    assert rows[-1].patient_id == "P-10000" and rows[-1].order_id == o.id


REX = sample("orm_o01_nw_v251_utf8.hl7").decode()


@pytest.mark.parametrize(
    ("text", "code", "location"),
    [
        (REX.replace("|Müller^Rex|", "|Rex|"), "101", "PID^1^5^1^2"),
        (
            REX.replace("ORC|NW|ORD-7781^VETPMS|", "ORC|NW||").replace(
                "OBR|1|ORD-7781^VETPMS|", "OBR|1||"
            ),
            "101",
            "ORC^1^2^1^1",
        ),
        (REX.replace("|20190602|", "|2019-06-02|"), "102", "PID^1^7^1^1"),
        (REX.replace("|DX|||^^^", "|XX|||^^^"), "103", "OBR^1^24^1^1"),
        (REX.replace("ORM^O01^ORM_O01", "ORU^R01^ORU_R01"), "200", "MSH^1^9^1^1"),
        (REX.replace("ORC|NW|", "ORC|HD|"), "103", "ORC^1^1^1^1"),
        (REX.replace("|2.5.1|", "|9.9|"), "203", "MSH^1^12^1"),
        (REX.replace("UNICODE UTF-8", "8859/99"), "103", "MSH^1^18^1"),
    ],
)
def test_bad_messages_get_ar_with_err(
    hub: Hub, door: DoorThread, text: str, code: str, location: str
) -> None:
    with door.client() as c:
        ack = ack_segments(c.send(text.encode()))
    assert ack["MSA"][1:3] == ["AR", "PMS000042"]
    assert ack["ERR"][2] == location and ack["ERR"][3].split("^")[0] == code
    assert count(hub, Order) == 0
    with hub.db.read_session() as s:
        row = s.scalars(select(InboundMessage)).one()
    assert row.outcome == "AR" and row.error_code == int(code) and row.error


def test_one_bad_order_in_a_message_applies_none_of_it(hub: Hub, door: DoorThread) -> None:
    good = "ORC|NW|ORD-1\rOBR|1|ORD-1||XR-THORAX^Thorax^L\r"
    bad = "ORC|NW|ORD-2\rOBR|1|ORD-2||XR-THORAX^Thorax^L||||||||||||||||||||ZZ\r"
    head = REX.split("ORC|")[0]
    with door.client() as c:
        ack = ack_segments(c.send((head + good + bad).encode()))
    assert ack["MSA"][1] == "AR" and ack["ERR"][2] == "OBR^1^24^1^1"
    assert count(hub, Order) == 0


def test_message_log_api_and_reprocess(hub: Hub, door: DoorThread, client: TestClient) -> None:
    text = sample("orm_o01_nw_v251_utf8.hl7").decode().replace("|Müller^Rex|", "|Rex|")
    with door.client() as c:
        assert ack_segments(c.send(text.encode()))["MSA"][1] == "AR"
        c.send(sample("adt_a04.hl7"))
    r = client.get("/api/v1/messages", params={"outcome": "AR"})
    assert r.status_code == 200, r.text
    [bad] = r.json()["items"]
    assert bad["error_location"] == "PID^1^5^1^2" and bad["patient_id"] == "P-10234"
    assert (
        client.get("/api/v1/messages", params={"type": "ADT^A04"}).json()["items"][0]["outcome"]
        == "AA"
    )
    assert (
        len(client.get("/api/v1/messages", params={"patient_id": "P-10234"}).json()["items"]) == 2
    )
    page = client.get("/api/v1/messages", params={"limit": 1}).json()
    assert page["next_cursor"] and len(page["items"]) == 1
    rest = client.get("/api/v1/messages", params={"cursor": page["next_cursor"]}).json()
    assert rest["items"][0]["id"] < page["items"][0]["id"]
    # a re-run gives the same answer while the message is still wrong, and leaves a new row
    again = client.post(f"/api/v1/messages/{bad['id']}/reprocess")
    assert again.status_code == 201
    assert again.json()["outcome"] == "AR" and again.json()["reprocess_of"] == bad["id"]
    assert client.post("/api/v1/messages/999999/reprocess").status_code == 404


def test_message_log_roles(hub: Hub, client: TestClient) -> None:
    for role, status in (("integration", 200), ("vet", 403)):
        key = key_for(hub, role)
        r = client.get("/api/v1/messages", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status
    key = key_for(hub, "integration")
    r = client.post("/api/v1/messages/1/reprocess", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_registered_source_picks_its_profile(hub: Hub, client: TestClient) -> None:
    door = DoorThread(hub, registered_ttl=0)
    r = client.put("/api/v1/sources/NEWPMS", json={"hl7_profile": "animal-first"})
    assert r.status_code in (200, 201), r.text
    msg = sample("orm_o01_animal_first_lf.hl7").replace(b"CLINICWARE", b"NEWPMS")
    try:
        with door.client() as c:
            assert ack_segments(c.send(msg), "latin-1")["MSA"][1] == "AA"
    finally:
        door.stop()
    o = placer(hub, "NEWPMS", "CW-ORD-55")
    assert (o.patient_name, o.breed, o.owner_last_name) == ("Whisky", "Haflinger", "Øster")
    with hub.db.read_session() as s:
        row = s.scalars(select(InboundMessage)).one()
    assert (row.profile, row.source) == ("animal-first", "NEWPMS")


MUTATIONS = st.lists(
    st.tuples(
        st.integers(0, 2000), st.sampled_from(list("|^~\\&\r\n\x00 AZ09é-.+")), st.booleans()
    ),
    min_size=1,
    max_size=6,
)


@given(mutations=MUTATIONS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_mutated_messages_are_answered_and_never_half_applied(
    hub: Hub, mutations: list[tuple[int, str, bool]]
) -> None:
    from adapters.hl7.apply import apply_batch
    from adapters.hl7.prepare import prepare
    from adapters.hl7.profile import load_profiles
    from adapters.hl7.server import profiles_dir

    text = list(sample("orm_o01_nw_v251_utf8.hl7").decode())
    for pos, char, insert in mutations:
        pos %= len(text)
        if insert:
            text.insert(pos, char)
        else:
            text[pos] = char
    raw = "".join(text).encode("utf-8")
    before = count(hub, Order)
    prepared = prepare(raw, load_profiles(profiles_dir(hub)))
    with hub.db.session() as s:
        [logged] = apply_batch(s, [prepared], hub.orders)
    assert logged.outcome in ("AA", "AE", "AR")
    assert "\rMSA|" + logged.outcome + "|" in logged.ack
    after = count(hub, Order)
    if logged.outcome == "AA":
        assert after in (before, before + 1)
    else:
        assert after == before
        assert "\rERR|" in logged.ack


def test_cancel_without_placer_number_is_ar_101(hub: Hub, door: DoorThread) -> None:
    text = sample("orm_o01_ca.hl7").replace(b"ORD-7781^VETPMS", b"")
    with door.client() as c:
        ack = ack_segments(c.send(text))
    assert ack["MSA"][1] == "AR" and ack["ERR"][2] == "ORC^1^2^1^1"
    assert ack["ERR"][3].startswith("101^")


@pytest.mark.parametrize(
    ("frame", "location"),
    [(b"MSH\r^~\\&\rA\r", "MSH^1^1^1"), (b"MSH^~^A^B\r", "MSH^1^2^1")],
)
def test_unreadable_header_is_answered_ar_and_logged(
    hub: Hub, door: DoorThread, client: TestClient, frame: bytes, location: str
) -> None:
    with door.client() as c:
        ack = ack_segments(c.send(frame), "latin-1")
        assert ack["MSA"][1] == "AR" and ack["ERR"][3].split("^")[0] == "102"
        assert ack["ERR"][2] == location and ack["ERR"][8]
        # the connection stays usable
        assert ack_segments(c.send(REX.encode()))["MSA"][1] == "AA"
    rows = client.get("/api/v1/messages", params={"outcome": "AR"}).json()["items"]
    assert [(r["raw"], r["error_code"]) for r in rows] == [(frame.decode(), 102)]


def test_reused_control_id_with_another_body_is_a_new_message(hub: Hub, door: DoorThread) -> None:
    second = REX.replace("ORD-7781", "ORD-9000").replace("|A7781|", "|A9000|")
    retimed = second.replace("|20261127093000|", "|20261128101500|", 1)  # MSH-7 only
    with door.client() as c:
        first_ack = c.send(REX.encode())
        assert ack_segments(c.send(second.encode()))["MSA"][1:3] == ["AA", "PMS000042"]
        # the same text again, only MSH-7 changed: a resend, answered as before
        assert ack_segments(c.send(retimed.encode()))["MSA"][1] == "AA"
        assert c.send(REX.encode()) == first_ack
    assert placer(hub, "VETPMS", "ORD-7781").id != placer(hub, "VETPMS", "ORD-9000").id
    assert count(hub, Order) == 2
    with hub.db.read_session() as s:
        rows = list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))
    assert [r.duplicate_of for r in rows] == [None, None, rows[1].id, rows[0].id]
    assert rows[1].order_id != rows[0].order_id and rows[1].error is None


def test_frame_ending_in_fs_without_cr_is_answered_at_once(hub: Hub, door: DoorThread) -> None:
    with door.client() as c:
        c.sock.settimeout(5)  # the frame timeout is 60 s: an answer within 5 s is "at once"
        c.send_raw(b"\x0b" + REX.encode() + b"\x1c")
        assert ack_segments(c.read())["MSA"][1:3] == ["AA", "PMS000042"]
        time.sleep(0.05)
        # the late 0x0D is the trailer of that frame, not the start of another message
        c.send_raw(b"\r")
        other = REX.replace("PMS000042", "PMS000043").replace("ORD-7781", "ORD-7782")
        other = other.replace("|A7781|", "|A7782|")
        assert ack_segments(c.send(other.encode()))["MSA"][1:3] == ["AA", "PMS000043"]
    assert count(hub, InboundMessage) == 2
