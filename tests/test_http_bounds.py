"""The HTTP door's bounds, at the socket (issue #9 red-team pass).

A hub is served with a 1 MB body limit and a 1 s header deadline, so each
bound is seen to bite quickly, while an ordinary request is still served.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ADMIN_KEY, ServedHub, start_hub


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    data: Path = tmp_path_factory.mktemp("bounded")
    served = start_hub(
        data,
        f"sqlite:///{data / 'vethub.db'}",
        VETHUB_HTTP_MAX_BODY_MB="1",
        VETHUB_HTTP_HEADER_TIMEOUT_SECONDS="1",
    )
    yield served
    served.stop()


def _connect(hub: ServedHub) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", hub.http), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s of silence)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_huge_content_length_is_refused_before_the_body(bounded: ServedHub) -> None:
    with _connect(bounded) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: hub\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n"
        )
        raw = _read_all(sock)
    status, body = _status_and_body(raw)
    assert status == 413
    assert "1048576 bytes" in str(body["detail"])
    assert time.monotonic() - started < 5


def test_chunked_body_over_the_limit_is_refused(bounded: ServedHub) -> None:
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with _connect(bounded) as sock:
        sock.sendall(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: hub\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(17):  # 1 MB + 64 KB
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the hub may close as soon as it has answered
        raw = _read_all(sock)
    status, body = _status_and_body(raw)
    assert status == 413
    assert "larger than the hub accepts" in str(body["detail"])


def test_chunked_body_under_the_limit_is_read(bounded: ServedHub) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"patient_name": '
        yield b"42}"

    with bounded.api() as api:
        response = api.post(
            "/api/v1/orders", content=body(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422  # read and validated, not refused for size


def test_anonymous_malformed_json_gets_401(bounded: ServedHub) -> None:
    response = httpx.post(
        f"{bounded.url}/api/v1/orders",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert response.json()["detail"].startswith("an API key is required")
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_key(bounded: ServedHub) -> None:
    assert httpx.get(f"{bounded.url}/health").status_code == 200


def test_trickled_headers_are_cut_off_while_others_are_served(bounded: ServedHub) -> None:
    outcome: dict[str, object] = {}

    def trickle() -> None:
        with _connect(bounded) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n")
            try:
                for byte in b"X-Slow: " + b"a" * 200:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            outcome["raw"] = _read_all(sock)
            outcome["seconds"] = time.monotonic() - started

    slow = threading.Thread(target=trickle)
    slow.start()
    time.sleep(0.3)
    with bounded.api() as api:
        assert api.get("/health").status_code == 200
    slow.join(30)
    assert not slow.is_alive()
    assert outcome["raw"].startswith(b"HTTP/1.1 408")  # type: ignore[union-attr]
    assert outcome["seconds"] < 4  # 1 s deadline; 20 s if it were not cut


def test_slow_body_is_not_cut_by_the_header_deadline(bounded: ServedHub) -> None:
    form = b"key=wrong&next=%2Fviewer%2F"
    with _connect(bounded) as sock:
        sock.sendall(
            b"POST /viewer/sign-in HTTP/1.1\r\nHost: hub\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(form)).encode() + b"\r\n\r\n"
        )
        for i in range(0, len(form), 9):
            sock.sendall(form[i : i + 9])
            time.sleep(0.5)
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 401")  # the sign-in form again: the key is wrong


def test_keep_alive_connection_serves_a_second_request(bounded: ServedHub) -> None:
    with httpx.Client(base_url=bounded.url) as api:
        assert api.get("/health").status_code == 200
        time.sleep(1.5)  # past the header deadline, inside keep-alive: the deadline
        assert api.get("/health").status_code == 200  # closed it, httpx reconnects


def test_docs_and_schema_need_no_key(bounded: ServedHub) -> None:
    assert httpx.get(f"{bounded.url}/openapi.json").status_code == 200
    assert httpx.get(f"{bounded.url}/docs").status_code == 200
    assert httpx.get(f"{bounded.url}/metrics").status_code == 200


def test_connections_past_the_limit_get_503(tmp_path: Path) -> None:
    served = start_hub(
        tmp_path, f"sqlite:///{tmp_path / 'vethub.db'}", VETHUB_HTTP_MAX_CONNECTIONS="3"
    )
    try:
        held = [_connect(served) for _ in range(3)]
        time.sleep(0.3)
        assert httpx.get(f"{served.url}/health").status_code == 503
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{served.url}/health").status_code == 200
    finally:
        served.stop()
