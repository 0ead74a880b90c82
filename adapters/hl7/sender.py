"""HL7 results out over MLLP: one connection per message, the ACK decides.

MSA-1 ``AA`` (or ``CA``) completes the delivery. ``AE``/``AR``/``CE``/``CR``,
an ACK for another message, no answer within the timeout, or a connection
that closes first all raise ``DeliveryError`` so the delivery is retried with
backoff (and, after the last attempt, shows as failed with the reason).

A source with ``tls`` set is reached with MLLP inside TLS, verifying its
certificate against its ``hl7_host`` (public CAs plus ``VETHUB_TLS_EXTRA_CA``).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from adapters.hl7 import current, results
from adapters.hl7.mllp import Broken, FrameDecoder, frame
from adapters.hl7.parse import ParseError, parse
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    SendOptions,
    Target,
)

ACCEPTED = ("AA", "CA")

# (delivery document, addressee) -> ER7 text; see adapters/hl7/results.py
Render = Callable[[dict[str, Any], results.Addressee], str]


def addressee(target: Target) -> results.Addressee:
    """How results to ``target`` are written: its profile's ``outbound`` (for
    ``default``, the profile of the version it last sent), MSH-5/6 the
    application and facility it sends from (its first ``hl7_senders`` entry naming
    one; else the source name), PID-3.4 the profile's authority or the source name."""
    out = current.outbound_profile(target.hl7_profile, target.name).outbound
    app, facility = target.hl7_senders[0] if target.hl7_senders else ("", "")
    return results.Addressee(
        source=target.name,
        outbound=out,
        receiving_application=out.receiving_application or app or target.name,
        receiving_facility=out.receiving_facility or facility or target.name,
        assigning_authority=out.assigning_authority or target.name,
    )


def exchange(
    host: str, port: int, message: bytes, timeout: float, tls: ssl.SSLContext | None = None
) -> bytes:
    """Send one framed message and return the first complete frame answered.

    With ``tls`` the connection is wrapped (handshake included in ``timeout``)
    and the receiver's certificate must match ``host``.
    """
    deadline = time.monotonic() + timeout
    try:
        with _connect(host, port, timeout, tls) as sock:
            sock.sendall(frame(message))
            decoder = FrameDecoder(max_frame=1 << 20)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeliveryError(f"no ACK from {host}:{port} within {timeout:g} s")
                sock.settimeout(left)
                data = sock.recv(65536)
                events = decoder.feed(data) if data else decoder.close()
                for ev in events:
                    if isinstance(ev, Broken):
                        raise DeliveryError(f"{host}:{port} sent a broken frame: {ev.reason}")
                    return ev.payload
                if not data:
                    raise DeliveryError(f"{host}:{port} closed the connection without an ACK")
    except TimeoutError as exc:
        raise DeliveryError(f"no ACK from {host}:{port} within {timeout:g} s") from exc
    except ssl.SSLError as exc:  # before OSError, its base: name the TLS problem
        raise DeliveryError(f"TLS with {host}:{port} failed: {exc}") from exc
    except OSError as exc:
        raise DeliveryError(f"cannot reach {host}:{port}: {exc}") from exc


def _connect(host: str, port: int, timeout: float, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def check_ack(raw: bytes, control_id: str) -> None:
    try:
        ack = parse(raw.decode("utf-8", errors="replace"), strict_segments=False)
    except ParseError as exc:
        raise DeliveryError(f"unreadable ACK: {exc}") from exc
    msa = ack.all("MSA")
    if not msa:
        raise DeliveryError("the answer has no MSA segment")
    code = ack.value(msa[0], 1).upper()
    acked = ack.value(msa[0], 2)
    if acked and acked != control_id:
        raise DeliveryError(f"ACK is for message {acked!r}, not {control_id!r}")
    if code in ACCEPTED:
        return
    reason = ack.value(msa[0], 3)
    err = ack.all("ERR")
    if err:
        reason = reason or ack.value(err[0], 8) or ack.value(err[0], 3, 2) or ack.value(err[0], 1)
    raise DeliveryError(f"receiver answered {code or '?'}" + (f": {reason}" if reason else ""))


class Hl7Sender:
    """Sends the message ``render`` makes of a delivery to the source's HL7 host and port."""

    def __init__(
        self, render: Render, timeout: float = 10.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.render = render
        self.timeout = timeout
        # Used for sources with ``tls`` set; the worker passes the hub's client context.
        self.tls = tls if tls is not None else ssl.create_default_context()

    def __call__(self, target: Target, claim: Claim) -> None:
        if not target.hl7_host or not target.hl7_port:
            raise DeliveryError(f"source {target.name!r} has no HL7 host and port")
        text = self.render(claim.payload, addressee(target))
        tls = self.tls if target.tls else None
        raw = exchange(target.hl7_host, target.hl7_port, text.encode("utf-8"), self.timeout, tls)
        check_ack(raw, results.control_id(claim.uuid))


def _sender(render: Render) -> Callable[[SendOptions], Hl7Sender]:
    def make(options: SendOptions) -> Hl7Sender:
        return Hl7Sender(render, options.timeout, options.tls)

    return make


REACH = ("hl7_host", "hl7_port")

# A result with the study link: only when there is a study to link to.
ORU = DeliveryKind(
    name="hl7-oru",
    events=frozenset({"study.received", "study.reconciled", "order.completed"}),
    sender=_sender(results.oru),
    needs_study=True,
    requires=REACH,
)
# Order status back to the placer (ORC-1 SC, ORC-5 = the new status).
ORM_STATUS = DeliveryKind(
    name="hl7-orm-status",
    events=frozenset(
        {
            "order.scheduled",
            "order.in_progress",
            "order.completed",
            "order.cancelled",
            "order.discontinued",
        }
    ),
    sender=_sender(results.orm_status),
    requires=REACH,
)
