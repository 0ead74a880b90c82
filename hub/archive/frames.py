"""Frames of a stored image, as stored: native pixel bytes sliced out of the
file, compressed frames as the device encoded them, nothing decoded.

A viewer asks for one frame at a time (a 300-frame ultrasound clip, a CT
slice by slice), so the file's header is read with large values deferred and
only the asked frame's bytes are read from disk. Decoding happens only when
the caller wants native bytes of a compressed image (``decoded``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Values above this are left on disk when the header is read.
DEFER = 4096


class NoSuchFrame(LookupError):
    """A frame number outside 1..NumberOfFrames; the message names it."""


class NoPixels(ValueError):
    """The instance has no pixel data (a report, a key object, a waveform)."""


@dataclass(frozen=True)
class Image:
    """What the frame reads need from an instance's header."""

    path: Path
    transfer_syntax: UID
    frames: int
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    value_at: int | None  # file offset of the Pixel Data value; None when not readable in place
    length: int

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax.is_compressed

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples * self.bits_allocated


def open_image(path: Path) -> Image:
    ds = dcmread(path, defer_size=DEFER)
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    if PIXEL_DATA not in ds:
        raise NoPixels("the instance has no pixel data")
    raw: Any = ds.get_item(PIXEL_DATA, keep_deferred=True)
    in_place = (
        ts.is_little_endian and not ts.is_deflated and getattr(raw, "value", b"") is None
    )  # deferred: still on disk at value_tell
    return Image(
        path=path,
        transfer_syntax=ts,
        frames=_int(ds.get("NumberOfFrames"), 1),
        rows=_int(ds.get("Rows"), 0),
        columns=_int(ds.get("Columns"), 0),
        samples=_int(ds.get("SamplesPerPixel"), 1),
        bits_allocated=_int(ds.get("BitsAllocated"), 8),
        value_at=raw.value_tell if in_place else None,
        length=raw.length,
    )


def _int(value: object, default: int) -> int:
    try:
        return int(str(value)) if value not in (None, "") else default
    except ValueError:
        return default


def check(img: Image, numbers: list[int]) -> None:
    for n in numbers:
        if not 1 <= n <= img.frames:
            raise NoSuchFrame(f"frame {n} does not exist: the instance has {img.frames} frame(s)")


def stored(img: Image, numbers: list[int]) -> list[bytes]:
    """The frames in the stored encoding: native little-endian bytes, or each
    compressed frame's fragments joined."""
    check(img, numbers)
    if img.compressed:
        return _compressed(img, numbers)
    return [_native(img, n) for n in numbers]


def decoded(img: Image, numbers: list[int]) -> list[bytes]:
    """The frames as native little-endian bytes, decoding compressed ones (colour as RGB)."""
    check(img, numbers)
    if not img.compressed:
        return [_native(img, n) for n in numbers]
    out = []
    for n in numbers:
        arr = pixel_array(str(img.path), index=n - 1)
        out.append(np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes())
    return out


def _native(img: Image, n: int) -> bytes:
    bits = img.frame_bits
    if img.value_at is not None and bits % 8 == 0:
        size = bits // 8
        with img.path.open("rb", buffering=0) as f:
            data = os.pread(f.fileno(), size, img.value_at + (n - 1) * size)
        if len(data) != size:
            raise NoPixels(f"frame {n} is cut short in the stored file")
        return data
    ds = dcmread(img.path)
    data = bytes(ds.PixelData)
    if not ds.file_meta.TransferSyntaxUID.is_little_endian and img.bits_allocated > 8:
        width = img.bits_allocated // 8
        data = np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()
    if bits % 8 == 0:
        size = bits // 8
        return data[(n - 1) * size : n * size]
    # Bit-packed (1-bit) frames that do not end on a byte boundary.
    unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    return np.packbits(unpacked[(n - 1) * bits : n * bits], bitorder="little").tobytes()


def _compressed(img: Image, numbers: list[int]) -> list[bytes]:
    fragments = _fragments(img) if img.value_at is not None else None
    if fragments is not None:
        bot, frags = fragments
        by_frame = _by_frame(img, bot, frags)
        if by_frame is not None:
            with img.path.open("rb", buffering=0) as f:
                return [
                    b"".join(os.pread(f.fileno(), length, at) for at, length in by_frame[n - 1])
                    for n in numbers
                ]
    # Anything else (no offsets, several fragments a frame, deflated): pydicom's
    # frame splitting on the whole value, which looks at JPEG markers.
    ds = dcmread(img.path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=img.frames))
    return [frames[n - 1] for n in numbers]


def _fragments(img: Image) -> tuple[list[int], list[tuple[int, int]]] | None:
    """The Basic Offset Table and each fragment's ``(file offset, length)``."""
    assert img.value_at is not None
    frags: list[tuple[int, int]] = []
    bot: list[int] = []
    with img.path.open("rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        pos = img.value_at
        first = True
        while pos + 8 <= size:
            tag_group, tag_elem, length = struct.unpack("<HHI", os.pread(f.fileno(), 8, pos))
            tag = (tag_group << 16) | tag_elem
            pos += 8
            if tag == _SEQ_END:
                return bot, frags
            if tag != _ITEM or length == _UNDEFINED or pos + length > size:
                return None
            if first:
                table = os.pread(f.fileno(), length, pos)
                bot = list(struct.unpack(f"<{length // 4}I", table[: length // 4 * 4]))
                first = False
            else:
                frags.append((pos, length))
            pos += length
    return None


def _by_frame(
    img: Image, bot: list[int], frags: list[tuple[int, int]]
) -> list[list[tuple[int, int]]] | None:
    """Fragments grouped per frame when the file says how; None when it does not."""
    if img.frames == 1:
        return [frags]
    if len(frags) == img.frames:
        return [[f] for f in frags]
    if len(bot) == img.frames and frags:
        base = frags[0][0] - 8  # offsets count from the first fragment's item tag
        groups: list[list[tuple[int, int]]] = [[] for _ in bot]
        for at, length in frags:
            rel = at - 8 - base
            index = max(i for i, off in enumerate(bot) if off <= rel)
            groups[index].append((at, length))
        return groups
    return None


def header(path: Path) -> Dataset:
    """The header without pixel data (for rendering decisions and metadata)."""
    return dcmread(path, stop_before_pixels=True)
