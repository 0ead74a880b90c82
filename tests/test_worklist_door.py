"""The DICOM door over real sockets: pynetdicom SCU against an in-process door."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from hub.context import Hub
from hub.models import Modality
from hub.services import modalities
from tests.order_corpus import gen_orders
from tests.worklist_scu import MWL, accessions, find, identifier, order, place, running_door
from worklist.items import EncodingCache
from worklist.mwl import WorklistService
from worklist.server import DicomDoor, VerificationService

TODAY = date.today()
DA = TODAY.strftime("%Y%m%d")


@pytest.fixture
def busy(hub: Hub) -> tuple[Hub, list[dict]]:
    bodies = gen_orders(200, seed=7, day=TODAY.isoformat())
    place(hub, bodies)
    hub.settings.worklist_max_age_days = 0  # gen_orders spreads over +-30 days
    return hub, bodies


def test_echo_and_station_day_query(busy: tuple[Hub, list[dict]]) -> None:
    hub, bodies = busy
    station = bodies[0]["station_ae_title"]
    expected = {
        b["accession_number"]
        for b in bodies
        if b["station_ae_title"] == station and b["scheduled_start"].startswith(TODAY.isoformat())
    }
    with running_door(hub) as port:
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()

        q = identifier(
            AccessionNumber="",
            PatientName="",
            PatientSpeciesDescription="",
            sps={"ScheduledStationAETitle": station, "ScheduledProcedureStepStartDate": DA},
        )
        answers, final, _ = find(port, q)
    assert final == 0x0000
    assert accessions(answers) == expected and len(answers) == len(expected)
    for a in answers:
        assert a.SpecificCharacterSet == "ISO_IR 192"
        assert a.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == station
        assert "PatientBirthDate" not in a  # not asked for


def test_answers_stream_in_schedule_order(busy: tuple[Hub, list[dict]]) -> None:
    hub, bodies = busy
    with running_door(hub) as port:
        q = identifier(AccessionNumber="", sps={"ScheduledProcedureStepStartDate": ""})
        answers, final, _ = find(port, q)
        again, _, _ = find(port, q)  # second time from the encoding cache
    assert final == 0x0000 and len(answers) == len(bodies)
    starts = [a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate for a in answers]
    assert starts == sorted(starts)
    assert [a.AccessionNumber for a in again] == [a.AccessionNumber for a in answers]


def test_registered_device_gets_its_character_set_and_scope(hub: Hub) -> None:
    hub.settings.dicom_allow_unknown_ae = True  # "SOMEONE" below is not registered
    place(
        hub,
        [
            order(1, scheduled_start=f"{TODAY.isoformat()}T09:00:00"),
            order(2, station_ae_title="US_ROOM1", scheduled_start=f"{TODAY.isoformat()}T09:00:00"),
            order(3, scheduled_start=f"{(TODAY + timedelta(days=3)).isoformat()}T09:00:00"),
        ],
    )
    with hub.db.session() as s:
        modalities.put(
            s,
            "DX_ROOM1",
            {"character_set": "ISO_IR 100", "scope_station": True, "date_window_days": 1},
            actor="test",
        )
        modalities.put(s, "OLD_CR", {"character_set": "ASCII"}, actor="test")
    q = identifier(AccessionNumber="", PatientName="", ResponsiblePerson="", charset=None)
    with running_door(hub) as port:
        latin, _, _ = find(port, q, aet="DX_ROOM1")
        ascii_, _, _ = find(port, q, aet="OLD_CR")
        plain, _, _ = find(port, q, aet="SOMEONE")
        # a key given in the query wins over the device's scope
        q2 = identifier(AccessionNumber="", sps={"ScheduledStationAETitle": "US_ROOM1"})
        theirs, _, _ = find(port, q2, aet="DX_ROOM1")
    assert accessions(latin) == {"A1"}
    assert latin[0].SpecificCharacterSet == "ISO_IR 100"
    assert latin[0].PatientName == "Müller^Rex"
    assert accessions(ascii_) == {"A1", "A2", "A3"}
    assert "SpecificCharacterSet" not in ascii_[0]
    assert {str(a.PatientName) for a in ascii_} == {"Mueller^Rex"}
    assert {str(a.ResponsiblePerson) for a in ascii_} == {"Mueller^Anna"}
    assert accessions(plain) == {"A1", "A2", "A3"} and plain[0].PatientName == "Müller^Rex"
    assert accessions(theirs) == {"A2"}
    deadline = time.monotonic() + 10  # noted in the background, after the answers
    while time.monotonic() < deadline:
        with hub.db.read_session() as s:
            seen = [s.get(Modality, ae).last_query_at for ae in ("DX_ROOM1", "OLD_CR")]
        if all(seen):
            break
        time.sleep(0.05)
    assert all(seen)


def test_unknown_calling_ae_rejected_when_configured(hub: Hub) -> None:
    hub.settings.dicom_allow_unknown_ae = False
    with hub.db.session() as s:
        modalities.put(s, "DX_ROOM1", {}, actor="test")
    with running_door(hub) as port:
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_rejected
        ae = AE(ae_title="DX_ROOM1")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        assoc.release()
        # registered later: accepted without a restart, once the door's
        # two-second snapshot of the registered titles has been re-read
        with hub.db.session() as s:
            modalities.put(s, "STRANGER", {}, actor="test")
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(Verification)
        deadline = time.monotonic() + 5
        while not (assoc := ae.associate("127.0.0.1", port, ae_title="VETHUB")).is_established:
            assert time.monotonic() < deadline, "still refused after registration"
            time.sleep(0.2)
        assoc.release()


class SlowCache(EncodingCache):
    """Makes every answer take a while, so a C-CANCEL surely arrives mid-stream."""

    def get(self, key: tuple) -> bytes | None:
        time.sleep(0.01)
        return super().get(key)


def test_c_cancel_stops_the_stream(busy: tuple[Hub, list[dict]]) -> None:
    hub, bodies = busy
    services = [VerificationService(), WorklistService(hub, cache=SlowCache())]
    with running_door(hub, services=services) as port:
        ae = AE(ae_title="CANCELLER")
        ae.add_requested_context(MWL)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        q = identifier(AccessionNumber="")
        statuses = []
        for status, _ in assoc.send_c_find(q, MWL, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                cid = assoc.accepted_contexts[0].context_id
                assoc.send_c_cancel(7, cid)
        assoc.release()
    assert statuses[-1] == 0xFE00, (statuses.count(0xFF00), statuses[-3:])
    assert 1 <= statuses.count(0xFF00) < len(bodies)


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: identifier(sps={"ScheduledProcedureStepStartDate": "27.11.2026"}), 0xA900),
        (lambda: identifier(sps={"ScheduledProcedureStepStartTime": "99"}), 0xA900),
        (lambda: identifier(StudyInstanceUID="1.2.3' OR 1=1"), 0xA900),
    ],
)
def test_bad_identifiers_get_a_failure_status(hub: Hub, make, status: int) -> None:  # type: ignore[no-untyped-def]
    place(hub, [order(1)])
    with running_door(hub) as port:
        answers, final, final_ds = find(port, make())
        assert (answers, final) == ([], status)
        assert final_ds is not None and final_ds.ErrorComment
        # the door is still fine afterwards
        answers, final, _ = find(port, identifier(AccessionNumber="A1"))
        assert final == 0x0000 and accessions(answers) == {"A1"}


def test_odd_identifiers_never_crash(hub: Hub) -> None:
    place(hub, [order(1)])
    two_items = identifier(AccessionNumber="")
    two_items.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    wrong_vr = Dataset()
    wrong_vr.add_new(0x00400100, "LO", "not a sequence")
    bad_charset = identifier(charset="ISO_IR 999", PatientName="M\xfcller*")
    quotes = identifier(PatientName="'; DELETE FROM orders; --*", AccessionNumber='"')
    only_wild = identifier(PatientName="*", AccessionNumber="?*", sps={"Modality": "*"})
    with running_door(hub) as port:
        assert find(port, two_items)[1] == 0xA900
        assert find(port, wrong_vr)[1] == 0xA900
        assert find(port, bad_charset)[1] in (0x0000, 0xA900, 0xC000)
        assert find(port, quotes)[:2] == ([], 0x0000)
        answers, final, _ = find(port, only_wild)
        assert final == 0x0000 and accessions(answers) == {"A1"}
        assert find(port, identifier())[1] == 0xA900  # asks for nothing


def test_graceful_stop_lets_a_query_finish(busy: tuple[Hub, list[dict]]) -> None:
    hub, bodies = busy
    services = [VerificationService(), WorklistService(hub, cache=SlowCache())]
    door = DicomDoor(hub, services=services)
    import asyncio

    port = asyncio.run(door.start())
    result: dict = {}

    def ask() -> None:
        result["answers"], result["final"], _ = find(port, identifier(AccessionNumber="A*"))

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.3)
    door.stop_blocking(grace=20)
    t.join(10)
    assert result["final"] == 0x0000 and len(result["answers"]) == len(bodies)
    ae = AE(ae_title="LATE")
    ae.add_requested_context(Verification)
    assert not ae.associate("127.0.0.1", port, ae_title="VETHUB").is_established


def test_services_plug_in(hub: Hub) -> None:
    """The door runs Verification, MWL, Storage, MPPS and Query/Retrieve."""
    from worklist.server import default_services

    names = [type(s).__name__ for s in default_services(hub)]
    assert names == [
        "VerificationService",
        "WorklistService",
        "StorageService",
        "MppsService",
        "QueryRetrieveService",
    ]


def test_largest_pdu_is_set_once_on_the_ae(hub: Hub) -> None:
    """Every association, whatever service it is for, offers MAXIMUM_PDU_SIZE."""
    from worklist.server import MAXIMUM_PDU_SIZE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(MWL)
    only_mwl = [VerificationService(), WorklistService(hub)]
    for services in (None, only_mwl):
        with running_door(hub, services=services) as port:
            assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
            assert assoc.is_established
            try:
                assert assoc.acceptor.maximum_length == MAXIMUM_PDU_SIZE
            finally:
                assoc.release()


def test_a_changed_order_changes_in_the_worklist_at_once(hub: Hub) -> None:
    from hub.services import orders

    (order_id,) = place(hub, [order(1)])
    q = identifier(AccessionNumber="A1", PatientName="", PatientBreedDescription="")
    with running_door(hub) as port:
        before, _, _ = find(port, q)
        with hub.db.session() as s:
            orders.update(s, order_id, {"patient": {"breed": "Beagle"}}, hub.orders)
        after, _, _ = find(port, q)
        with hub.db.session() as s:
            orders.cancel(s, order_id)
        gone, final, _ = find(port, q)
    assert before[0].PatientBreedDescription == "Labrador Retriever"
    assert after[0].PatientBreedDescription == "Beagle"
    assert (gone, final) == ([], 0x0000)


def test_result_cap_and_parallel_devices(busy: tuple[Hub, list[dict]]) -> None:
    hub, _ = busy
    hub.settings.worklist_max_results = 7
    results: list[int] = []

    def ask(n: int) -> None:
        answers, final, _ = find(port, identifier(AccessionNumber=""), aet=f"DEV{n}")
        results.append(len(answers) if final == 0 else -1)

    with running_door(hub) as port:
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == [7, 7, 7, 7]


def test_an_association_to_another_called_ae_is_rejected(hub: Hub) -> None:
    """Issue #9: the door answered whatever called AE title a device used."""
    received: list[object] = []
    handlers = [(evt.EVT_ACSE_RECV, lambda event: received.append(event.primitive))]
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 20
    with running_door(hub) as port:
        wrong = ae.associate("127.0.0.1", port, ae_title="WRONG", evt_handlers=handlers)
        assert wrong.is_rejected and not wrong.is_established
        right = ae.associate("127.0.0.1", port, ae_title=hub.settings.dicom_ae)
        assert right.is_established  # the listener is unharmed
        assert int(right.send_c_echo().Status) == 0
        right.release()
    rj = received[0]
    # A-ASSOCIATE-RJ: rejected-permanent, by the service user, called AE title not recognised
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07)  # type: ignore[attr-defined]
