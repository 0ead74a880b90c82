"""HL7 as older practice systems speak it (SQLite and PostgreSQL): the v2.3 profile picked
by MSH-12, species where v2.3 senders put them, a warning when there is none, ACKs in the
sender's version parsed strictly by hl7apy, the animal-only profile, and profile reload."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message, parse_segments
from sqlalchemy import select

from hub.context import Hub
from hub.mappings import default_mappings_dir
from hub.models import InboundMessage, Order
from hub.serve import build_app
from hub.services import keys, orders
from tests.harness import ADMIN_KEY, empty_tables, key_for, make_settings
from tests.mllp_client import DoorThread

STRICT = VALIDATION_LEVEL.STRICT


def strict_ack(raw: bytes, version: str) -> Message:
    """The ACK read segment by segment against hl7apy's ``version`` tables, then validated;
    from v2.3.1 on also as a whole by ``parse_message`` (which names the structure from
    MSH-9.3, a component v2.3 does not have).
    """
    text = raw.decode("utf-8")
    if version != "2.3":
        whole = parse_message(text, validation_level=STRICT)
        whole.validate()
        assert whole.name == "ACK" and whole.version == version
    msg = Message("ACK", version=version, validation_level=STRICT)
    msg.children = parse_segments(text, version, validation_level=STRICT)
    msg.validate()
    assert msg.msh.msh_12.to_er7() == version
    return msg


def order(
    version: str,
    number: str,
    *,
    pid: str = "PID|1||K-7001||Berger^Luna||20200301|F",
    extra: str = "",
    sender: str = "OLDPMS",
) -> bytes:
    segs = [
        f"MSH|^~\\&|{sender}|PRAXIS|VETHUB|HUB|20261129080000||ORM^O01|{number}|P|{version}",
        pid,
        *([extra] if extra else []),
        f"ORC|NW|{number}",
        f"OBR|1|{number}||XR-THORAX^Thorax^L||||||||||||||||||||DX",
    ]
    return ("\r".join(segs) + "\r").encode()


def placed(hub: Hub, source: str, number: str) -> Order:
    with hub.db.read_session() as s:
        return orders.find_by_placer(s, source, number)


def logged(hub: Hub, control_id: str) -> InboundMessage:
    with hub.db.read_session() as s:
        return s.scalars(
            select(InboundMessage).where(InboundMessage.control_id == control_id)
        ).one()


@pytest.fixture
def door(hub: Hub) -> Iterator[DoorThread]:
    d = DoorThread(hub, registered_ttl=0)
    yield d
    d.stop()


@pytest.mark.parametrize(
    ("version", "where"),
    [
        ("2.3", "ZPI|1|Canis lupus familiaris|Beagle"),
        ("2.3.1", "OBX|1|CE|SPECIES||448771007^Dog^SCT"),
        ("2.3.1", "PID-10"),
    ],
)
def test_v23_sender_gets_the_v23_profile_and_its_species(
    hub: Hub, door: DoorThread, version: str, where: str
) -> None:
    number = f"V{version.replace('.', '')}-{len(where)}"
    if where == "PID-10":  # race and ethnic group, where some senders put species and breed
        fields = ["PID", "1", "", "K-7001", "", "Berger^Luna", "", "20200301", "F"] + [""] * 14
        fields[10], fields[22] = "Dog", "Beagle"
        msg = order(version, number, pid="|".join(fields))
    else:
        msg = order(version, number, extra=where)
    with door.client() as c:
        ack = strict_ack(c.send(msg), version)
    assert ack.msa.msa_1.to_er7() == "AA" and ack.msa.msa_3.to_er7() == ""
    expected_type = "ACK^O01" if version == "2.3" else "ACK^O01^ACK"
    assert ack.msh.msh_9.to_er7() == expected_type
    o = placed(hub, "OLDPMS", number)
    assert (o.patient_name, o.owner_last_name) == ("Luna", "Berger")
    assert o.species_code == "448771007"
    assert logged(hub, number).profile == "v2.3"


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_order_without_species_is_accepted_with_a_warning(
    hub: Hub, door: DoorThread, version: str
) -> None:
    number = f"NOSP-{version}"
    with door.client() as c:
        ack = strict_ack(c.send(order(version, number)), version)
    assert ack.msa.msa_1.to_er7() == "AA"
    assert "without species" in ack.msa.msa_3.to_er7()
    err = [seg for seg in ack.children if seg.name == "ERR"]
    if version == "2.5":  # ERR with severity W from v2.5 on; v2.3 has no severity field
        assert err[0].err_4.to_er7() == "W" and err[0].err_2.to_er7() == "PID^1^35^1"
    else:
        assert not err
    row = logged(hub, number)
    assert row.outcome == "AA" and "without species" in (row.error or "")
    assert placed(hub, "OLDPMS", number).species_code is None


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5"])
def test_rejection_ack_has_the_err_layout_of_the_senders_version(
    hub: Hub, door: DoorThread, version: str
) -> None:
    msg = order(version, "R1").replace(b"ORC|NW|R1", b"ORC|NW|").replace(b"OBR|1|R1", b"OBR|1|")
    with door.client() as c:
        ack = strict_ack(c.send(msg), version)
    assert ack.msa.msa_1.to_er7() == "AR"
    [err] = [seg for seg in ack.children if seg.name == "ERR"]
    if version == "2.5":
        assert err.err_3.to_er7().startswith("101^") and err.err_2.to_er7() == "ORC^1^2^1^1"
    else:  # ERR-1 alone: segment^sequence^field^code&text&table
        assert err.to_er7() == "ERR|ORC^1^2^101&Required field missing&HL70357"


def test_animal_only_profile_reads_owner_from_nk1_or_pid9(
    hub: Hub, door: DoorThread, client: TestClient
) -> None:
    r = client.put("/api/v1/sources/CSTONE", json={"hl7_profile": "animal-only"})
    assert r.status_code in (200, 201), r.text
    nk1 = order(
        "2.3",
        "CS-1",
        pid="PID|1||A-88||Bella||20180101|F",
        extra="NK1|1|Meier^Karin|OWN\rZPI|1|Felis catus|Maine Coon",
        sender="CSTONE",
    )
    pid9 = order(
        "2.3",
        "CS-2",
        pid="PID|1||A-89||Max||20190101|M|Huber^Josef",
        extra="ZPI|1|Canis lupus familiaris",
        sender="CSTONE",
    )
    with door.client() as c:
        for msg in (nk1, pid9):
            ack = strict_ack(c.send(msg), "2.3")
            assert ack.msa.msa_1.to_er7() == "AA", ack.to_er7()
    one, two = placed(hub, "CSTONE", "CS-1"), placed(hub, "CSTONE", "CS-2")
    assert (one.patient_name, one.owner_last_name, one.owner_first_name) == (
        "Bella",
        "Meier",
        "Karin",
    )
    assert one.breed == "Maine Coon"
    assert (two.patient_name, two.owner_last_name, two.owner_first_name) == (
        "Max",
        "Huber",
        "Josef",
    )
    assert logged(hub, "CS-1").profile == "animal-only"


@pytest.fixture
def own_mappings(db_url: str, tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    """A hub reading a copy of the shipped mappings, so a test may edit its profiles."""
    root = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    h = Hub.open(make_settings(tmp_path, db_url, mappings_dir=root), upgrade=True)
    if h.db.engine.dialect.name == "postgresql":
        empty_tables(h.db)
    with h.db.session() as s:
        keys.ensure(s, "bootstrap-admin", "admin", ADMIN_KEY)
    yield h, root / "hl7"
    h.close()


def test_profiles_reload_without_a_restart(own_mappings: tuple[Hub, Path]) -> None:
    hub, folder = own_mappings
    door = DoorThread(hub)
    app = build_app(hub)
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            with door.client() as c:
                c.send(order("2.5", "RL-1", extra="ZSP|1|Beagle"))
            assert placed(hub, "OLDPMS", "RL-1").breed is None
            default = folder / "default.yaml"
            good = default.read_text()
            # A broken edit: 422 naming the file and the entry; the old profiles stay.
            default.write_text(good.replace("patient.breed: [PID-36]", "patient.bread: [PID-36]"))
            bad = client.post("/api/v1/hl7/profiles/reload")
            assert bad.status_code == 422
            assert (
                "default.yaml" in bad.json()["detail"] and "patient.bread" in bad.json()["detail"]
            )
            default.write_text(
                good.replace("patient.breed: [PID-36]", "patient.breed: [PID-36, ZSP-2]")
            )
            ok = client.post("/api/v1/hl7/profiles/reload")
            assert ok.status_code == 200, ok.text
            names = {p["name"]: p for p in ok.json()["profiles"]}
            assert names["v2.3"]["versions"] == ["2.3", "2.3.1"] and "animal-only" in names
            with door.client() as c:
                c.send(order("2.5", "RL-2", extra="ZSP|1|Beagle"))
            assert placed(hub, "OLDPMS", "RL-2").breed == "Beagle"
            vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
            assert client.post("/api/v1/hl7/profiles/reload", headers=vet).status_code == 403
    finally:
        door.stop()


def test_alerts_microchip_and_reason_from_hl7(hub: Hub, door: DoorThread) -> None:
    pid = "PID|1||K-7002~276098106543210^^^CHIPREG^RFID||Berger^Luna||20200301|F"
    segs = [
        "MSH|^~\\&|NEWPMS|PRAXIS|VETHUB|HUB|20261129080000||ORM^O01|AL-1|P|2.5",
        pid + "|" * 26 + "|448771007^Dog^SCT",
        "ORC|NW|AL-1",
        "OBR|1|AL-1||XR-THORAX^Thorax^L||||||||^caution: bites"
        + "|" * 12
        + "DX"
        + "|" * 6
        + "|^lameness left fore",
    ]
    with door.client() as c:
        raw = c.send(("\r".join(segs) + "\r").encode())
    ack = strict_ack(raw, "2.5")
    assert ack.msa.msa_1.to_er7() == "AA" and ack.msa.msa_3.to_er7() == ""
    o = placed(hub, "NEWPMS", "AL-1")
    assert (o.patient_id, o.patient_microchip) == ("K-7002", "276098106543210")
    assert (o.patient_alerts, o.reason) == ("caution: bites", "lameness left fore")
