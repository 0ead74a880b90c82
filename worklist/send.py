"""Sending stored instances on by C-STORE, the hub being the SCU.

Used by C-MOVE (to the move destination) and by any delivery that sends a
study on. The proposal follows what is being sent: per SOP class, one
context for each stored compressed syntax (so it can go as stored, byte for
byte) and one with Explicit and Implicit VR Little Endian, the fallback that
every Storage SCP accepts. An instance whose stored syntax the destination
refused is decompressed with pydicom (or, stored big endian, turned little
endian by ``hub.archive.transcode``) and sent uncompressed; one it cannot
take at all fails alone, the others still go.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread, uid
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.presentation import PresentationContext

from hub.archive import transcode

log = logging.getLogger("worklist.send")

TIMEOUT_S = 30.0
# PS3.8 9.3.2.2: one A-ASSOCIATE-RQ holds at most 128 presentation contexts.
MAX_CONTEXTS = 128
UNCOMPRESSED = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)


@dataclass(frozen=True)
class Destination:
    """A registered node: where to send, and who the hub says it is."""

    ae_title: str
    host: str
    port: int
    calling_ae: str
    tls: ssl.SSLContext | None = None
    timeout: float = TIMEOUT_S


@dataclass(frozen=True)
class Outgoing:
    """One stored instance: its file (a Part 10 file) and what the index knows of it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass
class SendReport:
    """What happened to each instance. ``error`` is an association-level fault
    (not reached, refused, dropped); instances neither completed nor failed
    were not tried and may be sent again."""

    completed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None


# on_progress(sop_instance_uid, status or None for a local failure, detail)
Progress = Callable[[str, int | None, str], None]


class Unsendable(Exception):
    """This instance cannot go over this association (no syntax both sides take)."""


def no_delay(event: evt.Event) -> None:
    """On EVT_CONN_OPEN of an association the hub requests: TCP_NODELAY on its socket.

    pynetdicom leaves Nagle on; a C-STORE written in pieces then waits for the
    peer's delayed ACK (~40 ms) before its last piece goes, which capped C-MOVE
    at about 15 instances/s (docs/performance.md).
    """
    transport = event.assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def link_up(assoc: Any) -> bool:
    """Is the association ``assoc`` still connected, as its socket says?

    pynetdicom marks an association aborted only when its own thread comes
    round to it; its socket is closed before a waiting C-STORE is woken. A
    C-STORE sent in that gap waits out the whole DIMSE timeout, so a sender
    checks this between instances, not ``is_established`` alone.
    """
    transport = assoc.dul.socket
    sock = transport.socket if transport is not None else None
    return bool(assoc.is_established) and sock is not None and sock.fileno() != -1


def contexts_for(items: Sequence[Outgoing]) -> list[PresentationContext]:
    """The presentation contexts to propose for ``items`` (see module docstring)."""
    by_class: dict[str, set[str]] = {}
    for item in items:
        by_class.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
    basic = [build_context(c, list(UNCOMPRESSED)) for c in by_class]
    extra = [
        build_context(c, [ts])
        for c, syntaxes in by_class.items()
        for ts in sorted(syntaxes)
        if ts not in UNCOMPRESSED
    ]
    # Beyond 128, the compressed syntaxes give way: those instances go decompressed.
    return [*basic, *extra][:MAX_CONTEXTS]


def accepted_syntaxes(contexts: Sequence[PresentationContext]) -> dict[str, set[str]]:
    """SOP class -> the transfer syntaxes the peer accepted for it."""
    out: dict[str, set[str]] = {}
    for cx in contexts:
        if cx.transfer_syntax:
            out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out


def payload(item: Outgoing, accepted: dict[str, set[str]]) -> Path | Dataset:
    """What to hand pynetdicom for ``item``: the file itself when its stored
    syntax was accepted (sent as stored), else a data set decoded to an
    uncompressed syntax the peer took. Raises Unsendable."""
    syntaxes = accepted.get(item.sop_class_uid, set())
    if item.transfer_syntax_uid in syntaxes:
        return item.path
    if not syntaxes & set(UNCOMPRESSED):
        raise Unsendable(f"{item.sop_class_uid} in {item.transfer_syntax_uid} not accepted")
    stored = uid.UID(item.transfer_syntax_uid)
    try:
        if stored.is_little_endian:
            ds = dcmread(item.path)
            if stored.is_compressed:
                ds.decompress(generate_instance_uid=False)  # the same instance, not a new one
        else:
            # pydicom would write OW words big endian as read; transcode swaps them.
            ds = dcmread(io.BytesIO(transcode.explicit_little(item.path)))
        to = (
            uid.ExplicitVRLittleEndian
            if uid.ExplicitVRLittleEndian in syntaxes
            else uid.ImplicitVRLittleEndian
        )
        ds.file_meta.TransferSyntaxUID = to
        # pydicom then writes the data set in ``to``, not as it was read.
        ds.set_original_encoding(to.is_implicit_VR, True, ds.original_character_set)
    except Exception as exc:  # a codec missing or the pixel data undecodable
        raise Unsendable(f"cannot decode {stored.name}: {exc}") from exc
    return ds


def send_instances(
    target: Destination,
    files: Sequence[Outgoing],
    on_progress: Progress | None = None,
    *,
    originator: tuple[str, int] | None = None,
) -> SendReport:
    """C-STORE ``files`` to ``target`` over one association; never raises for
    what the network or the peer does (see SendReport).

    ``originator`` is the (AE title, message id) of a C-MOVE this serves.
    """
    report = SendReport()
    if not files:
        return report
    # Files given by path are streamed from disk, not read into memory first.
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=target.calling_ae)
    for attr in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, attr, target.timeout)
    where = f"{target.ae_title} at {target.host}:{target.port}"
    tls_args = (target.tls, target.host) if target.tls is not None else None
    try:
        assoc = ae.associate(
            target.host,
            target.port,
            contexts=contexts_for(files),
            ae_title=target.ae_title,
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)],
        )
    except (OSError, ValueError) as exc:
        report.error = f"cannot reach {where}: {exc}"
        ae.shutdown()
        return report
    try:
        if not assoc.is_established:
            state = "rejected" if assoc.is_rejected else "did not accept"
            report.error = f"{where} {state} the association"
            return report
        accepted = accepted_syntaxes(assoc.accepted_contexts)
        for n, item in enumerate(files):
            _send_one(assoc, item, accepted, report, on_progress, originator, n)
            if not link_up(assoc):
                report.error = f"{where} dropped the association"
                break
    finally:
        if link_up(assoc):
            assoc.release()
        elif assoc.is_established:  # a release over a dead connection would wait
            assoc.abort()
        ae.shutdown()
    return report


def _send_one(
    assoc: Any,
    item: Outgoing,
    accepted: dict[str, set[str]],
    report: SendReport,
    on_progress: Progress | None,
    originator: tuple[str, int] | None,
    n: int,
) -> None:
    uid_ = item.sop_instance_uid
    started = time.monotonic()
    try:
        data = payload(item, accepted)
        answer = assoc.send_c_store(
            data,
            msg_id=n % 65535 + 1,
            originator_aet=originator[0] if originator else None,
            originator_id=originator[1] if originator else None,
        )
    except (Unsendable, OSError, ValueError, AttributeError) as exc:
        report.failed[uid_] = str(exc)
        if on_progress:
            on_progress(uid_, None, str(exc))
        return
    if answer is None or "Status" not in answer:
        if assoc.is_established:  # no answer within the DIMSE timeout
            report.failed[uid_] = "no C-STORE response"
        if on_progress:
            on_progress(uid_, None, "no C-STORE response")
        return
    code = int(answer.Status)
    if code == 0:
        report.completed.append(uid_)
        detail = "stored"
    elif code in (0xB000, 0xB006, 0xB007):
        report.warnings.append(uid_)
        detail = f"stored with warning 0x{code:04X}"
    else:
        detail = f"refused with 0x{code:04X} {answer.get('ErrorComment', '')}".strip()
        report.failed[uid_] = detail
    log.debug(
        "C-STORE sent",
        extra={"sop_instance_uid": uid_, "status": code, "ms": (time.monotonic() - started) * 1000},
    )
    if on_progress:
        on_progress(uid_, code, detail)
