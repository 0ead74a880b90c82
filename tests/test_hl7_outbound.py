"""HL7 results written per source (SQLite and PostgreSQL): the version, PID-5 layout and
PID-3 authority of the source's profile (for a source on ``default``, the profile of the
version it sends), MSH-3..6 filled; parsed strictly by hl7apy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from adapters.hl7 import current
from hub.context import Hub
from hub.serve import delivery_kinds
from hub.services import orders
from hub.services.deliveries.worker import DeliveryWorker
from tests.delivery_receivers import MllpReceiver
from tests.factories import rex
from tests.mllp_client import DoorThread, sample
from tests.study_factory import indexed_study


@pytest.fixture
def mllp() -> Iterator[MllpReceiver]:
    r = MllpReceiver()
    yield r
    r.close()


def fields(message: str, segment: str) -> list[str]:
    line = next(s for s in message.split("\r") if s.startswith(segment + "|"))
    parts = line.split("|")
    return ["MSH", "|", *parts[1:]] if segment == "MSH" else parts


@pytest.mark.parametrize(
    ("profile", "senders", "version", "pid5", "msh56"),
    [
        ("default", [], "2.5", "Smith^Rex", ("pims-main", "pims-main")),
        ("v2.3", [{"application": "OLDPMS"}], "2.3.1", "Smith^Rex", ("OLDPMS", "pims-main")),
        (
            "animal-first",
            [{"application": "OLDPMS", "facility": "PRAXIS"}],
            "2.3.1",
            "Rex",
            ("OLDPMS", "PRAXIS"),
        ),
    ],
)
def test_results_follow_the_sources_profile(
    client: TestClient,
    hub: Hub,
    mllp: MllpReceiver,
    profile: str,
    senders: list,
    version: str,
    pid5: str,
    msh56: tuple[str, str],
) -> None:
    r = client.put(
        "/api/v1/sources/pims-main",
        json={
            "hl7_profile": profile,
            "hl7_host": "127.0.0.1",
            "hl7_port": mllp.port,
            "hl7_senders": senders,
            "results": ["hl7-oru", "hl7-orm-status"],
            "events": ["study.received", "order.cancelled"],
        },
    )
    assert r.status_code in (200, 201), r.text
    order = client.post("/api/v1/orders", json=rex()).json()
    indexed_study(hub, order)
    client.post(f"/api/v1/orders/{order['id']}/cancel")
    worker = DeliveryWorker(hub.db, hub.settings, delivery_kinds())
    try:
        for _ in range(3):
            worker.run_once()
        got = mllp.wait_for(2)
    finally:
        worker.stop()
    oru = next(m for m in got if "ORU^R01" in m)
    orm = next(m for m in got if "ORM^O01" in m)
    parsed = parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    parsed.validate()
    assert parsed.msh.msh_12.to_er7() == version
    # ORM^O01: hl7apy's validate() wrongly requires every member of the OBR choice group
    # (docs/domain.md), so it is parsed strictly and its fields checked here.
    strict_orm = parse_message(orm, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert strict_orm.msh.msh_12.to_er7() == version
    for message in (oru, orm):
        msh, pid = fields(message, "MSH"), fields(message, "PID")
        assert (msh[3], msh[4]) == ("VETHUB", "VETHUB")
        assert (msh[5], msh[6]) == msh56
        assert msh[9] == ("ORU^R01^ORU_R01" if message is oru else "ORM^O01^ORM_O01")
        assert pid[3] == "P-555^^^pims-main^PI"
        assert pid[5] == pid5
    assert fields(orm, "ORC")[5] == "CA"


def test_a_source_on_default_is_answered_in_the_version_it_sends(
    client: TestClient, hub: Hub, mllp: MllpReceiver
) -> None:
    r = client.put(
        "/api/v1/sources/OLDPMS",
        json={
            "hl7_host": "127.0.0.1",
            "hl7_port": mllp.port,
            "results": ["hl7-orm-status"],
            "events": ["order.cancelled"],
        },
    )
    assert r.status_code in (200, 201), r.text
    door = DoorThread(hub, registered_ttl=0)
    try:
        with door.client() as c:
            c.send(sample("orm_o01_v23_latin1.hl7"))
    finally:
        door.stop()
    current._spoken.clear()  # a restart: the door recalls the version from its log
    DoorThread(hub).stop()
    with hub.db.read_session() as s:
        order_id = orders.find_by_placer(s, "OLDPMS", "AUF-1001").id
    assert client.post(f"/api/v1/orders/{order_id}/cancel").status_code == 200
    worker = DeliveryWorker(hub.db, hub.settings, delivery_kinds())
    try:
        worker.run_once()
        [orm] = mllp.wait_for(1)
    finally:
        worker.stop()
    msg = parse_message(orm, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert msg.msh.msh_12.to_er7() == "2.3.1"  # the v2.3 profile's outbound
    assert fields(orm, "PID")[5].startswith("Schr")  # Owner^Animal, as v2.3 reads it
