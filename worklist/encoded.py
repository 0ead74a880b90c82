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
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from io import BytesIO
from types import ModuleType

import pynetdicom.service_class
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

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
