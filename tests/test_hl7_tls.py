"""HL7 over TLS (``VETHUB_HL7_TLS_PORT``): the same door behind the hub's certificate."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select

from adapters.hl7.mllp import END, START
from hub.context import Hub
from hub.models.messages import InboundMessage
from hub.tls import server_tls
from tests.mllp_client import DoorThread, MllpClient, ack_segments, sample


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_door(hub: Hub, ca: trustme.CA, tmp_path: Path) -> Iterator[DoorThread]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "hub.pem", tmp_path / "hub.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    hub.settings = hub.settings.model_copy(
        update={"tls_cert": cert_path, "tls_key": key_path, "hl7_tls_port": 0}
    )
    hub.tls = server_tls(hub.settings)
    door = DoorThread(hub, max_connections_per_peer=2)
    yield door
    door.stop()


def _tls_client(port: int, ca: trustme.CA) -> MllpClient:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    client = MllpClient.__new__(MllpClient)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sock = ctx.wrap_socket(raw, server_hostname="localhost")
    client.buf = bytearray()
    return client


def _logged(hub: Hub, control_id: str) -> int:
    with hub.db.read_session() as s:
        query = select(func.count()).where(InboundMessage.control_id == control_id)  # type: ignore[arg-type]
        return s.scalar(query) or 0


def test_messages_over_tls_are_acknowledged(hub: Hub, tls_door: DoorThread, ca: trustme.CA) -> None:
    port = tls_door.door.tls_port
    assert port is not None and port != tls_door.port
    with _tls_client(port, ca) as c:
        assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version() in ("TLSv1.2", "TLSv1.3")
        ack = ack_segments(c.send(sample("adt_a04.hl7")))
        assert ack["MSA"][1:3] == ["AA", "PMS000080"]
        ack = ack_segments(c.send(sample("adt_a08.hl7")))  # the connection goes on
        assert ack["MSA"][1] == "AA"
    with tls_door.client() as c:  # the plain port is still there
        assert ack_segments(c.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"


def test_plain_tcp_to_the_tls_port_gets_nothing_processed(
    hub: Hub, tls_door: DoorThread, ca: trustme.CA
) -> None:
    port = tls_door.door.tls_port
    assert port is not None
    message = sample("adt_a04.hl7").replace(b"PMS000080", b"PLAIN1")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(START + message + END)
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    assert b"MSA" not in got  # no ACK: the handshake failed and the connection closed
    with _tls_client(port, ca) as c:  # while TLS clients are served
        assert ack_segments(c.send(message.replace(b"PLAIN1", b"TLS1")))["MSA"][1] == "AA"
    assert _logged(hub, "PLAIN1") == 0 and _logged(hub, "TLS1") == 1


def test_the_tls_port_has_the_same_limits(hub: Hub, tls_door: DoorThread, ca: trustme.CA) -> None:
    port = tls_door.door.tls_port
    assert port is not None
    first, second = _tls_client(port, ca), _tls_client(port, ca)
    try:
        third = _tls_client(port, ca)  # over the per-address cap of 2: closed after the handshake
        third.sock.settimeout(2)
        assert third.sock.recv(100) == b""
        third.close()
        assert ack_segments(first.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
    finally:
        first.close()
        second.close()
