"""Renewing the hub's certificate needs no restart (issue #9).

A served hub on cert A sees its files replaced by cert B; after the reload
job has run, a new connection is handed cert B. At unit level: a broken new
file keeps the old certificate in use, and fixing it is picked up.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import trustme

from hub.tls import ServerTls
from tests.harness import start_hub, trusting, write_cert


def _replace(src: Path, dst: Path) -> None:
    """Atomically, as a renewal tool should: the hub never reads half a file."""
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is given."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_renewed_certificate_is_served_without_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert_a, key_a = write_cert(ca, tmp_path / "a")
    cert_b, key_b = write_cert(ca, tmp_path / "b")
    assert _der(cert_a) != _der(cert_b)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    _replace(cert_a, live_cert)
    _replace(key_a, live_key)
    served = start_hub(
        tmp_path / "served",
        f"sqlite:///{tmp_path / 'vethub.db'}",
        verify=trusting(ca),
        VETHUB_TLS_CERT=str(live_cert),
        VETHUB_TLS_KEY=str(live_key),
        VETHUB_TLS_RELOAD_SECONDS="0.5",
    )
    try:
        ctx = trusting(ca)
        assert _served_cert(served.http, ctx) == _der(cert_a)
        with served.api() as api:  # a keep-alive connection made before the renewal
            assert api.get("/health").status_code == 200
            _replace(key_b, live_key)
            _replace(cert_b, live_cert)
            deadline = time.monotonic() + 10
            while _served_cert(served.http, ctx) != _der(cert_b):
                assert time.monotonic() < deadline, "cert B not served 10 s after renewal"
                time.sleep(0.1)
            assert api.get("/health").status_code == 200
        assert served.process.poll() is None  # the same process, not a restart
        assert "TLS certificate reloaded" in served.log()
    finally:
        served.stop()


def _handshake(server: ServerTls, client: ssl.SSLContext) -> bytes:
    """A real handshake over a socket pair; returns the certificate the client was given."""
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            with server.context.wrap_socket(right, server_side=True):
                pass
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    t = threading.Thread(target=accept)
    t.start()
    with client.wrap_socket(left, server_hostname="localhost") as sock:
        der = sock.getpeercert(binary_form=True)
    t.join(10)
    right.close()
    assert not errors and der is not None
    return der


@pytest.mark.parametrize("broken", ["garbage", "empty", "other key"])
def test_broken_new_file_keeps_the_old_certificate(
    tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    cert_a, key_a = write_cert(ca, tmp_path / "a")
    cert_b, key_b = write_cert(ca, tmp_path / "b")
    tls = ServerTls(cert_a, key_a)
    client = trusting(ca)
    der_a = _der(cert_a)
    assert _handshake(tls, client) == der_a

    if broken == "garbage":
        cert_a.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    elif broken == "empty":
        cert_a.write_text("")
    else:  # a renewed certificate whose key has not been copied yet
        _replace(cert_b, cert_a)
    assert tls.reload_if_changed() is False
    assert "still using the previous one" in caplog.text
    assert _handshake(tls, client) == der_a  # the old certificate, still served

    _replace(cert_b, cert_a)  # the renewal completes: both files match again
    _replace(key_b, key_a)
    assert tls.reload_if_changed() is True
    assert _handshake(tls, client) == _der(cert_b)
    assert tls.reload_if_changed() is False  # unchanged files are not re-read
