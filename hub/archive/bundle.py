"""A study as a ZIP file, written while it is sent.

The archive is produced by a generator: each file is copied in CHUNK-sized
pieces into a ``zipfile`` whose output is a sink with no ``seek``, so
``zipfile`` writes each member's sizes after its data (data descriptors) and
the bytes can leave as soon as they are written. Memory stays at about one
chunk whatever the study's size; nothing is built in memory or on disk first.
Members are stored, not deflated: DICOM pixel data and JPEGs barely shrink and
a CT would cost minutes of CPU.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hub.archive import render

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
JPEG_SIZE = 2048  # the longer side of a JPEG in a download: a full-screen picture


@dataclass(frozen=True)
class Member:
    """One file of the archive: copied from ``path``, or ``make()``'s bytes when its
    turn comes (None leaves it out: an image that cannot be rendered)."""

    name: str
    path: Path | None = None
    make: Callable[[], bytes | None] | None = None


@dataclass(frozen=True)
class SeriesFiles:
    """One series of a study as the archive names it."""

    label: str  # e.g. "01 DX Thorax"
    files: list[Path]


class _Sink:
    """Where zipfile writes: it keeps what was written until ``take`` (no seek, no tell)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def stream(members: Iterable[Member]) -> Iterator[bytes]:
    """The ZIP of ``members``, in pieces of about CHUNK bytes as they are written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:
        for member in members:
            if member.path is not None:
                yield from _copy(zf, sink, member.name, member.path)
            elif member.make is not None:
                data = member.make()
                if data is not None:
                    zf.writestr(member.name, data)
            if piece := sink.take():
                yield piece
    if piece := sink.take():
        yield piece


def _copy(zf: zipfile.ZipFile, sink: _Sink, name: str, path: Path) -> Iterator[bytes]:
    try:
        info = zipfile.ZipInfo.from_file(path, name)
        source = path.open("rb")
    except OSError as exc:  # a file gone from the archive: the rest still goes out
        log.error("file missing from a download", extra={"path": str(path), "error": str(exc)})
        return
    with source, zf.open(info, "w") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            yield sink.take()


def study_members(series: list[SeriesFiles], readme: str, *, jpegs: bool) -> Iterator[Member]:
    """README.txt, then ``DICOM/<series>/IMG0001.dcm``... and, with ``jpegs``,
    ``JPEG/<series>/IMG0001.jpg``... for each image: a plain tree any viewer opens."""
    yield Member("README.txt", make=lambda: readme.encode())
    for one in series:
        for n, path in enumerate(one.files, 1):
            yield Member(f"DICOM/{one.label}/IMG{n:04d}.dcm", path=path)
    if jpegs:
        for one in series:
            for n, path in enumerate(one.files, 1):
                yield Member(f"JPEG/{one.label}/IMG{n:04d}.jpg", make=_jpeg_of(path))


def _jpeg_of(path: Path) -> Callable[[], bytes | None]:
    return lambda: jpeg(path)


def jpeg(dicom_path: Path) -> bytes | None:
    """A JPEG of the image (first frame) as the viewer shows it (hub/archive/render.py);
    None if it cannot be decoded here (the DICOM file is in the archive all the same)."""
    opts = render.Options(viewport=(JPEG_SIZE, JPEG_SIZE), format="jpeg", enlarge=False)
    try:
        return render.render(dicom_path, opts)
    except (render.CannotRender, OSError) as exc:
        log.info("no JPEG for a download", extra={"path": str(dicom_path), "error": str(exc)})
        return None
