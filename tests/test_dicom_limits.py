"""Issue #9: the DICOM door on a hostile network (association limits from settings).

The red team found 32 associations at most, a listen backlog of 5, idle
associations held 60 s, and 200 silent TCP connections from one address
refusing a real C-ECHO for ~30 s. Real sockets against an in-process door;
"another address" is 127.0.0.2 (Linux routes 127/8 to lo).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from hub.context import Hub
from worklist.server import DicomDoor, DoorServer

OTHER = "127.0.0.2"


@contextmanager
def door_with(hub: Hub, **settings: object) -> Iterator[DicomDoor]:
    for name, value in settings.items():
        setattr(hub.settings, name, value)
    door = DicomDoor(hub)
    asyncio.run(door.start())
    try:
        yield door
    finally:
        door.stop_blocking(grace=1)


def port_of(door: DicomDoor) -> int:
    assert door.server is not None
    return int(door.server.server_address[1])


def associate(port: int, *, source: str = "127.0.0.1", aet: str = "ECHOSCU") -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="VETHUB", bind_address=(source, 0))


def echo_ok(port: int, *, source: str = "127.0.0.1") -> bool:
    assoc = associate(port, source=source)
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


def silent(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection that sends nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the hub closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_listen_backlog_comes_from_settings(hub: Hub) -> None:
    """The red team measured 5 (pynetdicom's default)."""
    with door_with(hub, dicom_listen_backlog=77) as door:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port_of(door)}"], capture_output=True, text=True, check=True
        ).stdout.split()
    # ss shows a listening socket's backlog as its Send-Q
    assert out[0] == "LISTEN" and out[2] == "77", out
    assert DoorServer.request_queue_size == 5  # the class default is untouched


def test_associations_beyond_the_cap_are_refused_until_one_ends(hub: Hub) -> None:
    with door_with(hub, dicom_max_associations=2) as door:
        port = port_of(door)
        held = [associate(port), associate(port)]
        assert all(a.is_established for a in held)
        third = associate(port)
        assert third.is_rejected
        rj = third.acceptor.primitive
        # rejected-transient, by the service provider (presentation), local limit exceeded
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
        held.pop().release()
        deadline = time.monotonic() + 5
        while not echo_ok(port):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held[0].release()


def test_silent_connections_from_one_address_do_not_keep_devices_out(hub: Hub) -> None:
    """The red team's 200 silent sockets: the per-address cap closes those beyond it
    at once, and connections that never asked for an association do not count
    against the association cap."""
    settings = {
        "dicom_max_associations": 8,
        "dicom_max_associations_per_peer": 16,
        "dicom_artim_seconds": 60,
    }
    with door_with(hub, **settings) as door, ExitStack() as stack:
        port = port_of(door)
        socks = [stack.enter_context(silent(port)) for _ in range(200)]
        held, refused = socks[:16], socks[16:]
        assert all(closed_within(s, 2) for s in refused[:20])
        assert not any(closed_within(s, 0.05) for s in held)
        assert door.server is not None
        assert door.server.limits.slots.open_from("127.0.0.1") == 16  # 16 silent ones open...
        started = time.monotonic()
        assert echo_ok(port, source=OTHER)  # ...and another address is served at once
        assert time.monotonic() - started < 2
        # the same address is at its cap, whoever it is
        assert not associate(port).is_established
        assert not any(closed_within(s, 0.05) for s in held)


def test_a_silent_connection_is_closed_after_artim(hub: Hub) -> None:
    with door_with(hub, dicom_artim_seconds=0.5, dicom_max_associations_per_peer=2) as door:
        port = port_of(door)
        quiet = silent(port)
        # an A-ASSOCIATE-RQ header promising 200 bytes, then only a few of them
        half = silent(port)
        half.sendall(struct.pack(">BBL", 0x01, 0, 200) + b"\x00\x01")
        started = time.monotonic()
        assert closed_within(quiet, 5) and closed_within(half, 5)
        assert 0.3 < time.monotonic() - started < 4
        quiet.close()
        half.close()
        deadline = time.monotonic() + 3
        while door.server is not None and door.server.limits.slots.open_from("127.0.0.1"):
            assert time.monotonic() < deadline, "connection slots not given back"
            time.sleep(0.05)
        assert echo_ok(port)  # a device that does talk is unaffected by ARTIM


def test_a_request_trickled_in_a_byte_at_a_time_is_cut_at_artim(hub: Hub) -> None:
    """Each byte keeps pynetdicom's reader (and its socket timeout) busy: slowloris."""
    with door_with(hub, dicom_artim_seconds=1) as door:
        sock = silent(door_port := port_of(door))
        sock.sendall(struct.pack(">BBL", 0x01, 0, 10_000))
        started = time.monotonic()
        cut = False
        while not cut and time.monotonic() - started < 6:
            try:
                sock.sendall(b"\x00")
            except OSError:
                cut = True
                break
            cut = closed_within(sock, 0.3)
        assert cut, "still open while trickling"
        assert time.monotonic() - started < 3
        sock.close()
        assert echo_ok(door_port)


def test_an_idle_association_is_closed_after_the_idle_time(hub: Hub) -> None:
    with door_with(hub, dicom_idle_seconds=1) as door:
        assoc = associate(port_of(door))
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        started = time.monotonic()
        while assoc.is_established and time.monotonic() - started < 6:
            time.sleep(0.05)
        assert assoc.is_aborted and not assoc.is_established
        assert 0.8 < time.monotonic() - started < 4


def test_a_stopping_door_closes_silent_connections_at_once(hub: Hub) -> None:
    """They never asked for an association: closed as ARTIM would, not aborted after the grace."""
    hub.settings.dicom_artim_seconds = 60
    door = DicomDoor(hub)
    port = asyncio.run(door.start())
    socks = [silent(port) for _ in range(3)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        door.stop_blocking(grace=10)
        assert time.monotonic() - started < 3
        assert all(closed_within(s, 3) for s in socks)
    finally:
        for s in socks:
            s.close()
