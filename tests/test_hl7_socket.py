"""The HL7 door of a real ``vethub serve``: bad streams, many connections, and the worklist."""

from __future__ import annotations

import random
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

from adapters.hl7.mllp import END, START
from hub.context import Hub
from tests.harness import ServedHub
from tests.mllp_client import DoorThread, MllpClient, ack_segments, sample
from tests.order_corpus import gen_orders, order_to_orm
from tests.worklist_scu import findscu


def test_fuzzed_stream_never_takes_the_listener_down(served_hub: ServedHub) -> None:
    assert served_hub.hl7
    port = served_hub.hl7
    good = sample("orm_o01_nw_v251_utf8.hl7")
    rng = random.Random(1234)
    with MllpClient(port) as c:
        # random bytes outside any frame are dropped; a good message after them is answered
        c.send_raw(bytes(rng.getrandbits(8) for _ in range(5000)).replace(b"\x0b", b""))
        assert ack_segments(c.send(good))["MSA"][1] == "AA"
        # a frame without its trailer, cut short by the next frame: both answered
        c.send_raw(START + good.replace(b"PMS000042", b"TRUNC1")[:150])
        c.send_raw(START + good.replace(b"PMS000042", b"AFTER1") + END)
        cut, after = ack_segments(c.read()), ack_segments(c.read())
        assert cut["MSA"][1:3] == ["AR", "TRUNC1"] and "not terminated" in cut["ERR"][8]
        assert after["MSA"][1:3] == ["AA", "AFTER1"]
        # NUL bytes, wrong MSH separators, random bytes inside a frame: AR each
        for bad in (
            good.replace(b"^Rex|", b"^R\x00ex|").replace(b"PMS000042", b"NUL1"),
            b"MSH|^^^^|A|B|C|D|1||ORM^O01|SEP1|P|2.5\r",
            b"MSHX^~\\&XA",
            bytes(rng.getrandbits(8) for _ in range(3000))
            .replace(b"\x0b", b"")
            .replace(b"\x1c", b""),
        ):
            assert ack_segments(c.send(bad), "latin-1")["MSA"][1] == "AR"
        # a 10 MB frame is refused by size but still answered with its MSH-10
        big = good.replace(b"PMS000042", b"BIG1") + b"NTE|1||" + b"x" * 10_000_000 + b"\r"
        ack = ack_segments(c.send(big))
        assert ack["MSA"][1:3] == ["AR", "BIG1"] and "larger" in ack["ERR"][8]
        assert ack_segments(c.send(good))["MSA"][1] == "AA"  # resend: same answer
    # a client that vanishes mid-frame does not hurt the next one
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(START + good[:40])
    s.close()
    with MllpClient(port) as c:
        assert ack_segments(c.send(good.replace(b"PMS000042", b"LAST")))["MSA"][1] == "AA"
    with served_hub.api() as api:
        rows = api.get("/api/v1/messages", params={"limit": 100}).json()["items"]
        orders = api.get("/api/v1/orders").json()["items"]
    assert len(orders) == 1 and orders[0]["patient"]["name"] == "Rex"
    outcomes = [r["outcome"] for r in reversed(rows)]
    assert outcomes.count("AA") == 4 and outcomes.count("AR") >= 7
    assert served_hub.process.poll() is None


def test_bench_layout_over_many_connections_then_findscu(
    served_hub: ServedHub, tmp_path: Path
) -> None:
    assert served_hub.hl7
    today = datetime.now().strftime("%Y-%m-%d")
    orders = gen_orders(40, seed=7)
    for i, o in enumerate(orders):
        o["scheduled_start"] = f"{today}T{8 + i % 10:02d}:{i % 60:02d}:00"
    errors: list[str] = []

    def send(part: list[tuple[int, dict]]) -> None:
        with MllpClient(served_hub.hl7) as c:  # type: ignore[arg-type]
            for i, o in part:
                ack = ack_segments(c.send(order_to_orm(o, f"BENCH{i}")))
                if ack["MSA"][1:3] != ["AA", f"BENCH{i}"]:
                    errors.append(f"{i}: {ack}")

    jobs = list(enumerate(orders))
    threads = [threading.Thread(target=send, args=(jobs[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with served_hub.api() as api:
        stored = api.get("/api/v1/orders", params={"limit": 100}).json()["items"]
    assert len(stored) == 40
    first = orders[0]
    proc, answers = findscu(
        served_hub.dicom,
        [
            f"AccessionNumber={first['accession_number']}",
            "PatientName",
            "PatientID",
            "PatientSpeciesDescription",
            "ResponsiblePerson",
            "ScheduledProcedureStepSequence[0].Modality",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        ],
        tmp_path / "mwl",
        aec=served_hub.ae_title,
    )
    assert proc.returncode == 0, proc.stderr
    [item] = answers
    owner = first["owner"].get("last_name") or first["owner"].get("organization")
    assert str(item.PatientName) == f"{owner}^{first['patient']['name']}"
    assert item.PatientID == first["patient"]["id"]
    sps = item.ScheduledProcedureStepSequence[0]
    assert sps.Modality == first["modality"]
    assert sps.ScheduledStationAETitle == first["station_ae_title"]


def test_idle_and_slow_clients_time_out(hub: Hub) -> None:
    door = DoorThread(hub, idle_timeout=0.5, frame_timeout=1.0)
    try:
        idle = socket.create_connection(("127.0.0.1", door.port), timeout=5)
        assert idle.recv(100) == b""  # closed by the hub
        slow = socket.create_connection(("127.0.0.1", door.port), timeout=5)
        slow.sendall(START + b"MSH|^~\\&|A|B|C|D|1||ADT^A08|SLOW1|P|2.5\r")
        t0 = time.monotonic()
        answer = b""
        while time.monotonic() - t0 < 4:
            slow.sendall(b"P")  # a byte at a time, never finishing the frame
            time.sleep(0.2)
            slow.settimeout(0.01)
            try:
                chunk = slow.recv(4096)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or END in answer:
                break
        assert b"MSA|AR|SLOW1" in answer
        with door.client() as c:  # the door still serves others
            assert ack_segments(c.send(sample("adt_a04.hl7")))["MSA"][1] == "AA"
    finally:
        door.stop()


def test_stop_finishes_the_message_in_flight(hub: Hub) -> None:
    door = DoorThread(hub)
    c = door.client()
    c.send_raw(START + sample("adt_a04.hl7") + END)
    time.sleep(0.2)
    door.stop()
    assert ack_segments(c.read())["MSA"][1] == "AA"
    c.close()


def test_connections_beyond_the_limit_are_refused_while_none_is_idle(hub: Hub) -> None:
    """Full, with every connection inside a message: a new one is closed at once (an
    idle one would have been closed instead: test_hl7_door_limits)."""
    door = DoorThread(hub, max_connections=2)
    try:
        first, second = door.client(), door.client()
        body = sample("adt_a04.hl7")
        for c in (first, second):
            c.send_raw(START + body[:20])  # a message under way
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", door.port), timeout=5)
        assert extra.recv(100) == b""  # closed at once
        extra.close()
        first.send_raw(body[20:] + END)
        assert ack_segments(first.read())["MSA"][1] == "AA"
        first.close()
        time.sleep(0.3)
        with door.client() as c:  # a freed place is usable again
            assert ack_segments(c.send(sample("adt_a08.hl7")))["MSA"][1] == "AA"
        second.close()
    finally:
        door.stop()
