"""Stored images as consumer pictures (JPEG or PNG): WADO-RS /rendered and
/thumbnail, and the summary page's previews. The one rendering path of the hub.

Decoding goes through pydicom and its plugins (JPEG baseline/extended/lossless,
JPEG-LS, JPEG 2000, RLE). The pipeline follows PS3.4 N.2 in short: Modality
LUT (rescale), VOI (the window asked for, else the file's first window, else
the file's VOI LUT, else the value range), MONOCHROME1 inverted, palette
colour applied, YBR converted to RGB, then the viewport.

An image the decoders cannot read gets a placeholder that says why, with the
reason kept on disk per instance (``<data_dir>/render/<stamp>/<uid>.reason``,
the stamp naming the decoders' versions): it is not decoded again on every
view, and the failure is logged once, not as a traceback a viewer would
repeat hundreds of times.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

log = logging.getLogger(__name__)

Format = Literal["jpeg", "png"]
MEDIA_TYPES: dict[Format, str] = {"jpeg": "image/jpeg", "png": "image/png"}
THUMBNAIL = 256
MAX_VIEWPORT = 4096
_failures_lock = threading.Lock()


class CannotRender(Exception):
    """The image cannot be shown; ``str()`` is the reason for a person."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"  # or "sigmoid"


@dataclass(frozen=True)
class Options:
    frame: int = 1
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    format: Format = "jpeg"
    quality: int = 90
    enlarge: bool = True  # False: a viewport only ever shrinks (thumbnails)


def parse_window(text: str) -> Window:
    """``center,width[,linear|sigmoid]``; ValueError naming the fault."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("window must be center,width or center,width,function")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError("window center and width must be numbers") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise ValueError("window width must be a number of at least 1")
    function = (parts[2] if len(parts) == 3 else "linear").lower()
    if function not in ("linear", "sigmoid"):
        raise ValueError("window function must be linear or sigmoid")
    return Window(center, width, function)


def parse_viewport(text: str) -> tuple[int, int]:
    """``width,height`` in pixels (1..4096); ValueError naming the fault."""
    parts = [p.strip() for p in text.split(",")]
    try:
        w, h = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ValueError("viewport must be width,height in pixels") from None
    if len(parts) != 2 or not (0 < w <= MAX_VIEWPORT and 0 < h <= MAX_VIEWPORT):
        raise ValueError(f"viewport must be width,height between 1 and {MAX_VIEWPORT}")
    return w, h


def render(path: Path, opts: Options) -> bytes:
    """The picture of one frame; CannotRender when it cannot be decoded."""
    ds = Dataset()
    try:
        arr = _decode(path, opts.frame - 1, ds)
    except OSError:
        raise  # the file, not the image: not a lasting failure
    except CannotRender:
        raise
    except Exception as exc:  # every decoder raises its own kinds
        raise CannotRender(_reason(exc)) from None
    try:
        image = _image(arr, ds, opts.window)
    except Exception as exc:
        raise CannotRender(_reason(exc)) from None
    return encode(_fit(image, opts.viewport, opts.enlarge), opts.format, opts.quality)


def _decode(path: Path, index: int, ds_out: Dataset) -> np.ndarray:
    """One frame, reading only that frame where the file allows (not deflated)."""
    if read_file_meta_info(path).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        ds = dcmread(path)
        ds_out.update(ds)
        return pixel_array(ds, index=index)
    try:
        return pixel_array(str(path), index=index, ds_out=ds_out)
    except AttributeError as exc:
        if "no pixel data" in str(exc).lower():
            raise CannotRender("the instance has no pixel data (it is not an image)") from None
        raise


def _reason(exc: Exception) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__
    return text[:300]


def _image(arr: np.ndarray, ds: Dataset, window: Window | None) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return Image.fromarray(_bytes_of(rgb, _max_of(rgb)), mode="RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (YBR already converted by pixel_array)
        return Image.fromarray(_bytes_of(arr, (1 << int(ds.get("BitsStored", 8) or 8)) - 1), "RGB")
    if arr.ndim != 2:
        raise CannotRender(f"unsupported pixel layout {arr.shape}")
    values = apply_modality_lut(arr, ds).astype(np.float64)
    grey = _voi(values, ds, window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, mode="L")


def _max_of(arr: np.ndarray) -> int:
    return 255 if arr.dtype == np.uint8 else 65535


def _bytes_of(arr: np.ndarray, top: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    scaled = arr.astype(np.float64) * (255.0 / max(top, 1))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _voi(values: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    if window is None:
        window = _file_window(ds)
    if window is None and "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds).astype(np.float64)
    if window is None:
        low, high = float(values.min()), float(values.max())
        window = Window((low + high) / 2 + 0.5, max(high - low + 1, 1))
    c, w = window.center, window.width
    if window.function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    else:
        out = ((values - (c - 0.5)) / max(w - 1, 1) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _file_window(ds: Dataset) -> Window | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c, w = _first(center), _first(width)
    except (TypeError, ValueError, IndexError):
        return None
    if w < 1:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR")).lower()
    return Window(c, w, "sigmoid" if function == "sigmoid" else "linear")


def _first(value: object) -> float:
    """The first of a multi-valued DS (several windows: the first is the default)."""
    if isinstance(value, str | bytes | int | float):
        return float(value)
    return float(value[0])  # type: ignore[index]


def _fit(image: Image.Image, viewport: tuple[int, int] | None, enlarge: bool) -> Image.Image:
    if viewport is None:
        return image
    w, h = viewport
    scale = min(w / image.width, h / image.height)
    if scale >= 1 and not enlarge:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: Format, quality: int = 90) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=max(1, min(quality, 100)))
    return out.getvalue()


@lru_cache(maxsize=64)
def placeholder(reason: str, size: tuple[int, int], fmt: Format) -> bytes:
    """A grey picture with the reason written in it."""
    w, h = size
    image = Image.new("L", (w, h), 96)
    draw = ImageDraw.Draw(image)
    lines = ["Cannot show this image:", *textwrap.wrap(reason, max(10, w // 7))[:8]]
    y = max(4, h // 2 - 7 * len(lines))
    for line in lines:
        draw.text((6, y), line, fill=235)
        y += 14
    return encode(image, fmt)


def _decoder_stamp() -> str:
    """The installed decoders' versions, short: an upgrade that may read more
    images forgets the failures the old decoders had."""
    found = []
    for name in ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                 "pylibjpeg-rle", "pillow", "numpy"):  # fmt: skip
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}=-")
    return hashlib.sha256(" ".join(found).encode()).hexdigest()[:12]


DECODERS = _decoder_stamp()


def reason_path(data_dir: Path, sop_instance_uid: str) -> Path:
    return data_dir / "render" / DECODERS / f"{sop_instance_uid}.reason"


def known_failure(data_dir: Path, sop_instance_uid: str) -> str | None:
    """Why this instance could not be rendered before; None if it never failed."""
    try:
        return reason_path(data_dir, sop_instance_uid).read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None


def remember_failure(data_dir: Path, sop_instance_uid: str, reason: str) -> None:
    """Keep the reason (written atomically) and log it, once per instance."""
    target = reason_path(data_dir, sop_instance_uid)
    with _failures_lock:
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(reason, "utf-8")
        os.replace(tmp, target)
    log.warning(
        "image cannot be rendered", extra={"sop_instance_uid": sop_instance_uid, "reason": reason}
    )


@dataclass(frozen=True)
class Picture:
    content: bytes
    media_type: str
    warning: str | None = None  # the reason, when ``content`` is a placeholder


# Recent pictures by file identity and options: a viewer's study browser asks
# for the same thumbnails each time it opens a study.
_recent: OrderedDict[tuple[str, int, int, Options], bytes] = OrderedDict()
_recent_lock = threading.Lock()
RECENT_COUNT = 256
RECENT_MAX_BYTES = 512 * 1024


def picture(data_dir: Path, path: Path, sop_instance_uid: str, opts: Options) -> Picture:
    """The rendered frame, or a placeholder naming why it cannot be (see module doc)."""
    media_type = MEDIA_TYPES[opts.format]
    reason = known_failure(data_dir, sop_instance_uid)
    if reason is None:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, opts)
        with _recent_lock:
            found = _recent.get(key)
            if found is not None:
                _recent.move_to_end(key)
                return Picture(found, media_type)
        try:
            content = render(path, opts)
        except CannotRender as exc:
            reason = str(exc)
            remember_failure(data_dir, sop_instance_uid, reason)
        else:
            if len(content) <= RECENT_MAX_BYTES:
                with _recent_lock:
                    _recent[key] = content
                    while len(_recent) > RECENT_COUNT:
                        _recent.popitem(last=False)
            return Picture(content, media_type)
    size = opts.viewport or (THUMBNAIL, THUMBNAIL)
    return Picture(placeholder(reason, size, opts.format), media_type, reason)
