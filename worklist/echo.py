"""C-ECHO to a registered device: is it reachable, and does it speak DICOM to us?

The hub is the calling AE (``VETHUB_DICOM_AE``) and the device's registered AE
title the called one; TLS when the device is registered with ``tls`` (the
context from ``hub.tls.client_context``: certificates and host names checked).
A device that does not answer is a result, not an error: ``ok`` false with
what happened in ``detail``.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

TIMEOUT_S = 5.0
log = logging.getLogger("worklist.echo")


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    status: int | None  # the C-ECHO response's Status (0 = success), None without one
    detail: str
    ms: float


def echo(
    calling_ae: str,
    called_ae: str,
    host: str,
    port: int,
    *,
    timeout: float = TIMEOUT_S,
    tls: ssl.SSLContext | None = None,
) -> EchoResult:
    """One association with one C-ECHO; never raises for what the network or peer does."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    start = time.monotonic()

    def done(ok: bool, status: int | None, detail: str) -> EchoResult:
        return EchoResult(ok, status, detail, round((time.monotonic() - start) * 1000, 1))

    where = f"{called_ae} at {host}:{port}{' (TLS)' if tls else ''}"
    try:
        assoc = ae.associate(
            host, port, ae_title=called_ae, tls_args=(tls, host) if tls is not None else None
        )
    except (OSError, ValueError) as exc:  # e.g. a host name that does not resolve
        return done(False, None, f"cannot reach {where}: {exc}")
    try:
        if assoc.is_rejected:
            return done(False, None, f"{where} rejected the association (is the AE title right?)")
        if assoc.is_aborted:
            return done(False, None, f"{where} aborted the association")
        if not assoc.is_established:
            return done(False, None, f"no DICOM answer from {where} within {timeout:g} s")
        answer = assoc.send_c_echo()
        if answer is None or "Status" not in answer:
            return done(False, None, f"{where} sent no C-ECHO response within {timeout:g} s")
        status = int(answer.Status)
        if status == 0:
            return done(True, status, f"{where} answered C-ECHO: success")
        return done(False, status, f"{where} answered C-ECHO with status 0x{status:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
