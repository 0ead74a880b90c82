"""Small PNG previews of stored images for the study summary page.

Rendered once per instance and kept under ``<data_dir>/thumbnails``; pixel
data is never changed by reconciliation, so a preview stays valid. Images in
a transfer syntax this installation cannot decode get no preview rather than
an error: the study page still lists them.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread

log = logging.getLogger(__name__)

SIZE = 256


def thumbnail_path(data_dir: Path, sop_instance_uid: str) -> Path:
    return data_dir / "thumbnails" / f"{sop_instance_uid}.png"


def thumbnail(data_dir: Path, dicom_path: Path, sop_instance_uid: str) -> bytes | None:
    """The PNG preview of one instance, rendered on first use; None if it cannot be."""
    cached = thumbnail_path(data_dir, sop_instance_uid)
    if cached.exists():
        return cached.read_bytes()
    try:
        png = render(dicom_path)
    except Exception as exc:  # any decoder may fail on any device's data
        log.info("no preview", extra={"sop_instance_uid": sop_instance_uid, "error": str(exc)})
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, cached)
    return png


def render(dicom_path: Path) -> bytes:
    ds = dcmread(dicom_path)
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples == 3:
        image = Image.fromarray(_to_uint8(pixels, stretch=False), mode="RGB")
    else:
        gray = _to_uint8(pixels, stretch=True)
        if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
            gray = 255 - gray
        image = Image.fromarray(gray, mode="L")
    image.thumbnail((SIZE, SIZE))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _to_uint8(pixels: np.ndarray, *, stretch: bool) -> np.ndarray:
    """Map stored values to 0..255; greyscale uses the 1st-99th percentile as window."""
    data = pixels.astype(np.float32)
    if stretch:
        low, high = np.percentile(data, [1, 99])
    else:
        low, high = (0.0, 255.0) if pixels.dtype == np.uint8 else (data.min(), data.max())
    if high <= low:
        high = low + 1
    return np.clip((data - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
