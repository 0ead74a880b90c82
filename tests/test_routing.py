"""Routing rules and the ``dicom-forward`` delivery kind, against DCMTK ``storescp``
as the destination (a registered node), on SQLite and PostgreSQL.

A CT route forwards a CT study (files arrive byte for byte, progress shown);
a destination that is down and comes back gets a study sent by hand exactly
once; a node registered with ``tls`` gets it over TLS; no acknowledged
instance is ever sent again (``storescp +uf`` writes every reception to a new
file, so a resend would show as an extra file).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient
from pydicom import dcmread
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from sqlalchemy import update
from sqlmodel import col

from hub.context import Hub
from hub.models import Delivery, utcnow
from hub.serve import delivery_kinds
from hub.services import events, routes
from hub.services.deliveries.kinds import Target
from hub.services.deliveries.leases import claim, settle_many
from hub.services.deliveries.worker import DeliveryWorker
from tests.harness import free_port, key_for, start_listener, write_cert
from tests.study_factory import CT, complete_quiet, instance, paths, place, store

STORESCP = shutil.which("storescp")
pytestmark = pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp is not installed")


class StoreScp:
    """One DCMTK storescp writing each reception to its own file."""

    def __init__(self, ae: str, port: int, out: Path, *options: str) -> None:
        assert STORESCP is not None
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.port = out, port
        self.proc = start_listener(
            [STORESCP, "-aet", ae, "+uf", "-od", str(out), *options, str(port)], port
        )

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture(scope="module")
def telerad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    scp = StoreScp("TELERAD", free_port(), tmp_path_factory.mktemp("telerad"))
    yield scp
    scp.stop()


@pytest.fixture
def worker(hub: Hub) -> Iterator[DeliveryWorker]:
    values = {"delivery_timeout_seconds": 3, "delivery_backoff_seconds": 60}
    w = DeliveryWorker(hub.db, hub.settings.model_copy(update=values), delivery_kinds())
    yield w
    w.stop()


def due_now(hub: Hub) -> None:
    """Make a backoff wait due at once (the test does not sleep through it)."""
    with hub.db.session() as s:
        s.execute(
            update(Delivery)
            .where(col(Delivery.status) == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def body(path: Path | str) -> bytes:
    """A Part 10 file's data set, after its file meta group (whose length it states)."""
    raw = Path(path).read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


def register(client: TestClient, ae: str, port: int) -> None:
    r = client.put(f"/api/v1/modalities/{ae}", json={"host": "127.0.0.1", "port": port})
    assert r.status_code in (200, 201), r.text


def forwards(client: TestClient) -> list[dict]:
    r = client.get("/api/v1/deliveries", params={"kind": "dicom-forward"})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_routes_are_kept_and_bad_ones_refused_by_field(hub: Hub, client: TestClient) -> None:
    register(client, "TELERAD", 11112)
    client.put("/api/v1/modalities/CT_MAIN", json={"modality": "CT"})  # no host, no port
    route = {"destination": "TELERAD", "when": "completed", "filter": {"modality": ["CT"]}}
    r = client.put("/api/v1/routes/ct-to-telerad", json=route)
    assert r.status_code == 201, r.text
    assert r.json()["filter"] == {"modality": ["CT"]} and r.json()["enabled"] is True
    assert (
        client.put("/api/v1/routes/ct-to-telerad", json={**route, "enabled": False}).status_code
        == 200
    )
    [shown] = client.get("/api/v1/routes").json()
    assert shown["name"] == "ct-to-telerad" and shown["enabled"] is False
    assert shown["when"] == "completed"

    def refused(body: dict, name: str = "r") -> list[dict]:
        r = client.put(f"/api/v1/routes/{name}", json=body)
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    assert "not registered" in str(refused({"destination": "NOBODY"}))
    assert "destination" in str(refused({"destination": "NOBODY"}))
    assert "without host and port" in str(refused({"destination": "CT_MAIN"}))
    assert "filter.colour" in str(refused({"destination": "TELERAD", "filter": {"colour": "red"}}))
    assert "filter.modality" in str(refused({"destination": "TELERAD", "filter": {"modality": 7}}))
    assert "when" in str(refused({"destination": "TELERAD", "when": "tuesday"}))
    assert "name" in str(refused({"destination": "TELERAD"}, name="no%20spaces"))
    assert client.delete("/api/v1/routes/ct-to-telerad").status_code == 204
    assert client.delete("/api/v1/routes/ct-to-telerad").status_code == 404
    assert client.get("/api/v1/routes").json() == []
    # Routes are an admin's; a technician may not set them.
    tech = TestClient(client.app, headers={"Authorization": f"Bearer {key_for(hub, 'tech')}"})
    assert tech.put("/api/v1/routes/x", json=route).status_code == 403


def test_a_ct_route_forwards_ct_studies_byte_for_byte_and_late_instances_too(
    hub: Hub, client: TestClient, telerad: StoreScp, worker: DeliveryWorker
) -> None:
    register(client, "TELERAD", telerad.port)
    route = {"destination": "TELERAD", "when": "received", "filter": {"modality": ["CT"]}}
    assert client.put("/api/v1/routes/ct", json=route).status_code == 201
    before = set(telerad.files())
    study = "1.2.826.0.1.3680043.10.999.1"
    for n in (1, 2):
        store(hub, instance(study_uid=study, sop_class=CT, modality="CT", InstanceNumber=str(n)))
    store(hub, instance(modality="DX"))  # another study: no route for it
    worker.run_once()
    [d] = forwards(client)
    assert d["status"] == "delivered", d
    assert d["payload"]["route"] == "ct" and d["source"] == "TELERAD"
    assert d["payload"]["progress"] == {"sent": 2, "total": 2, "failed": []}
    arrived = set(telerad.files()) - before
    assert sorted(body(p) for p in arrived) == sorted(body(p) for p in paths(hub, study))

    # A late instance of the routed study goes too, alone, on the same delivery.
    store(hub, instance(study_uid=study, sop_class=CT, modality="CT", InstanceNumber="3"))
    worker.run_once()
    [d] = forwards(client)
    assert d["status"] == "delivered" and d["payload"]["progress"]["sent"] == 3
    arrived = set(telerad.files()) - before
    assert len(arrived) == 3
    assert sorted(body(p) for p in arrived) == sorted(body(p) for p in paths(hub, study))


def test_a_study_sent_by_hand_to_a_node_that_is_down_arrives_once_when_it_is_back(
    hub: Hub, client: TestClient, worker: DeliveryWorker, tmp_path: Path
) -> None:
    port = free_port()
    register(client, "REFERRAL", port)
    study = "1.2.826.0.1.3680043.10.999.2"
    for n in (1, 2):
        store(hub, instance(study_uid=study, sop_class=CT, modality="CT", InstanceNumber=str(n)))
    tech = TestClient(client.app, headers={"Authorization": f"Bearer {key_for(hub, 'tech')}"})
    r = tech.post(f"/api/v1/studies/{study}/send", json={"destination": "REFERRAL"})
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["kind"] == "dicom-forward" and sent["id"] > 0
    assert (
        tech.post("/api/v1/studies/1.2.3/send", json={"destination": "REFERRAL"}).status_code == 404
    )
    r = tech.post(f"/api/v1/studies/{study}/send", json={"destination": "NOBODY"})
    assert r.status_code == 422 and "destination" in r.text

    worker.run_once()  # nobody listens yet
    [d] = forwards(client)
    assert d["status"] == "pending" and d["attempts"] == 1
    assert "REFERRAL at 127.0.0.1" in d["last_error"], d

    scp = StoreScp("REFERRAL", port, tmp_path / "referral")
    try:
        due_now(hub)
        worker.run_once()
        [d] = forwards(client)
        assert d["status"] == "delivered" and d["attempts"] == 2, d
        assert d["payload"]["progress"] == {"sent": 2, "total": 2, "failed": []}
        due_now(hub)
        worker.run_once()  # nothing left to do, nothing sent again
        assert len(scp.files()) == 2
        assert sorted(body(p) for p in scp.files()) == sorted(body(p) for p in paths(hub, study))
    finally:
        scp.stop()
    with hub.db.read_session() as s:
        [entry], _ = events.audit_trail(s, action="send")
    assert entry.target_id == study and entry.detail == {
        "destination": "REFERRAL",
        "delivery_id": sent["delivery_id"],
    }


def test_a_completed_route_waits_for_the_order_and_filters_on_it(
    hub: Hub, client: TestClient, telerad: StoreScp, worker: DeliveryWorker
) -> None:
    register(client, "TELERAD", telerad.port)
    thorax = {"procedure_code": ["XR-THORAX"], "source": "pims-main", "site": "main"}
    for name, flt in (("thorax", thorax), ("branch", {"site": "branch"})):
        route = {"destination": "TELERAD", "when": "completed", "filter": flt}
        assert client.put(f"/api/v1/routes/{name}", json=route).status_code == 201
    order = place(client)
    store(hub, instance(accession=order["accession_number"], StationName="DX1"))
    worker.run_once()
    assert forwards(client) == []  # received, not yet complete
    assert complete_quiet(hub, now=utcnow() + timedelta(days=1)) == [order["id"]]
    worker.run_once()
    [d] = forwards(client)
    assert d["event"] == "order.completed" and d["payload"]["route"] == "thorax"
    assert d["status"] == "delivered" and d["payload"]["progress"]["sent"] == 1


def test_a_forward_cut_short_resumes_without_resending_what_was_acknowledged(
    hub: Hub, client: TestClient, telerad: StoreScp, worker: DeliveryWorker
) -> None:
    register(client, "TELERAD", telerad.port)
    study = "1.2.826.0.1.3680043.10.999.3"
    sops = [f"{study}.{n}" for n in (1, 2, 3)]
    for n, sop in enumerate(sops, 1):
        store(hub, instance(study_uid=study, sop_uid=sop, modality="CT", InstanceNumber=str(n)))
    sent = client.post(f"/api/v1/studies/{study}/send", json={"destination": "TELERAD"}).json()
    # What a hub killed after the destination took the first instance leaves behind.
    with hub.db.session() as s:
        routes.note(s, sent["id"], sops[0])
    before = set(telerad.files())
    worker.run_once()
    [d] = forwards(client)
    assert d["status"] == "delivered" and d["payload"]["progress"]["sent"] == 3
    arrived = set(telerad.files()) - before
    assert sorted(dcmread(p).SOPInstanceUID for p in arrived) == sops[1:]


def test_a_node_registered_with_tls_gets_the_study_over_tls(
    hub: Hub, client: TestClient, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, key = write_cert(ca, tmp_path / "node", "node")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    r = client.put(
        "/api/v1/modalities/TELERAD_TLS", json={"host": "127.0.0.1", "port": port, "tls": True}
    )
    assert r.status_code == 201, r.text
    study = "1.2.826.0.1.3680043.10.999.4"
    store(hub, instance(study_uid=study, sop_class=CT, modality="CT"))
    client.post(f"/api/v1/studies/{study}/send", json={"destination": "TELERAD_TLS"})
    values = {"delivery_timeout_seconds": 3, "tls_extra_ca": ca_file}
    w = DeliveryWorker(hub.db, hub.settings.model_copy(update=values), delivery_kinds())
    scp = StoreScp("TELERAD_TLS", port, tmp_path / "tls", "+tls", str(key), str(cert), "-ic")
    try:
        w.run_once()
        [d] = forwards(client)
        assert d["status"] == "delivered", d
        [arrived] = scp.files()
        assert body(arrived) == body(paths(hub, study)[0])
    finally:
        scp.stop()
        w.stop()


def test_a_destination_that_drops_the_association_mid_study_gets_the_rest_once(
    hub: Hub, client: TestClient, worker: DeliveryWorker
) -> None:
    """The association is aborted after the first instance: the delivery keeps what
    was acknowledged, retries, and the destination holds each instance exactly once."""
    received: list[str] = []
    dropped: list[bool] = []

    def on_store(event: evt.Event) -> int:
        if len(received) == 1 and not dropped:
            dropped.append(True)
            event.assoc.abort()
            return 0xA700
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="FLAKY")
    ae.add_supported_context(CT, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        register(client, "FLAKY", port)
        study = "1.2.826.0.1.3680043.10.999.5"
        sops = [f"{study}.{n}" for n in (1, 2, 3)]
        for n, sop in enumerate(sops, 1):
            store(hub, instance(study_uid=study, sop_uid=sop, sop_class=CT, InstanceNumber=str(n)))
        client.post(f"/api/v1/studies/{study}/send", json={"destination": "FLAKY"})
        worker.run_once()
        [d] = forwards(client)
        assert dropped and d["status"] == "pending", d
        assert d["payload"]["progress"]["sent"] == 1, d
        due_now(hub)
        worker.run_once()
        [d] = forwards(client)
        assert d["status"] == "delivered" and d["payload"]["progress"]["sent"] == 3, d
        assert sorted(received) == sops  # each once: the first was not sent again
    finally:
        server.shutdown()


def test_an_instance_landing_as_a_forward_settles_is_sent_once(
    hub: Hub, client: TestClient, telerad: StoreScp, worker: DeliveryWorker
) -> None:
    """The gap between an attempt's last listing of the study and its settling:
    an instance stored there finds the forward still in flight (nothing for
    ``rearm`` to re-arm); settling sees it and puts the forward back to pending."""
    register(client, "TELERAD", telerad.port)
    study = "1.2.826.0.1.3680043.10.999.6"
    sops = [f"{study}.{n}" for n in (1, 2, 3)]
    for n, sop in enumerate(sops[:2], 1):
        store(hub, instance(study_uid=study, sop_uid=sop, sop_class=CT, InstanceNumber=str(n)))
    client.post(f"/api/v1/studies/{study}/send", json={"destination": "TELERAD"})
    before = set(telerad.files())
    with hub.db.session() as s:
        [c] = claim(s, worker.policy)
    worker.senders[routes.KIND](Target.node("TELERAD"), c)  # the attempt: two sent
    store(hub, instance(study_uid=study, sop_uid=sops[2], sop_class=CT, InstanceNumber="3"))
    with hub.db.session() as s:
        settle_many(s, [(c, None, False, None)], worker.policy)
    [d] = forwards(client)
    assert d["status"] == "pending", d  # not delivered: the third is not there yet
    worker.run_once()
    [d] = forwards(client)
    assert d["status"] == "delivered" and d["payload"]["progress"]["sent"] == 3, d
    arrived = set(telerad.files()) - before
    assert sorted(dcmread(p).SOPInstanceUID for p in arrived) == sops  # each once
