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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from hub.archive.filecache import ByFile

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
    # Compressed: each frame's fragments as (file offset, length), when the file says.
    fragments: tuple[tuple[tuple[int, int], ...], ...] | None = None

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax.is_compressed

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples * self.bits_allocated


CACHE_SIZE = 512
_layouts: ByFile[Image] = ByFile(CACHE_SIZE)


def open_image(path: Path) -> Image:
    """The instance's frame layout (cached while the file is unchanged: a viewer
    asks for the frames of one clip one by one). Raises NoPixels."""
    return _layouts.get(path, _open)


def _open(path: Path) -> Image:
    """Read the header up to the pixel data, then that element's own header; the
    value itself stays on disk (pydicom would otherwise scan a clip's fragments
    for the sequence delimiter on every read)."""
    with path.open("rb") as f:
        ds = dcmread(f, stop_before_pixels=True)
        at = f.tell()
        head = f.read(12)
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    value_at, length = None, 0
    if not ts.is_little_endian or ts.is_deflated:
        full = dcmread(path)  # rare (retired or deflated): read whole
        if PIXEL_DATA not in full:
            raise NoPixels("the instance has no pixel data")
    else:
        if len(head) < 8 or struct.unpack_from("<I", head)[0] != 0x00107FE0:
            raise NoPixels("the instance has no pixel data")
        implicit = ds.original_encoding[0] is not False
        if implicit:
            (length,) = struct.unpack_from("<I", head, 4)
            value_at = at + 8
        elif head[4:6] in (b"OB", b"OW", b"UN", b"OD", b"OF", b"OL", b"OV"):
            (length,) = struct.unpack_from("<I", head, 8)
            value_at = at + 12
        else:
            (length,) = struct.unpack_from("<H", head, 6)
            value_at = at + 8
    img = Image(
        path=path,
        transfer_syntax=ts,
        frames=_int(ds.get("NumberOfFrames"), 1),
        rows=_int(ds.get("Rows"), 0),
        columns=_int(ds.get("Columns"), 0),
        samples=_int(ds.get("SamplesPerPixel"), 1),
        bits_allocated=_int(ds.get("BitsAllocated"), 8),
        value_at=value_at,
        length=length,
    )
    if img.compressed and value_at is not None and length == _UNDEFINED:
        found_fragments = _fragments(img)
        if found_fragments is not None:
            groups = _by_frame(img, *found_fragments)
            if groups is not None:
                img = replace(img, fragments=tuple(tuple(g) for g in groups))
    return img


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
    if img.fragments is not None:
        with img.path.open("rb", buffering=0) as f:
            return [
                b"".join(os.pread(f.fileno(), length, at) for at, length in img.fragments[n - 1])
                for n in numbers
            ]
    # Anything else (no offsets, several fragments a frame, deflated): pydicom's
    # frame splitting on the whole value, which looks at JPEG markers.
    ds = dcmread(img.path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=img.frames))
    return [frames[n - 1] for n in numbers]


def whole_stream(path: Path) -> bytes:
    """All fragments of the encapsulated pixel data joined: an MPEG video's stream."""
    ds = dcmread(path)
    return next(generate_frames(ds.PixelData, number_of_frames=1))


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
