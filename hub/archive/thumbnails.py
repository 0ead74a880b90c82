"""Small PNG previews of stored images for the study summary page.

Rendered by ``hub.archive.render`` (the hub's one rendering path) once per
instance and kept under ``<data_dir>/thumbnails``; pixel data is never changed
by reconciliation, so a preview stays valid. An image the decoders cannot
read gets no preview rather than an error (the page still lists it); the
renderer remembers and logs the reason once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hub.archive import render as renderer

SIZE = 256
_OPTIONS = renderer.Options(viewport=(SIZE, SIZE), format="png", enlarge=False)


def thumbnail_path(data_dir: Path, sop_instance_uid: str) -> Path:
    return data_dir / "thumbnails" / f"{sop_instance_uid}.png"


def thumbnail(data_dir: Path, dicom_path: Path, sop_instance_uid: str) -> bytes | None:
    """The PNG preview of one instance, rendered on first use; None if it cannot be."""
    cached = thumbnail_path(data_dir, sop_instance_uid)
    if cached.exists():
        return cached.read_bytes()
    pic = renderer.picture(data_dir, dicom_path, sop_instance_uid, _OPTIONS)
    if pic.warning is not None:
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pic.content)
    os.replace(tmp, cached)
    return pic.content


def render(dicom_path: Path) -> bytes:
    """The preview PNG of ``dicom_path``; raises ``render.CannotRender``."""
    return renderer.render(dicom_path, _OPTIONS)


def _to_uint8(pixels: np.ndarray, *, stretch: bool) -> np.ndarray:
    """Stored values to 0..255 (greyscale: the 1st-99th percentile as window).

    Kept for ``hub.archive.bundle``'s JPEGs; new code renders through
    ``hub.archive.render``.
    """
    data = pixels.astype(np.float32)
    if stretch:
        low, high = np.percentile(data, [1, 99])
    else:
        low, high = (0.0, 255.0) if pixels.dtype == np.uint8 else (data.min(), data.max())
    if high <= low:
        high = low + 1
    return np.clip((data - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
