"""The HL7 door on a hostile network: connections per source address, and an idle
deadline that bytes trickled outside a message cannot push back (issue #9)."""

from __future__ import annotations

import logging
import select
import socket
import time

import pytest

from adapters.hl7.mllp import START
from hub.context import Hub
from tests.mllp_client import DoorThread, MllpClient, ack_segments, sample


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection from ``source`` (Linux routes all of 127/8 to lo: another peer)."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def _closed_by_hub(socks: list[socket.socket], wait: float) -> set[socket.socket]:
    """The sockets the hub closes within ``wait`` seconds (EOF or reset)."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.05)
        for s in ready:
            try:
                if s.recv(100) == b"":
                    closed.add(s)
            except ConnectionError:
                closed.add(s)
    return closed


def _mllp_from(port: int, source: str) -> MllpClient:
    client = MllpClient.__new__(MllpClient)
    client.sock = _connect(port, source)
    client.buf = bytearray()
    return client


def test_one_address_gets_its_share_and_others_are_still_served(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.hl7.server")
    door = DoorThread(hub, max_connections=50, max_connections_per_peer=5)
    flood: list[socket.socket] = []
    try:
        flood = [_connect(door.port) for _ in range(20)]
        closed = _closed_by_hub(flood, 1.0)
        assert len(closed) == 15  # five idle connections kept, the rest closed at once
        kept = [s for s in flood if s not in closed]
        # another address is served while 127.0.0.1 is at its cap...
        with _mllp_from(door.port, "127.0.0.2") as other:
            assert ack_segments(other.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
        # ...and one more from 127.0.0.1 is not
        extra = _connect(door.port)
        assert _closed_by_hub([extra], 1.0) == {extra}
        extra.close()
        # a freed place is usable again by the same address
        kept[0].close()
        time.sleep(0.2)
        with _mllp_from(door.port, "127.0.0.1") as again:
            assert ack_segments(again.send(sample("adt_a08.hl7")))["MSA"][1] == "AA"
    finally:
        for s in flood:
            s.close()
        door.stop()
    # 16 refusals, one warning naming the address: a flood does not flood the log
    refusals = [r for r in caplog.records if "from this address" in r.getMessage()]
    assert [getattr(r, "peer", None) for r in refusals] == ["127.0.0.1"]


def test_limits_default_to_the_settings(hub: Hub) -> None:
    hub.settings = hub.settings.model_copy(
        update={
            "hl7_max_connections": 7,
            "hl7_max_connections_per_peer": 3,
            "hl7_idle_seconds": 9.0,
            "hl7_frame_seconds": 4.0,
        }
    )
    door = DoorThread(hub)
    try:
        d = door.door
        assert (d.max_connections, d.max_connections_per_peer) == (7, 3)
        assert (d.idle_timeout, d.frame_timeout, d.tls_port) == (9.0, 4.0, None)
        socks = [_connect(door.port) for _ in range(4)]
        assert len(_closed_by_hub(socks, 0.5)) == 1
        for s in socks:
            s.close()
    finally:
        door.stop()


def _trickle(port: int, byte: bytes, every: float, limit: float) -> float | None:
    """Send ``byte`` every ``every`` s; seconds until the hub closed, or None within ``limit``."""
    sock = _connect(port)
    sock.settimeout(every)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < limit:
            try:
                sock.sendall(byte)
                while True:  # drain ACKs of broken frames; EOF means closed
                    if sock.recv(65536) == b"":
                        return time.monotonic() - t0
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0
        return None
    finally:
        sock.close()


def test_bytes_outside_a_message_do_not_keep_a_connection(hub: Hub) -> None:
    door = DoorThread(hub, idle_timeout=0.6, frame_timeout=0.4)
    try:
        # one stray byte every 0.1 s: closed at the idle deadline all the same
        took = _trickle(door.port, b"x", 0.1, 3.0)
        assert took is not None and 0.5 <= took < 1.5, took
        # frames begun again and again (each cut short by the next 0x0B): idle + frame at most
        took = _trickle(door.port, START, 0.1, 3.0)
        assert took is not None and took < 1.8, took
    finally:
        door.stop()


def test_complete_messages_keep_a_connection_open(hub: Hub) -> None:
    door = DoorThread(hub, idle_timeout=0.6, frame_timeout=0.4)
    try:
        with door.client() as c:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5:  # past the idle timeout, one message at a time
                assert ack_segments(c.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
                time.sleep(0.3)
            c.sock.settimeout(2.0)
            t1 = time.monotonic()
            assert c.sock.recv(100) == b""  # then silence: closed after the idle timeout
            assert 0.1 < time.monotonic() - t1 < 1.0
    finally:
        door.stop()


def test_a_full_door_closes_its_idlest_connection_for_a_sender(hub: Hub) -> None:
    """Idle sockets from many addresses (each under its cap) fill the door; a real
    sender still gets in, and the connections that never sent a message go first."""
    door = DoorThread(hub, max_connections=6, max_connections_per_peer=5)
    held: list[socket.socket] = []
    try:
        with _mllp_from(door.port, "127.0.0.9") as worker:
            assert ack_segments(worker.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
            held = [_connect(door.port, f"127.0.1.{n}") for n in range(1, 6)]  # door full now
            time.sleep(0.2)
            assert _closed_by_hub(held, 0.3) == set()
            with _mllp_from(door.port, "127.0.0.2") as sender:
                assert ack_segments(sender.send(sample("adt_a08.hl7")))["MSA"][1] == "AA"
            # the oldest silent socket made room; the sender that had worked was kept
            assert _closed_by_hub(held, 1.0) == {held[0]}
            assert ack_segments(worker.send(sample("adt_a08.hl7")))["MSA"][1] == "AA"
    finally:
        for s in held:
            s.close()
        door.stop()
