"""DICOM over TLS (VETHUB_DICOM_TLS_PORT): a second listener, same services and limits.

A CA made here by trustme signs the hub's certificate and the devices'; DCMTK
``echoscu +tls`` is the third-party client, pynetdicom the second.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from hub.context import Hub
from hub.tls import server_tls
from worklist.server import DicomDoor


@dataclass
class Pki:
    ca: Path
    device_cert: Path
    device_key: Path
    other_ca: Path  # a CA the hub does not trust for clients
    other_cert: Path
    other_key: Path


def _write(path: Path, blobs: list[bytes]) -> Path:
    path.write_bytes(b"".join(blobs))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    device, stranger = ca.issue_cert("device1"), other.issue_cert("device2")
    _write(tmp_path / "hub.pem", [b.bytes() for b in server.cert_chain_pems])
    _write(tmp_path / "hub.key", [server.private_key_pem.bytes()])
    return Pki(
        ca=_write(tmp_path / "ca.pem", [ca.cert_pem.bytes()]),
        device_cert=_write(tmp_path / "device.pem", [b.bytes() for b in device.cert_chain_pems]),
        device_key=_write(tmp_path / "device.key", [device.private_key_pem.bytes()]),
        other_ca=_write(tmp_path / "other-ca.pem", [other.cert_pem.bytes()]),
        other_cert=_write(tmp_path / "other.pem", [b.bytes() for b in stranger.cert_chain_pems]),
        other_key=_write(tmp_path / "other.key", [stranger.private_key_pem.bytes()]),
    )


@contextmanager
def tls_door(hub: Hub, pki: Pki, *, client_ca: bool = False) -> Iterator[DicomDoor]:
    """The door with its TLS port (requiring client certificates with ``client_ca``)."""
    s = hub.settings
    s.dicom_tls_port = 0
    s.tls_cert, s.tls_key = pki.ca.parent / "hub.pem", pki.ca.parent / "hub.key"
    s.tls_client_ca = pki.ca if client_ca else None
    hub.tls = server_tls(s)
    door = DicomDoor(hub)
    asyncio.run(door.start())
    try:
        yield door
    finally:
        door.stop_blocking(grace=1)


def client_context(pki: Pki, *, with_cert: bool, cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca)
    if with_cert:
        key = pki.device_key if cert in (None, pki.device_cert) else pki.other_key
        ctx.load_cert_chain(cert or pki.device_cert, key)
    return ctx


def tls_associate(port: int, ctx: ssl.SSLContext) -> Association:
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="VETHUB", tls_args=(ctx, "127.0.0.1"))


def echo_over(assoc: Association) -> bool:
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


def echoscu(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    cmd = ["echoscu", *tls, "-aet", "DX_ROOM1", "-aec", "VETHUB", "-to", "10"]
    return subprocess.run(
        [*cmd, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60
    )


def plain_echo(port: int) -> bool:
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(Verification)
    return echo_over(ae.associate("127.0.0.1", port, ae_title="VETHUB"))


def test_dcmtk_and_pynetdicom_echo_over_tls(hub: Hub, pki: Pki) -> None:
    with tls_door(hub, pki) as door:
        _echo_over_tls(door, pki)


def _echo_over_tls(door: DicomDoor, pki: Pki) -> None:
    port = door.tls_port
    assert port is not None and door.server is not None
    assert port != door.server.server_address[1]
    out = echoscu(port, "+tls", str(pki.device_key), str(pki.device_cert), "+cf", str(pki.ca))
    assert out.returncode == 0, out.stderr
    assert echo_over(tls_associate(port, client_context(pki, with_cert=False)))
    # plain DICOM on the TLS port is no association
    assert echoscu(port).returncode != 0
    # the plain port still works, same services
    assert plain_echo(door.server.server_address[1])


def test_client_certificates_are_required_when_a_client_ca_is_set(hub: Hub, pki: Pki) -> None:
    with tls_door(hub, pki, client_ca=True) as door:
        _only_certified_clients(door, pki)


def _only_certified_clients(door: DicomDoor, pki: Pki) -> None:
    port = door.tls_port
    assert port is not None and door.server is not None
    assert not echo_over(tls_associate(port, client_context(pki, with_cert=False)))
    anonymous = echoscu(port, "+tla", "+cf", str(pki.ca))
    assert anonymous.returncode != 0
    foreign = client_context(pki, with_cert=True, cert=pki.other_cert)
    assert not echo_over(tls_associate(port, foreign))
    assert echo_over(tls_associate(port, client_context(pki, with_cert=True)))
    out = echoscu(port, "+tls", str(pki.device_key), str(pki.device_cert), "+cf", str(pki.ca))
    assert out.returncode == 0, out.stderr
    assert plain_echo(door.server.server_address[1])


def test_a_silent_client_does_not_stall_the_tls_listener(hub: Hub, pki: Pki) -> None:
    """pynetdicom does the handshake in the accepting thread: one silent socket
    there kept every other device out. Here it waits in its own thread, bounded by ARTIM."""
    hub.settings.dicom_artim_seconds = 1
    with tls_door(hub, pki) as door:
        assert door.tls_port is not None
        quiet = socket.create_connection(("127.0.0.1", door.tls_port), timeout=5)
        time.sleep(0.1)
        started = time.monotonic()
        assert echo_over(tls_associate(door.tls_port, client_context(pki, with_cert=False)))
        assert time.monotonic() - started < 0.9  # before ARTIM freed the listener
        quiet.settimeout(5)
        assert quiet.recv(1) == b""  # and the silent one is closed after ARTIM
        quiet.close()
    with pytest.raises(OSError):  # stop() closed both listeners
        socket.create_connection(("127.0.0.1", door.tls_port), timeout=2).close()


def test_no_tls_port_without_the_setting(hub: Hub) -> None:
    door = DicomDoor(hub)
    asyncio.run(door.start())
    try:
        assert door.tls_port is None and door.tls_server is None
    finally:
        door.stop_blocking(grace=1)
