"""A stored instance in Explicit VR Little Endian, for a client that cannot take
the stored transfer syntax (PS3.18's default for application/dicom). Only
done when asked: whatever a client accepts as stored is sent byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

EXPLICIT_LE = str(ExplicitVRLittleEndian)


# Binary VRs whose values pydicom keeps as bytes in the file's byte order, by
# word size: these are what turning big endian into little endian must swap.
_WORDS = {"OW": "u2", "OF": "u4", "OL": "u4", "OD": "u8", "OV": "u8"}


def explicit_little(path: Path) -> bytes:
    """The Part 10 file re-encoded (pixel data decompressed when compressed, colour
    as RGB, big endian turned little). Raises whatever the decoders raise when
    they cannot."""
    ds = dcmread(path)
    big = not ds.file_meta.TransferSyntaxUID.is_little_endian
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    if big:
        _swap_words(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    if big:  # save_as refuses to change byte order; the words are swapped above
        dcmwrite(out, ds, enforce_file_format=True)
    else:
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


def _swap_words(ds: Dataset) -> None:
    """Byte-swap every OW/OF/OL/OD/OV value (in sequences too) of a data set read
    from Explicit VR Big Endian; numbers of other VRs pydicom decodes itself."""
    for elem in ds.iterall():
        size = _WORDS.get(elem.VR)
        if size and isinstance(elem.value, bytes) and len(elem.value) % int(size[1]) == 0:
            elem.value = np.frombuffer(elem.value, f">{size}").astype(f"<{size}").tobytes()
    ds.set_original_encoding(False, True, ds.original_character_set)
