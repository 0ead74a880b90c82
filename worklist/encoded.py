"""Worklist answers that are already encoded, and the one shim that sends them as they are.

pynetdicom's C-FIND SCP takes each answer as a pydicom ``Dataset`` and turns it
into bytes with ``pynetdicom.service_class.encode``, a module global looked up
per answer. It has no supported way to take bytes: the documented
``EVT_C_FIND`` handler yields ``(status, Dataset)``, and ``_c_find_scp`` (3.0.4,
also upstream's main) calls ``encode`` on whatever is yielded. The supported
stand-in, a ``Dataset`` of raw elements read back from the bytes, costs about
0.7 ms per answer to read and write again on our 2-core VM: as much as all the
rest the hub does per answer (docs/performance.md).

So ``install`` wraps that global with ``PassEncoded``: an ``EncodedIdentifier``
whose bytes are in the transfer syntax asked for is sent as it is; anything
else goes to pynetdicom's encoder unchanged. Because the wrapper leans on
pynetdicom internals, three guards keep it honest: pyproject.toml pins
pynetdicom to the range it was checked against; ``incompatibility`` checks,
before installing, that the encoder still has the expected parameters, that the
C-FIND SCP still calls it, and that it writes the same bytes as
``items.encode`` for the same content; and if any of that fails, no shim is
installed: the worklist then yields decoded data sets (correct, slower) and
logs a warning saying why.

Past the encoder, pynetdicom still costs per answer: a C-FIND-RSP command set
built and written by pydicom, two P-DATA primitives queued to the reactor
thread, one socket write each. The Q/R SCP's answers skip that too
(``FindAnswers``): the pending command set is the same for every answer of a
query, so it is encoded once (by pynetdicom itself); each answer is framed into
P-DATA-TF PDUs exactly as pynetdicom frames it (``pdus``), and the PDUs are
written to the socket many at a time. The bytes on the wire are pynetdicom's;
only the number of writes changes.
"""

from __future__ import annotations

import inspect
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from io import BytesIO
from types import ModuleType
from typing import Any

import pynetdicom.service_class
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import dsutils
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND

from worklist import charset
from worklist.items import T, encode

log = logging.getLogger("worklist.encoded")

Encoder = Callable[[Dataset, bool, bool, bool], bytes | None]
# pynetdicom.dsutils.encode(ds, is_implicit_vr, is_little_endian, deflated=False)
ENCODER_PARAMETERS = ("ds", "is_implicit_vr", "is_little_endian", "deflated")

_install_lock = threading.Lock()


class EncodedIdentifier(Dataset):
    """An answer encoded by ``items.encode``: little endian, implicit or explicit VR.

    It holds no elements of its own; ``decoded()`` reads the bytes back for
    anything that needs a real data set.
    """

    def __init__(self, data: bytes, implicit: bool) -> None:
        super().__init__()
        self.encoded = data
        self.implicit = implicit

    def decoded(self) -> Dataset:
        """The answer as a data set of raw elements, which pydicom writes back unchanged."""
        return read_dataset(
            BytesIO(self.encoded), is_implicit_VR=self.implicit, is_little_endian=True
        )


class PassEncoded:
    """pynetdicom's encoder, short-cut for answers already encoded the way a context wants."""

    def __init__(self, original: Encoder) -> None:
        self.original = original

    def __call__(
        self, ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if isinstance(ds, EncodedIdentifier):
            if is_little_endian and not deflated and ds.implicit == is_implicit_vr:
                return ds.encoded
            ds = ds.decoded()  # another transfer syntax: let pydicom write it
        return self.original(ds, is_implicit_vr, is_little_endian, deflated)


def _probe() -> tuple[Dataset, dict[int, tuple[str, object]]]:
    """The same small answer as a pydicom data set and as an ``items`` item."""
    ds = Dataset()
    ds.PatientID = "A1"
    step = Dataset()
    step.Modality = "DX"
    ds.ScheduledProcedureStepSequence = [step]
    item: dict[int, tuple[str, object]] = {
        T["PatientID"]: ("LO", "A1"),
        T["ScheduledProcedureStepSequence"]: ("SQ", [{T["Modality"]: ("CS", "DX")}]),
    }
    return ds, item


def incompatibility(encoder: object, c_find_scp: object) -> str | None:
    """Why ``PassEncoded`` cannot stand in for ``encoder`` under ``c_find_scp``; None if it can.

    ``c_find_scp`` must name ``encode`` in its code (it calls the module
    global, so replacing the global reaches it), and ``encoder`` must take
    pynetdicom 3.0's parameters and write what ``items.encode`` writes.
    """
    if isinstance(encoder, PassEncoded):
        encoder = encoder.original
    if not callable(encoder):
        return "pynetdicom.service_class.encode is missing"
    try:
        parameters = tuple(inspect.signature(encoder).parameters)
    except (TypeError, ValueError):
        return "the parameters of pynetdicom's encode() cannot be read"
    if parameters != ENCODER_PARAMETERS:
        return f"pynetdicom's encode{parameters} is not encode{ENCODER_PARAMETERS}"
    code = getattr(c_find_scp, "__code__", None)
    if code is None or "encode" not in code.co_names:
        return "pynetdicom's C-FIND SCP no longer calls service_class.encode()"
    for implicit in (True, False):
        ds, item = _probe()
        try:
            written = encoder(ds, implicit, True, False)
        except Exception as exc:
            return f"pynetdicom's encode() failed on a probe answer: {exc}"
        if written != encode(item, None, charset.ASCII, implicit):
            return "pynetdicom's encode() writes other bytes than worklist.items.encode()"
    return None


def install(module: ModuleType = pynetdicom.service_class, c_find_scp: object = None) -> bool:
    """Put ``PassEncoded`` in place of ``module.encode`` if it is safe; True when in place.

    Defaults to pynetdicom's service_class module and its C-FIND SCP; tests
    hand in stand-ins. On False the caller must yield ``decoded()`` answers.
    """
    if c_find_scp is None:
        c_find_scp = getattr(pynetdicom.service_class.ServiceClass, "_c_find_scp", None)
    with _install_lock:
        current = getattr(module, "encode", None)
        if isinstance(current, PassEncoded):
            return True
        reason = incompatibility(current, c_find_scp)
        if reason is None and callable(current):
            # A module global the type checker cannot see, hence setattr.
            setattr(module, "encode", PassEncoded(current))  # noqa: B010
            return True
        log.warning(
            "worklist answers go through pydicom's encoder (slower)",
            extra={"reason": reason, "pynetdicom": _version()},
        )
        return False


def _version() -> str:
    return str(getattr(pynetdicom, "__version__", "unknown"))


# -- Pending C-FIND responses, framed here and written many per socket write ----

PENDING = 0xFF00
# A batch is written when it holds this many bytes (a few hundred study answers,
# under a socket buffer) or its first answer waited this long (a slow search
# must not hold back answers the peer could show, or a C-CANCEL it would send).
FLUSH_BYTES = 64 * 1024
FLUSH_S = 0.02
# How long ``FindAnswers.open`` waits for pynetdicom's send queue to drain.
QUEUE_WAIT_S = 1.0
_PDV = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, PDV length, context, control


def pending_command(request: C_FIND) -> bytes:
    """The C-FIND-RSP command set (status Pending, a data set follows) for ``request``.

    Built and encoded by pynetdicom from the same fields its C-FIND SCP sets,
    so it is the command set it would send with every pending answer. That
    costs ~0.5 ms, a tenth of a one-match query: it is done once per SOP
    class, and each request's Message ID written into the copy.
    """
    sop_class = str(request.AffectedSOPClassUID)
    message_id = int(request.MessageID or 0)
    found = _COMMANDS.get(sop_class)
    if found is None:
        command = _pynetdicom_command(sop_class, 0)
        at = command.find(_MESSAGE_ID_HEADER)
        if at < 0 or command.count(_MESSAGE_ID_HEADER) != 1:
            return _pynetdicom_command(sop_class, message_id)
        found = (command, at + len(_MESSAGE_ID_HEADER))
        if len(_COMMANDS) < 16:  # the Q/R FIND models: a handful at most
            _COMMANDS[sop_class] = found
    command, at = found
    return command[:at] + struct.pack("<H", message_id) + command[at + 2 :]


# (0000,0120) MessageIDBeingRespondedTo, implicit VR little endian, 2 bytes long
_MESSAGE_ID_HEADER = b"\x00\x00\x20\x01\x02\x00\x00\x00"
_COMMANDS: dict[str, tuple[bytes, int]] = {}  # SOP class -> (command set, where the ID goes)


def _pynetdicom_command(sop_class: str, message_id: int) -> bytes:
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = PENDING
    rsp.Identifier = BytesIO(b"\x00")  # only marks that a data set follows
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    command = dsutils.encode(message.command_set, True, True)
    if not command:
        raise ValueError("pynetdicom could not encode a C-FIND-RSP command set")
    return command


def _fragments(context_id: int, data: bytes, more: int, last: int, max_pdu: int) -> list[bytes]:
    """``data`` in PDUs of one PDV each, at most ``max_pdu`` long (0: no limit)."""
    size = len(data) if max_pdu == 0 else max_pdu - 6
    out = []
    start, end = 0, len(data)
    while True:
        chunk = data[start : start + size]
        start += size
        flag = last if start >= end else more
        out.append(_PDV.pack(0x04, 0, len(chunk) + 6, len(chunk) + 2, context_id, flag))
        out.append(chunk)
        if start >= end:
            return out


def pdus(context_id: int, command: bytes, data: bytes, max_pdu: int) -> bytes:
    """One DIMSE message as P-DATA-TF PDUs, split as pynetdicom's ``encode_msg`` splits it.

    Each PDU holds one PDV: the command set's fragments (control 01, the last
    03), then the data set's (00, the last 02), each fragment at most
    ``max_pdu - 6`` bytes (PS3.8 9.3.5: the PDV's length field, context ID
    and control header take 6).
    """
    parts = _fragments(context_id, command, 0x01, 0x03, max_pdu)
    if data:
        parts += _fragments(context_id, data, 0x00, 0x02, max_pdu)
    return b"".join(parts)


class FindAnswers:
    """The pending answers of one C-FIND, written to the association's socket in batches.

    Why writing from the handler's thread is safe: pynetdicom's reactor thread
    writes only what its send queue holds, and the queue is empty when the
    first batch goes (``open`` waits for it); the peer has one operation
    open at a time (the hub negotiates no asynchronous operations), so
    nothing else is queued until the handler yields its final status, which
    pynetdicom then sends after every batch was written. TLS sockets are not
    used from two threads (OpenSSL forbids it): ``open`` declines them.

    C-CANCEL is still read by the reactor and checked by the handler between
    two answers; answers gathered but not yet written are then dropped.
    """

    def __init__(
        self,
        sock: socket.socket,
        context_id: int,
        command: bytes,
        max_pdu: int,
        flush_bytes: int = FLUSH_BYTES,
        flush_s: float = FLUSH_S,
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.sock = sock
        self.context_id = context_id
        self.command = command
        self.max_pdu = max_pdu
        self.flush_bytes = flush_bytes
        self.flush_s = flush_s
        self.written = written  # after each write: counts as activity on the association
        self.batch: list[bytes] = []
        self.size = 0
        self.since = 0.0  # when the batch's first answer came

    @classmethod
    def open(cls, event: Any) -> FindAnswers | None:
        """For the C-FIND of ``event`` (pynetdicom's EVT_C_FIND), or None when pynetdicom
        must send each answer itself: a TLS or missing socket, a send queue that
        does not drain, a pynetdicom whose pieces changed."""
        try:
            assoc = event.assoc
            wire = assoc.dul.socket
            sock = getattr(wire, "socket", None)
            if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
                return None
            command = pending_command(event.request)
            max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
            context_id = int(event.context.context_id)
            queue = assoc.dul.to_provider_queue
            idle = getattr(assoc.dul, "_idle_timer", None)
        except Exception as exc:  # pynetdicom moved something: its own path still works
            reason = {"reason": str(exc)}
            log.warning("C-FIND answers go through pynetdicom one by one", extra=reason)
            return None
        if 0 < max_pdu <= 6:  # no room for a fragment: pynetdicom's own path fails the same
            return None
        deadline = time.monotonic() + QUEUE_WAIT_S
        while queue.qsize():
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)
        written = idle.restart if idle is not None else (lambda: None)
        return cls(sock, context_id, command, max_pdu, FLUSH_BYTES, FLUSH_S, written)

    def add(self, identifier: bytes) -> bool:
        """Frame one answer; write the batch when it is full. False if the write failed."""
        data = pdus(self.context_id, self.command, identifier, self.max_pdu)
        now = time.monotonic()
        if not self.batch:
            self.since = now
        self.batch.append(data)
        self.size += len(data)
        if self.size >= self.flush_bytes or now - self.since >= self.flush_s:
            return self.flush()
        return True

    def flush(self) -> bool:
        """Write what is gathered. False if the socket failed (the association is then lost)."""
        if not self.batch:
            return True
        data = b"".join(self.batch)
        self.batch.clear()
        self.size = 0
        try:
            self.sock.sendall(data)
        except OSError as exc:
            log.warning("C-FIND answers could not be written", extra={"reason": str(exc)})
            return False
        self.written()
        return True

    def drop(self) -> int:
        """Forget the answers not yet written (a C-CANCEL came); how many bytes."""
        size = self.size
        self.batch.clear()
        self.size = 0
        return size
