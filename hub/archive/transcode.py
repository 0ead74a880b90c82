"""A stored instance in Explicit VR Little Endian, for a client that cannot take
the stored transfer syntax (PS3.18's default for application/dicom). Only
done when asked: whatever a client accepts as stored is sent byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

EXPLICIT_LE = str(ExplicitVRLittleEndian)


def explicit_little(path: Path) -> bytes:
    """The Part 10 file re-encoded (pixel data decompressed when compressed, colour
    as RGB). Raises whatever the decoders raise when they cannot."""
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()
