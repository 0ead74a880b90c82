"""Small PNG previews of stored images for the study summary page.

Rendered by ``hub.archive.render`` (the hub's one rendering path) once per
instance and kept under ``<data_dir>/thumbnails``; pixel data is never changed
by reconciliation, so a preview stays valid. An instance the decoders cannot
read (or one that is no image: an SR, an ECG) gets the renderer's placeholder
saying why, never an empty answer the page would show as a broken image; the
renderer remembers and logs the reason once, and the placeholder is not kept
here (a decoder upgrade may read the image after all).
"""

from __future__ import annotations

import os
from pathlib import Path

from hub.archive import render as renderer

SIZE = 256
_OPTIONS = renderer.Options(viewport=(SIZE, SIZE), format="png", enlarge=False)


def thumbnail_path(data_dir: Path, sop_instance_uid: str) -> Path:
    return data_dir / "thumbnails" / f"{sop_instance_uid}.png"


def thumbnail(data_dir: Path, dicom_path: Path, sop_instance_uid: str) -> bytes:
    """The PNG preview of one instance, rendered on first use, or the placeholder."""
    cached = thumbnail_path(data_dir, sop_instance_uid)
    if cached.exists():
        return cached.read_bytes()
    pic = renderer.picture(data_dir, dicom_path, sop_instance_uid, _OPTIONS)
    if pic.warning is not None:
        return pic.content
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pic.content)
    os.replace(tmp, cached)
    return pic.content


def render(dicom_path: Path) -> bytes:
    """The preview PNG of ``dicom_path``; raises ``render.CannotRender``."""
    return renderer.render(dicom_path, _OPTIONS)
