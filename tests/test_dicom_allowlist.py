"""Issue #9: unknown calling AEs are refused by default once any device is registered.

``VETHUB_DICOM_ALLOW_UNKNOWN_AE``: true lets anyone in, false only registered
devices; unset is the first-run mode (open while nothing is registered). Every
unregistered caller is noted in ``unknown_peers`` with its address.
"""

from __future__ import annotations

import logging

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import event

from hub.context import Hub
from hub.services import modalities, peers
from tests.worklist_scu import running_door


def associate(port: int, aet: str) -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="VETHUB")


def admitted(port: int, aet: str) -> bool:
    assoc = associate(port, aet)
    if assoc.is_established:
        assoc.release()
        return True
    return False


def register(hub: Hub, *titles: str) -> None:
    with hub.db.session() as s:
        for title in titles:
            modalities.put(s, title, {}, actor="test")


def sightings(hub: Hub) -> dict[str, tuple[str, bool, int]]:
    with hub.db.read_session() as s:
        return {r.name: (r.address, r.refused, r.count) for r in peers.seen(s, "dicom")}


def test_first_run_lets_anyone_in_and_notes_who_called(hub: Hub) -> None:
    assert hub.settings.dicom_allow_unknown_ae is None
    with running_door(hub) as port:
        assert admitted(port, "NEW_DX")
        assert admitted(port, "NEW_DX")  # the second within 30 s is counted, not written
    assert sightings(hub) == {"NEW_DX": ("127.0.0.1", False, 1)}


def test_once_a_device_is_registered_unknown_callers_are_refused(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    register(hub, "DX_ROOM1")
    caplog.set_level(logging.WARNING, logger="worklist.server")
    with running_door(hub) as port:
        stranger = associate(port, "STRANGER")
        assert stranger.is_rejected and not stranger.is_established
        rj = stranger.acceptor.primitive
        # rejected-permanent, by the service user, calling AE title not recognised
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
        assert admitted(port, "DX_ROOM1")  # registered: in, and not noted
    assert sightings(hub) == {"STRANGER": ("127.0.0.1", True, 1)}
    (line,) = [r for r in caplog.records if r.getMessage() == "association rejected"]
    assert line.calling_ae == "STRANGER"  # type: ignore[attr-defined]
    assert line.reason == "calling AE title not recognised"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("setting", "registered", "let_in"),
    [(True, True, True), (False, False, False), (None, False, True), (None, True, False)],
)
def test_the_setting_wins_over_the_first_run_rule(
    hub: Hub, setting: bool | None, registered: bool, let_in: bool
) -> None:
    hub.settings.dicom_allow_unknown_ae = setting
    if registered:
        register(hub, "DX_ROOM1")
    with running_door(hub) as port:
        assert admitted(port, "OTHER") is let_in
        if registered:
            assert admitted(port, "DX_ROOM1")
    assert sightings(hub) == {"OTHER": ("127.0.0.1", not let_in, 1)}


def test_registered_titles_are_not_read_per_association(hub: Hub) -> None:
    register(hub, "DX_ROOM1")
    reads: list[str] = []

    def count(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "FROM modalities" in statement and "ae_title" in statement.split("FROM")[0]:
            reads.append(statement)

    event.listen(hub.db.engine, "before_cursor_execute", count)
    try:
        with running_door(hub) as port:
            results = [admitted(port, "DX_ROOM1") for _ in range(10)]
            results += [admitted(port, "STRANGER") for _ in range(10)]
    finally:
        event.remove(hub.db.engine, "before_cursor_execute", count)
    assert results == [True] * 10 + [False] * 10
    assert 1 <= len(reads) <= 3, reads  # one read per 2 s, not one per association
