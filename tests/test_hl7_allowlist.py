"""Who may send HL7: each source's ``hl7_senders`` (MSH-3, MSH-4, peer address), with
the first-run mode of ``VETHUB_HL7_ALLOW_UNKNOWN_SENDERS`` (issue #9)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from adapters.hl7.prepare import Senders, prepare
from adapters.hl7.profile import load_profiles
from hub.context import Hub
from hub.mappings import default_mappings_dir
from hub.services import peers
from tests.mllp_client import DoorThread, MllpClient, ack_segments, sample

ORM = sample("orm_o01_nw_v251_utf8.hl7")  # MSH-3 VETPMS, MSH-4 HAPPYPAWS


def _orm(tag: str) -> bytes:
    """The sample order as a new one: ``tag`` as MSH-10, placer number and accession."""
    t = tag.encode()
    return (
        ORM.replace(b"PMS000042", t)
        .replace(b"ORD-7781", b"ORD-" + t)
        .replace(b"|A7781|", b"|" + t + b"|")
    )


def _from(port: int, source: str) -> MllpClient:
    """An MLLP client whose socket is bound to ``source`` (127/8 is all loopback on Linux)."""
    import socket

    client = MllpClient.__new__(MllpClient)
    client.sock = socket.create_connection(
        ("127.0.0.1", port), timeout=15, source_address=(source, 0)
    )
    client.buf = bytearray()
    return client


def _send(door: DoorThread, message: bytes, source: str = "127.0.0.1") -> dict[str, list[str]]:
    with _from(door.port, source) as c:
        return ack_segments(c.send(message))


def _register(client: TestClient, name: str, senders: list[dict[str, str]]) -> None:
    r = client.put(f"/api/v1/sources/{name}", json={"hl7_senders": senders})
    assert r.status_code in (200, 201), r.text


@pytest.fixture
def door(hub: Hub) -> Iterator[DoorThread]:
    d = DoorThread(hub, registered_ttl=0)  # see registrations at once
    yield d
    d.stop()


def _messages(client: TestClient) -> list[dict]:
    return client.get("/api/v1/messages", params={"limit": 100}).json()["items"]


def test_first_run_is_open_until_a_source_lists_senders(
    hub: Hub, client: TestClient, door: DoorThread
) -> None:
    # nothing registered: anyone is in, and noted for the admin
    assert _send(door, ORM)["MSA"][1] == "AA"
    with hub.db.read_session() as s:
        [seen] = peers.seen(s, "hl7")
        assert (seen.name, seen.facility, seen.address, seen.refused) == (
            "VETPMS",
            "HAPPYPAWS",
            "127.0.0.1",
            False,
        )
    # a source lists its sender at 127.0.0.2 under another name: the first-run mode ends
    _register(client, "pims-main", [{"application": "vetpms", "address": "127.0.0.2"}])
    refused = _send(door, _orm("REFUSED1"), source="127.0.0.3")
    assert refused["MSA"][1:3] == ["AR", "REFUSED1"]
    assert "sender VETPMS/HAPPYPAWS at 127.0.0.3 is not allowed" in refused["ERR"][8]
    assert "hl7_senders" in refused["ERR"][8]
    allowed = _send(door, _orm("ALLOWED1"), source="127.0.0.2")
    assert allowed["MSA"][1:3] == ["AA", "ALLOWED1"]
    rows = {r["control_id"]: r for r in _messages(client)}
    assert rows["REFUSED1"]["outcome"] == "AR" and "not allowed" in rows["REFUSED1"]["error"]
    assert rows["REFUSED1"]["order_id"] is None
    # the allowed message is the listing source's, though MSH-3 is not its name
    assert rows["ALLOWED1"]["source"] == "pims-main"
    orders = client.get("/api/v1/orders").json()["items"]
    assert {o["source"] for o in orders} == {"VETPMS", "pims-main"}  # first-run one, then ours
    with hub.db.read_session() as s:
        refused_rows = [p for p in peers.seen(s, "hl7") if p.refused]
        assert [(p.name, p.address) for p in refused_rows] == [("VETPMS", "127.0.0.3")]


def test_an_explicit_setting_wins_over_the_first_run_mode(hub: Hub, client: TestClient) -> None:
    hub.settings = hub.settings.model_copy(update={"hl7_allow_unknown_senders": False})
    door = DoorThread(hub, registered_ttl=0)
    try:
        # closed although nothing is registered
        ack = _send(door, ORM)
        assert ack["MSA"][1] == "AR" and "not allowed" in ack["ERR"][8]
        # a facility-only entry lets the whole clinic in
        _register(client, "happypaws", [{"facility": "HAPPYPAWS"}])
        assert _send(door, ORM)["MSA"][1] == "AA"
    finally:
        door.stop()
    hub.settings = hub.settings.model_copy(update={"hl7_allow_unknown_senders": True})
    door = DoorThread(hub, registered_ttl=0)
    try:
        # open although a source lists senders: an unknown one gets in (and is noted)
        other = _orm("OPEN1").replace(b"|VETPMS|HAPPYPAWS|", b"|OTHERPMS|ELSEWHERE|")
        assert _send(door, other)["MSA"][1] == "AA"
    finally:
        door.stop()
    with hub.db.read_session() as s:
        names = {(p.name, p.refused) for p in peers.seen(s, "hl7")}
    assert names == {("VETPMS", True), ("OTHERPMS", False)}


def test_a_matched_sender_is_read_with_its_sources_profile() -> None:
    profiles = load_profiles(default_mappings_dir() / "hl7")
    senders = Senders.build(
        [
            ("clinic-net", "default", [{"address": "10.0.0.0/24"}]),
            ("old-pms", "animal-first", [{"application": "VETPMS", "address": "10.0.0.0/24"}]),
        ],
        None,
    )
    # the entry naming more parts wins over the address-only one
    p = prepare(ORM, profiles, address="10.0.0.7", senders=senders)
    assert (p.allowed_by, p.match and p.match.source, p.match and p.match.profile.name) == (
        "old-pms",
        "old-pms",
        "animal-first",
    )
    p = prepare(ORM, profiles, address="10.0.1.7", senders=senders)
    assert p.refused and p.match is None and p.error and "10.0.1.7" in p.error.message


def test_hl7_senders_are_checked_and_shown(client: TestClient) -> None:
    bad = client.put(
        "/api/v1/sources/pims",
        json={
            "hl7_senders": [
                {"application": "VETPMS"},
                {"application": "X", "address": "10.0.0.300"},
                {},
                {"application": "X", "colour": "red"},
            ]
        },
    )
    assert bad.status_code == 422
    fields = [e["field"] for e in bad.json()["errors"]]
    assert fields == ["hl7_senders[1].address", "hl7_senders[2]", "hl7_senders[3]"]
    assert "hl7_senders[1].address" in bad.json()["detail"]
    good = client.put(
        "/api/v1/sources/pims",
        json={
            "hl7_senders": [{"application": " VETPMS ", "facility": "", "address": "10.0.0.0/24"}],
            "tls": True,
            "webhook_secret": "s3cret-s3cret-s3cret",
        },
    )
    assert good.status_code == 201, good.text
    shown = client.get("/api/v1/sources/pims").json()
    assert shown["hl7_senders"] == [{"application": "VETPMS", "address": "10.0.0.0/24"}]
    assert shown["tls"] is True and "webhook_secret" not in shown
