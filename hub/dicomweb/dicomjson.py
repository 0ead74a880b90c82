"""A stored instance's header as the DICOM JSON model (PS3.18 F.2), for /metadata.

OHIF loads the metadata of every series it opens, so this is on the hot path:
one read of the file's header per instance (pixel data is never read: its
element is noted where the header read stops), large binary values deferred
and answered as a ``BulkDataURI``, and the result kept in a small cache keyed
by the file's path, size and mtime. URIs are cached relative to the instance
(``bulkdata/7FE00010``) and made absolute per request, so a share's prefix
and the staff prefix share one cache.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from hub.archive.filecache import ByFile

log = logging.getLogger(__name__)

# Binary values longer than this are answered as a BulkDataURI (top level) and
# left on disk while the header is read.
BULK_THRESHOLD = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = {0x7FE00010: "7FE00010", 0x7FE00008: "7FE00008", 0x7FE00009: "7FE00009"}
AVAILABLE_TRANSFER_SYNTAX = "00083002"
CACHE_SIZE = 2000

_texts: ByFile[str] = ByFile(CACHE_SIZE)
_RELATIVE = '"BulkDataURI":"bulkdata/'


def instance(path: Path) -> str:
    """The instance's DICOM JSON as text, with relative BulkDataURIs (cached as text:
    a few KB an instance, where the parsed form would cost ten times that)."""
    return _texts.get(path, _json_text)


def _json_text(path: Path) -> str:
    return json.dumps(_read(path), separators=(",", ":"), ensure_ascii=False)


def with_base(text: str, instance_url: str) -> str:
    """``text`` with its relative BulkDataURIs under ``instance_url``. A value that
    merely contains these characters is escaped in JSON (``\\"``), so only the
    URIs match."""
    return text.replace(_RELATIVE, f'"BulkDataURI":"{instance_url}/bulkdata/')


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        ds = dcmread(f, stop_before_pixels=True, defer_size=BULK_THRESHOLD)
        pixels = _pixel_element(f.read(12), ds)
    doc = _dataset(ds, top=True)
    if pixels is not None:
        tag, vr = pixels
        doc[tag] = {"vr": vr, "BulkDataURI": f"bulkdata/{tag}"}
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts:
        doc[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [str(ts)]}
    return dict(sorted(doc.items()))


def _pixel_element(head: bytes, ds: Dataset) -> tuple[str, str] | None:
    """The pixel data element the header read stopped at, as (tag, VR)."""
    if len(head) < 8:
        return None
    little = ds.original_encoding[1] is not False
    group, elem = struct.unpack("<HH" if little else ">HH", head[:4])
    tag = PIXEL_TAGS.get((group << 16) | elem)
    if tag is None:
        return None
    vr = head[4:6].decode("latin-1")
    if ds.original_encoding[0] is not False or not vr.isalpha():  # implicit VR
        vr = "OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB"
    return tag, vr


def _dataset(ds: Dataset, *, top: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        key = f"{int(tag):08X}"
        try:
            raw = ds.get_item(tag, keep_deferred=True)
            vr = _vr(raw, int(tag))
            deferred = isinstance(raw, RawDataElement) and raw.value is None and raw.length
            if deferred and top and vr in BINARY_VRS:
                out[key] = {"vr": vr, "BulkDataURI": f"bulkdata/{key}"}
                continue
            elem = ds[tag]
            if elem.VR == "SQ":
                items = [_dataset(item, top=False) for item in elem.value]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            else:
                out[key] = elem.to_json_dict(None, 0)
        except Exception as exc:  # one odd value must not cost the whole header
            log.debug("element left out of metadata", extra={"tag": key, "error": str(exc)})
    return out


def _vr(raw: Any, tag: int) -> str:
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        found = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return "OW" if " or " in found else found


def bulk_value(path: Path, tag: int) -> bytes | None:
    """A top-level binary value of the stored file (pixel data as stored); None if absent."""
    ds = dcmread(path, defer_size=BULK_THRESHOLD)
    if tag not in ds:
        return None
    elem = ds[tag]
    if elem.VR not in BINARY_VRS and elem.VR not in ("OB or OW", "US or OW"):
        return None
    value = elem.value
    return bytes(value) if value is not None else b""
