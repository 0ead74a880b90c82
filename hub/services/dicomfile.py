"""DICOM Part 10 files as the archive keeps them: built from the bytes a device
sent (no decoding, no recompression), checked for completeness, read for the
few header attributes the hub needs, and rewritten when identity is corrected.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag

import hub

# A UUID-derived UID (PS3.5 B.2): uuid5(DNS, "implementation.vethub").
IMPLEMENTATION_CLASS_UID = "2.25.256969932720913279751125693747606157266"
IMPLEMENTATION_VERSION = f"VETHUB_{hub.__version__}"[:16]
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

HEADER_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "ContentDate",
    "AccessionNumber",
    "Modality",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientSexNeutered",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
)
_HEADER_TAGS = [Tag(k) for k in HEADER_KEYWORDS]

# Explicit VRs with a 4-byte length after two reserved bytes (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS |= {b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class Incomplete(ValueError):
    """The bytes are not one whole data set in the stated transfer syntax."""


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for a received data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


def check_complete(raw: bytes, transfer_syntax_uid: str) -> None:
    """Walk the element structure without decoding values; raise ``Incomplete``
    if an element runs past the end, the structure is garbage, or bytes are left over.

    pydicom happily reads a truncated Pixel Data element, so this is what
    tells a whole image from the first 90% of one.
    """
    if transfer_syntax_uid == DEFLATED_LE:
        try:
            raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw)
        except zlib.error as exc:
            raise Incomplete(f"deflated data set does not inflate: {exc}") from None
        transfer_syntax_uid = EXPLICIT_LE
    if transfer_syntax_uid == EXPLICIT_BE:
        return  # retired; not offered by the hub
    implicit = transfer_syntax_uid == IMPLICIT_LE
    if not raw:
        raise Incomplete("empty data set")
    end = _walk(raw, 0, implicit, nested=False)
    if end != len(raw):
        raise Incomplete(f"{len(raw) - end} bytes after the last element")


def read_header(data: bytes) -> Dataset:
    """The identifying attributes of a Part 10 file (pixel data is never parsed)."""
    return dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_HEADER_TAGS)


def read_full(data: bytes | str) -> Dataset:
    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    return dcmread(src)


def encode(ds: Dataset) -> bytes:
    """A read and modified Part 10 data set, written back in its own transfer syntax."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _walk(buf: bytes, pos: int, implicit: bool, *, nested: bool) -> int:
    """Skip data elements from ``pos``; in a nested item stop after an item delimiter."""
    n = len(buf)
    while pos < n:
        if pos + 8 > n:
            raise Incomplete(f"element header cut off at byte {pos}")
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            if not nested:
                raise Incomplete(f"stray item delimiter at byte {pos}")
            return pos + 8
        if group == 0xFFFE:
            raise Incomplete(f"unexpected item tag at byte {pos}")
        if implicit:
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8
            vr = b"??"
        else:
            vr = buf[pos + 4 : pos + 6]
            if not (vr.isalpha() and vr.isupper()):
                raise Incomplete(f"invalid VR {vr!r} at byte {pos}")
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise Incomplete(f"element header cut off at byte {pos}")
                (length,) = struct.unpack_from("<I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            # A sequence (or encapsulated pixel data); UN content is implicit VR.
            pos = _walk_items(buf, pos, implicit or vr == b"UN")
        else:
            pos += length
            if pos > n:
                raise Incomplete(f"element ({group:04X},{elem:04X}) runs past the end")
    if nested:
        raise Incomplete("item without its delimiter")
    return pos


def _walk_items(buf: bytes, pos: int, implicit: bool) -> int:
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise Incomplete(f"sequence cut off at byte {pos}")
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise Incomplete(f"expected an item at byte {pos - 8}")
        if length == _UNDEFINED:
            pos = _walk(buf, pos, implicit, nested=True)
        else:
            pos += length
            if pos > n:
                raise Incomplete("item runs past the end")
