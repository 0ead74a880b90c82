"""MPPS SCP through pynetdicom: N-CREATE / N-SET, order linkage, illegal requests."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from hub.context import Hub
from hub.models import Modality, Mpps, utcnow
from tests import study_factory as sf
from tests.study_factory import mpps_create, mpps_set, place


def test_mpps_moves_the_order_and_refuses_illegal_steps(hub: Hub, client: TestClient) -> None:
    order = place(client)
    with hub.db.session() as s:
        s.add(Modality(ae_title="DX_ROOM1"))
    with sf.scp(hub) as scp:
        assoc = sf.scu().associate("127.0.0.1", scp.port, ae_title="VETHUB")
        assert assoc.is_established
        uid = generate_uid()
        status, _ = assoc.send_n_create(mpps_create(), sf.MPPS, uid)
        assert status.Status == 0x0000
        assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
        # The order is still open while the step is: no quiet-period completion.
        with sf.scp(hub) as scp2:
            assert sf.send(scp2.port, [sf.instance(accession="A1001")]) == [0]
        later = utcnow() + timedelta(hours=5)
        assert sf.complete_quiet(hub, now=later) == []

        status, _ = assoc.send_n_create(mpps_create(), sf.MPPS, uid)
        assert status.Status == 0x0111  # duplicate SOP instance
        status, _ = assoc.send_n_create(mpps_create("COMPLETED"), sf.MPPS, generate_uid())
        assert status.Status == 0x0106  # N-CREATE must be IN PROGRESS
        status, _ = assoc.send_n_set(mpps_set("COMPLETED"), sf.MPPS, generate_uid())
        assert status.Status == 0x0112  # no such SOP instance

        status, _ = assoc.send_n_set(mpps_set("COMPLETED"), sf.MPPS, uid)
        assert status.Status == 0x0000
        assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "completed"
        status, _ = assoc.send_n_set(mpps_set("DISCONTINUED"), sf.MPPS, uid)
        assert status.Status == 0x0110  # final state: no more N-SETs
        assoc.release()

    with hub.db.read_session() as s:
        step = s.scalars(select(Mpps)).one()
        assert step.status == "COMPLETED" and step.order_id == order["id"]
        assert "00400340" in step.attributes  # PerformedSeriesSequence from the N-SET
        assert s.get(Modality, "DX_ROOM1").last_report_at is not None


def test_discontinued_and_unscheduled_steps(hub: Hub, client: TestClient) -> None:
    order = place(client)
    with sf.scp(hub) as scp:
        assoc = sf.scu().associate("127.0.0.1", scp.port, ae_title="VETHUB")
        uid = generate_uid()
        assert assoc.send_n_create(mpps_create(), sf.MPPS, uid)[0].Status == 0
        assert assoc.send_n_set(mpps_set("DISCONTINUED"), sf.MPPS, uid)[0].Status == 0
        # Unscheduled: no accession, a device-made study UID; kept without an order.
        free = generate_uid()
        ds = mpps_create(accession="", study_uid=generate_uid())
        assert assoc.send_n_create(ds, sf.MPPS, free)[0].Status == 0
        assoc.release()
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "discontinued"
    with hub.db.read_session() as s:
        unscheduled = s.scalars(select(Mpps).where(Mpps.sop_instance_uid == free)).one()
        assert unscheduled.order_id is None and unscheduled.status == "IN PROGRESS"
