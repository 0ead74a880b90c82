"""The HTTP door over TLS: ``vethub serve`` with VETHUB_TLS_CERT/KEY (issue #9).

One hub serves HTTPS with a certificate from a throwaway CA; the door's
bounds (401 before the body, 413 on a declared size) hold inside TLS, plain
HTTP and an untrusted client are refused, and ports.json says ``https``.
A bad certificate stops ``vethub serve`` with one line and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from hub.serve import door_ports, http_ports
from tests.harness import ADMIN_KEY, REPO, ServedHub, start_hub, trusting, write_cert


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def https_hub(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ServedHub]:
    data: Path = tmp_path_factory.mktemp("https")
    cert, key = write_cert(ca, data / "tls")
    served = start_hub(
        data / "served",
        f"sqlite:///{data / 'vethub.db'}",
        verify=trusting(ca),
        VETHUB_TLS_CERT=str(cert),
        VETHUB_TLS_KEY=str(key),
        VETHUB_HTTP_MAX_BODY_MB="1",
        VETHUB_HL7_TLS_PORT="0",
    )
    yield served
    served.stop()


def _tls_exchange(hub: ServedHub, ctx: ssl.SSLContext, request: bytes) -> bytes:
    """Send raw bytes inside TLS and read the whole answer (the hub closes after it)."""
    with (
        socket.create_connection(("127.0.0.1", hub.http), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
    return b"".join(chunks)


def test_serves_https_and_ports_json_says_so(https_hub: ServedHub) -> None:
    assert https_hub.url.startswith("https://")
    ports = json.loads((https_hub.data_dir / "ports.json").read_text())
    assert ports["https"] == https_hub.http and ports["http"] is None
    assert isinstance(ports["hl7_tls"], int) and ports["hl7_tls"] == https_hub.hl7_tls
    assert "dicom_tls" not in ports  # that door is off
    with https_hub.api() as api:
        assert api.get("/health").json() == {"status": "ok"}
        assert api.get("/api/v1/orders").status_code == 200
    ready = [ln for ln in https_hub.log().splitlines() if ln.startswith("vethub ready:")]
    assert ready == [
        f"vethub ready: https https://127.0.0.1:{https_hub.http}  dicom VETHUB@{https_hub.dicom}"
        f"  hl7 {https_hub.hl7}  hl7-tls {https_hub.hl7_tls}"
    ]


def test_anonymous_api_call_gets_401_inside_tls(https_hub: ServedHub) -> None:
    r = httpx.post(
        f"{https_hub.url}/api/v1/orders",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        verify=https_hub.verify,
    )
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_declared_huge_body_gets_413_inside_tls(https_hub: ServedHub, ca: trustme.CA) -> None:
    raw = _tls_exchange(
        https_hub,
        trusting(ca),
        b"POST /api/v1/orders HTTP/1.1\r\nHost: hub\r\n"
        b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert "1048576 bytes" in json.loads(body)["detail"]


def test_client_that_does_not_trust_the_ca_is_refused(https_hub: ServedHub) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_hub.url}/health")  # public CAs only


def test_plain_http_gets_no_answer_on_the_https_port(https_hub: ServedHub) -> None:
    with socket.create_connection(("127.0.0.1", https_hub.http), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``vethub serve`` expected to stop at start-up (a timeout fails the test)."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve"],
        env={
            **os.environ,
            "VETHUB_DATA_DIR": str(tmp_path / "data"),
            "VETHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'vethub.db'}",
            "VETHUB_HTTP_PORT": "0",
            "VETHUB_DICOM_PORT": "0",
            "VETHUB_HL7_PORT": "0",
            **env,
        },
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def _error_line(stderr: str) -> str:
    """The one line that is not a JSON log record (and no traceback)."""
    assert "Traceback" not in stderr
    [line] = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    return line


def test_mismatched_key_stops_serve_with_one_line(tmp_path: Path, ca: trustme.CA) -> None:
    cert, _ = write_cert(ca, tmp_path / "a")
    _, other_key = write_cert(ca, tmp_path / "b")
    done = _serve(tmp_path, VETHUB_TLS_CERT=str(cert), VETHUB_TLS_KEY=str(other_key))
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert line.startswith(f"vethub: cannot use certificate {cert} with key {other_key}")
    assert "KEY_VALUES_MISMATCH" in line or "key values mismatch" in line
    assert not (tmp_path / "data" / "ports.json").exists()


def test_missing_key_file_stops_serve_with_one_line(tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = write_cert(ca, tmp_path / "a")
    key.unlink()
    done = _serve(tmp_path, VETHUB_TLS_CERT=str(cert), VETHUB_TLS_KEY=str(key))
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert line.startswith("vethub: cannot use certificate") and "No such file" in line


def test_unreadable_extra_ca_stops_serve_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "clinic-ca.pem"
    bad.write_text("not a certificate")
    done = _serve(tmp_path, VETHUB_TLS_EXTRA_CA=str(bad))
    assert done.returncode == 2
    assert _error_line(done.stderr).startswith(f"vethub: cannot use VETHUB_TLS_EXTRA_CA {bad}")


class _Door:
    """The two attributes ``door_ports`` reads, as a started door has them."""

    def __init__(self, name: str, tls_port: int | None = None) -> None:
        self.name = name
        self.tls_port = tls_port

    async def start(self) -> int:
        return 0

    async def stop(self) -> None:
        pass


def test_ports_entries_for_http_and_tls_doors() -> None:
    assert http_ports(8080, tls=False) == {"http": 8080}
    assert http_ports(8443, tls=True) == {"http": None, "https": 8443}
    assert door_ports(_Door("dicom", tls_port=2762), 11112) == {"dicom": 11112, "dicom_tls": 2762}
    assert door_ports(_Door("hl7", tls_port=None), 2575) == {"hl7": 2575}  # TLS port off
