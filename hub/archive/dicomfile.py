"""DICOM Part 10 files as the archive keeps them: built from the bytes a device
sent (no decoding, no recompression), checked for completeness, read for the
few header attributes the hub needs, and rewritten when identity is corrected.
"""

from __future__ import annotations

import io
import mmap
import struct
import zlib
from typing import Any, Literal

from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

import hub
from hub.services import coercion, ingest

# What the structure walk reads: the bytes in memory, or a received file mapped
# into memory so a 2 GB instance costs page cache, not heap.
# A deflated data set is inflated into a bytearray (never a second copy).
Buffer = bytes | bytearray | mmap.mmap

# The default bound on an inflated (Deflated Explicit VR Little Endian) data
# set, VETHUB_DICOM_MAX_INFLATED_MB; deflate reaches about 1000:1, so without
# a bound a few hundred KB sent would cost the process gigabytes.
DEFAULT_MAX_INFLATED = 1024 << 20
# How much deflated input is handed to zlib at once (a copy of this size, so an
# mmap is never exported as a buffer that would keep it from closing), and the
# most it may inflate in one step (the step's bytes are copied onto the result).
_INFLATE_STEP = 1 << 20

# A UUID-derived UID (PS3.5 B.2): uuid5(DNS, "implementation.vethub").
IMPLEMENTATION_CLASS_UID = "2.25.256969932720913279751125693747606157266"
IMPLEMENTATION_VERSION = f"VETHUB_{hub.__version__}"[:16]
IMPLICIT_LE = str(ImplicitVRLittleEndian)
EXPLICIT_LE = str(ExplicitVRLittleEndian)
DEFLATED_LE = str(DeflatedExplicitVRLittleEndian)
EXPLICIT_BE = str(ExplicitVRBigEndian)
# Syntaxes whose data set is one raw deflate stream (PS3.5 A.5), inflated
# before the walk.
DEFLATED = frozenset((DEFLATED_LE,))

# What the one-pass header scan reads: what indexing needs, what coercion
# compares and keeps for the audit, and the character set to decode them in.
HEADER_KEYWORDS = tuple(
    dict.fromkeys(("SpecificCharacterSet", *ingest.HEADER_TEXT, *coercion.KEYWORDS))
)
_HEADER_TAGS = [Tag(k) for k in HEADER_KEYWORDS]
_HEADER_TAG_INTS = frozenset(int(t) for t in _HEADER_TAGS)
_KEYWORDS = {int(Tag(k)): k for k in HEADER_KEYWORDS}
_CHARSET_TAG = int(Tag("SpecificCharacterSet"))
_TEXT_VRS = {"SH", "LO", "PN", "ST", "LT", "UC", "UT"}
_PN_DELIMS = {0x5E, 0x3D}  # ^ and =
_CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")

# Explicit VRs with a 4-byte length after two reserved bytes (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS |= {b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class Incomplete(ValueError):
    """The bytes are not one whole data set in the stated transfer syntax."""


class TooLarge(ValueError):
    """A deflated data set inflates beyond the configured bound (a deflate bomb,
    or an instance larger than this hub is set up to take)."""


def inflate(raw: Buffer, limit: int, start: int = 0) -> bytearray:
    """Inflate the raw deflate stream ``raw[start:]``, never holding more than
    ``limit`` (+1) inflated bytes: raises ``TooLarge`` as soon as it would.

    zlib's ``max_length`` stops each step at the room left (and at 1 MB), so
    the output is checked before it grows, not after a bomb has filled memory:
    the peak is the bound plus about 2 MB of steps.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        for at in range(start, len(raw), _INFLATE_STEP):
            pending = raw[at : at + _INFLATE_STEP]
            while pending and not inflater.eof:
                room = min(limit + 1 - len(out), _INFLATE_STEP)
                out += inflater.decompress(pending, room)
                if len(out) > limit:
                    raise TooLarge(f"deflated data set inflates beyond {limit >> 20} MB")
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        out += inflater.flush()
    except zlib.error as exc:
        raise Incomplete(f"deflated data set does not inflate: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"deflated data set inflates beyond {limit >> 20} MB")
    return out


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for a received data set.

    Encoded by hand (explicit VR little endian, PS3.10 7.1): it is written
    for every instance, and pydicom's general writer costs more than the rest
    of the header handling together.
    """
    body = b"".join(
        (
            _short(0x0001, b"OB", b"\x00\x01", long=True),
            _short(0x0002, b"UI", _uid(sop_class_uid)),
            _short(0x0003, b"UI", _uid(sop_instance_uid)),
            _short(0x0010, b"UI", _uid(transfer_syntax_uid)),
            _short(0x0012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
            _short(0x0013, b"SH", _even(IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
            _short(0x0016, b"AE", _even(source_ae.encode("ascii", "replace")[:16], b" "))
            if source_ae
            else b"",
        )
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


def _uid(value: str) -> bytes:
    return _even(value.encode("ascii"), b"\x00")


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _short(element: int, vr: bytes, value: bytes, *, long: bool = False) -> bytes:
    if long:
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def check_complete(
    raw: Buffer, transfer_syntax_uid: str, *, max_inflated: int = DEFAULT_MAX_INFLATED
) -> None:
    """Raise ``Incomplete`` unless ``raw`` is exactly one whole data set (see ``scan``)."""
    scan(raw, transfer_syntax_uid, max_inflated=max_inflated)


def scan(
    raw: Buffer,
    transfer_syntax_uid: str,
    start: int = 0,
    *,
    max_inflated: int = DEFAULT_MAX_INFLATED,
) -> dict[str, Any]:
    """Walk the element structure without decoding values and return the header.

    Raises ``Incomplete`` if an element runs past the end, the structure is
    garbage, or bytes are left over: pydicom happily reads a truncated Pixel
    Data element, so this is what tells a whole image from 90% of one.
    Returns ``{keyword: value}`` for the ``HEADER_KEYWORDS`` present: text as
    ``str`` (multiple values joined by a backslash), the code sequence as a
    list of ``{"CodeValue", "CodingSchemeDesignator", "CodeMeaning"}``. The
    hot path of C-STORE thereby never builds a pydicom Dataset.
    The data set is ``raw[start:]`` (a received file's, after its meta group).
    A deflated data set is inflated within ``max_inflated`` bytes or refused
    with ``TooLarge``; this scan runs before any other read of a received
    instance, so the full reads that follow (coercion, thumbnails) only ever
    see data sets known to inflate within the bound.
    """
    if transfer_syntax_uid in DEFLATED:
        raw = inflate(raw, max_inflated, start)
        start = 0
        transfer_syntax_uid = EXPLICIT_LE
    implicit = transfer_syntax_uid == IMPLICIT_LE
    # Explicit VR Big Endian (retired, still sent by old devices): only the
    # numbers' byte order differs, every other syntax is little endian.
    order = ">" if transfer_syntax_uid == EXPLICIT_BE else "<"
    if len(raw) <= start:
        raise Incomplete("empty data set")
    picked: list[tuple[int, bytes, int, int, int]] = []
    end = _walk(raw, start, implicit, nested=False, picked=picked, order=order)
    if end != len(raw):
        raise Incomplete(f"{len(raw) - end} bytes after the last element")
    return _decode(raw, picked, implicit, order)


def _decode(
    raw: Buffer, picked: list[tuple[int, bytes, int, int, int]], implicit: bool, order: str = "<"
) -> dict:
    out: dict[str, Any] = {}
    encodings = ["iso8859"]
    for tag, vr_bytes, start, value_at, end in picked:
        keyword = _KEYWORDS[tag]
        vr = dictionary_VR(tag) if implicit else vr_bytes.decode("ascii")
        if vr == "SQ":
            elem = read_dataset(io.BytesIO(raw[start:end]), implicit, order == "<")
            out[keyword] = [
                {k: str(item.get(k, "") or "") for k in _CODE_KEYS} for item in elem[tag].value
            ]
            continue
        value = bytes(raw[value_at:end])
        if vr == "US":  # Rows, Columns: binary, given as decimal text like the rest
            endian: Literal["little", "big"] = "little" if order == "<" else "big"
            out[keyword] = str(int.from_bytes(value[:2], endian)) if len(value) >= 2 else ""
            continue
        if vr in _TEXT_VRS:
            text = decode_bytes(value, encodings, _PN_DELIMS if vr == "PN" else set())
        else:
            text = value.decode("ascii", "replace")
        text = text.rstrip("\x00 ").lstrip(" " if vr not in ("ST", "LT", "UT") else "")
        out[keyword] = text
        if tag == _CHARSET_TAG:
            terms = [t.strip() for t in text.split("\\")] if text else [""]
            try:
                encodings = convert_encodings(terms)
            except LookupError:
                encodings = ["iso8859"]
    return out


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


def _walk(
    buf: Buffer,
    pos: int,
    implicit: bool,
    *,
    nested: bool,
    picked: list[tuple[int, bytes, int, int, int]] | None = None,
    order: str = "<",
) -> int:
    """Skip data elements from ``pos``; in a nested item stop after an item delimiter.

    At the top level, each element in ``_HEADER_TAG_INTS`` is noted in
    ``picked`` as (tag, VR, element start, value start, end).
    """
    n = len(buf)
    tag_fmt, long_fmt, short_fmt = order + "HH", order + "I", order + "H"
    while pos < n:
        start = pos
        if pos + 8 > n:
            raise Incomplete(f"element header cut off at byte {pos}")
        group, elem = struct.unpack_from(tag_fmt, buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            if not nested:
                raise Incomplete(f"stray item delimiter at byte {pos}")
            return pos + 8
        if group == 0xFFFE:
            raise Incomplete(f"unexpected item tag at byte {pos}")
        if implicit:
            (length,) = struct.unpack_from(long_fmt, buf, pos + 4)
            pos += 8
            vr = b"??"
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if not (vr.isalpha() and vr.isupper()):
                raise Incomplete(f"invalid VR {vr!r} at byte {pos}")
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise Incomplete(f"element header cut off at byte {pos}")
                (length,) = struct.unpack_from(long_fmt, buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(short_fmt, buf, pos + 6)
                pos += 8
        value_at = pos
        if length == _UNDEFINED:
            # A sequence (or encapsulated pixel data); UN content is implicit VR.
            pos = _walk_items(buf, pos, implicit or vr == b"UN", order)
        else:
            pos += length
            if pos > n:
                raise Incomplete(f"element ({group:04X},{elem:04X}) runs past the end")
        if picked is not None and tag in _HEADER_TAG_INTS:
            picked.append((tag, vr, start, value_at, pos))
    if nested:
        raise Incomplete("item without its delimiter")
    return pos


def _walk_items(buf: Buffer, pos: int, implicit: bool, order: str = "<") -> int:
    n = len(buf)
    item_fmt = order + "HHI"
    while True:
        if pos + 8 > n:
            raise Incomplete(f"sequence cut off at byte {pos}")
        group, elem, length = struct.unpack_from(item_fmt, buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise Incomplete(f"expected an item at byte {pos - 8}")
        if length == _UNDEFINED:
            pos = _walk(buf, pos, implicit, nested=True, order=order)
        else:
            pos += length
            if pos > n:
                raise Incomplete("item runs past the end")
