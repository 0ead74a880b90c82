"""The allow-list rule both doors share, and the throttled notes of unknown callers."""

from __future__ import annotations

import pytest

from hub.context import Hub
from hub.services import peers


@pytest.mark.parametrize(
    ("setting", "known", "anything_registered", "expected"),
    [
        (None, False, False, True),  # first run: open
        (None, False, True, False),  # something registered: closed
        (None, True, True, True),
        (True, False, True, True),
        (False, False, False, False),
        (False, True, False, True),
    ],
)
def test_admits(
    setting: bool | None, known: bool, anything_registered: bool, expected: bool
) -> None:
    assert peers.admits(setting, known, anything_registered) is expected


def test_sender_entries_match_each_named_part() -> None:
    entry = {"application": "VetPMS", "address": "10.0.0.0/24"}
    assert peers.sender_matches(entry, "VETPMS", "ANY", "10.0.0.7")
    assert not peers.sender_matches(entry, "VETPMS", "ANY", "10.0.1.7")
    assert not peers.sender_matches(entry, "OTHER", "ANY", "10.0.0.7")
    assert not peers.sender_matches(entry, "VETPMS", "ANY", None)
    assert peers.sender_matches({"facility": "MAIN"}, "X", "main", None)
    assert peers.check_sender_entry({}) is not None
    assert "address" in (peers.check_sender_entry({"address": "10.0.0.300"}) or "")
    assert peers.check_sender_entry({"application": "A", "port": "1"}) is not None
    assert peers.check_sender_entry({"application": "A", "address": "fd00::/8"}) is None


def test_sightings_are_throttled_but_a_changed_decision_is_written_at_once(hub: Hub) -> None:
    sightings = peers.Sightings(hub.db.session, every=3600)
    for _ in range(5):
        sightings.see("dicom", "CT_NEW", "10.0.0.9", refused=False)
    with hub.db.read_session() as s:
        [row] = peers.seen(s, "dicom")
    assert (row.name, row.count, row.refused) == ("CT_NEW", 1, False)

    sightings.see("dicom", "CT_NEW", "10.0.0.9", refused=True)
    with hub.db.read_session() as s:
        [row] = peers.seen(s, "dicom")
    # the four throttled calls are counted with the write the change forced
    assert (row.count, row.refused) == (6, True)
    with hub.db.read_session() as s:
        assert peers.seen(s, "dicom", exclude=["ct_new"]) == []
        assert peers.seen(s, "hl7") == []
