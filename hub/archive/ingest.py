"""A received instance into the archive: bytes checked, file written, index committed.

The order of work is the crash-safety promise (see ``hub.services.ingest``):
check the bytes, decide the match, write the file durably, commit the index,
then let the caller answer. The data set comes either as bytes or, from the
Storage SCP, as the file pynetdicom received it into; a file is mapped into
memory (page cache, not heap) and copied into place in 1 MB steps, so a 2 GB
instance does not need 2 GB of RAM (unless its headers must be corrected,
which decodes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from hub.archive import coercion, dicomfile, files
from hub.errors import FieldError
from hub.services import ingest
from hub.services.ingest import Header, Stored, Unreadable

if TYPE_CHECKING:
    from hub.context import Hub

__all__ = [
    "Incoming",
    "Stored",
    "TooLarge",
    "Unreadable",
    "header_of",
    "read",
    "store_instance",
]

# A deflated data set beyond VETHUB_DICOM_MAX_INFLATED_MB (the door answers
# "out of resources", not "cannot understand": the bytes may well be valid).
TooLarge = dicomfile.TooLarge


@dataclass(frozen=True)
class Incoming:
    """One C-STORE as received: the data set and the request's identifiers.

    ``data`` is the data set bytes exactly as sent, or the path of a DICOM
    file (preamble, meta group, then those bytes) such as pynetdicom writes
    when it receives in chunks.
    """

    data: bytes | Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str = ""


def store_instance(hub: Hub, inc: Incoming) -> Stored:
    """Check, match, write durably and index one instance."""
    with _opened(inc.data) as (buf, start):
        header = read(buf, start, inc, max_inflated=hub.settings.dicom_max_inflated_mb << 20)
        digest = _sha256(inc.data, start)
        arrival = ingest.Arrival(inc.transfer_syntax_uid, inc.calling_ae, digest)
        meta = dicomfile.file_meta(
            header.sop_class_uid, header.sop_instance_uid, inc.transfer_syntax_uid, inc.calling_ae
        )
        data: bytes | files.FileSlice
        if isinstance(inc.data, Path):
            data = files.FileSlice(inc.data, start, len(buf) - start)
        else:
            data = inc.data
        for attempt in range(3):
            try:
                return _store(hub, header, arrival, meta, data)
            except IntegrityError:
                # Another association indexed the same study/series/instance first.
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


def header_of(hub: Hub, inc: Incoming) -> Header:
    """The checked header alone, nothing stored: for an import's dry run."""
    with _opened(inc.data) as (buf, start):
        return read(buf, start, inc, max_inflated=hub.settings.dicom_max_inflated_mb << 20)


def read(
    buf: dicomfile.Buffer,
    start: int,
    inc: Incoming,
    *,
    max_inflated: int = dicomfile.DEFAULT_MAX_INFLATED,
) -> Header:
    """Parse and check the header: complete, UIDs present and agreeing with the request.

    Raises ``TooLarge`` when a deflated data set inflates beyond ``max_inflated``.
    """
    try:
        found = dicomfile.scan(buf, inc.transfer_syntax_uid, start, max_inflated=max_inflated)
    except TooLarge:
        raise
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise Unreadable([FieldError("dataset", f"cannot be decoded: {exc}")]) from None
    return ingest.header_from(found, inc.sop_class_uid, inc.sop_instance_uid)


def _store(
    hub: Hub, h: Header, arrival: ingest.Arrival, meta: bytes, data: bytes | files.FileSlice
) -> Stored:
    rel = files.relative_path(h.study_instance_uid, h.series_instance_uid, h.sop_instance_uid)
    path = files.absolute(hub.settings.data_dir, rel)
    memo = ingest.memo_for(hub.db)
    written = False
    try:
        with hub.db.session() as s:
            spot = ingest.place(s, memo, h, arrival, patient_day=hub.settings.match_patient_day)
            if isinstance(spot, Stored):
                return spot
            chunks: tuple[bytes | files.FileSlice, ...] = (meta, data)
            if spot.fixes:
                ds = dicomfile.read_full(meta + _bytes(data))
                coercion.apply(ds, spot.values)
                chunks = (dicomfile.encode(ds),)
            size = files.write_atomic(path, chunks)
            written = True
            stored = ingest.record(s, memo, h, arrival, spot, path=rel, size=size)
        memo.remember_series(spot, h)
        return stored
    except BaseException:
        if written and not _indexed(hub, h.sop_instance_uid):
            files.remove(path)  # never leave a file the index does not know of
        raise


def _sha256(data: bytes | Path, start: int) -> str:
    """Of the data set bytes; a file is read in steps (through the mapping, every
    page of it would count as the process's resident memory)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb", buffering=0) as f:
        f.seek(start)
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _bytes(data: bytes | files.FileSlice) -> bytes:
    if isinstance(data, bytes):
        return data
    with data.path.open("rb") as f:
        f.seek(data.offset)
        return f.read(data.length)


def _indexed(hub: Hub, sop_instance_uid: str) -> bool:
    try:
        with hub.db.read_session() as s:
            return ingest.indexed(s, sop_instance_uid)
    except Exception:
        return True  # when in doubt, keep the file: an orphan is harmless, a lost image is not


@contextlib.contextmanager
def _opened(data: bytes | Path) -> Iterator[tuple[dicomfile.Buffer, int]]:
    """The data set as a buffer and where it starts in it."""
    if isinstance(data, bytes):
        yield data, 0
        return
    with data.open("rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise Unreadable([FieldError("dataset", "is empty")])
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped, _data_set_start(mapped)


def _data_set_start(buf: mmap.mmap) -> int:
    """Where a Part 10 file's data set begins: after preamble, ``DICM`` and the meta group."""
    if len(buf) < 144 or buf[128:132] != b"DICM" or buf[132:138] != b"\x02\x00\x00\x00UL":
        raise Unreadable([FieldError("dataset", "received file has no DICOM file meta")])
    (group_length,) = struct.unpack_from("<I", buf, 140)
    start = 144 + group_length
    if start > len(buf):
        raise Unreadable([FieldError("dataset", "received file meta runs past the end")])
    return start
