"""Where received DICOM files live on disk, and how they get there safely.

Layout: ``<data_dir>/studies/<study uid>/<series uid>/<sop uid>.dcm``, a plain
DICOM tree that can be copied out as it is. A file is written to a temporary
name in its final directory, flushed and fsynced, renamed into place, and
the directory is fsynced, so after ``write_atomic`` returns the file survives
a crash with either its old or its new content, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.services.ingest import valid_uid

# Space kept free for the database and logs when storing files.
MIN_FREE_BYTES = 64 * 1024 * 1024
# Step of copying a received file into the archive.
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes of another file from ``offset``: a received data set,
    copied into place in steps rather than held in memory whole."""

    path: Path
    offset: int
    length: int


def relative_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    for uid in (study_uid, series_uid, sop_uid):
        if not valid_uid(uid):
            raise ValueError(f"not a DICOM UID: {uid!r}")
    return f"studies/{study_uid}/{series_uid}/{sop_uid}.dcm"


def absolute(data_dir: Path, rel: str) -> Path:
    return data_dir / rel


def write_atomic(path: Path, chunks: Sequence[bytes | FileSlice]) -> int:
    """Write ``chunks`` to ``path`` durably (see module docstring); returns the size.

    Refuses (ENOSPC) up front when the file would leave less than
    ``MIN_FREE_BYTES`` free, rather than finding out half-way through 2 GB.
    """
    created = _makedirs(path.parent)
    needed = sum(c.length if isinstance(c, FileSlice) else len(c) for c in chunks)
    needed += MIN_FREE_BYTES
    st = os.statvfs(path.parent)
    if st.f_bavail * st.f_frsize < needed:
        raise OSError(errno.ENOSPC, f"less than {needed} bytes free for {path.name}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(), suffix=".tmp")
    size = 0
    try:
        try:
            for chunk in chunks:
                if isinstance(chunk, FileSlice):
                    size += _copy_slice(chunk, fd)
                    continue
                size += _write_all(fd, chunk)
            os.fdatasync(fd)  # data and the size it needs; the name is made durable below
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    for directory in created:  # new directories must be durable in their parents too
        _fsync_dir(directory.parent)
    return size


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _copy_slice(part: FileSlice, out_fd: int) -> int:
    """Append ``part`` to ``out_fd`` in 1 MB steps: bounded memory, and on Linux
    faster than ``sendfile``/``copy_file_range`` for files of a few MB."""
    done = 0
    with part.path.open("rb", buffering=0) as src:
        while done < part.length:
            block = os.pread(src.fileno(), min(_COPY_CHUNK, part.length - done), part.offset + done)
            if not block:
                raise OSError(errno.EIO, f"{part.path} ended after {done} of {part.length} bytes")
            done += _write_all(out_fd, block)
    return done


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# A temp file of another machine's hub younger than this may still be being
# written into the shared data directory (docs/deployment.md).
SWEEP_MIN_AGE_S = 3600.0


def _temp_prefix() -> str:
    """``.in-<host>~<pid>~``: whose write a temp file is, so a sweep spares live ones."""
    return f".in-{socket.gethostname()}~{os.getpid()}~"


def _writer_gone(name: str, min_age_s: float, mtime: float) -> bool:
    host, _, rest = name.removeprefix(".in-").partition("~")
    pid_text = rest.partition("~")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
    return time.time() - mtime > min_age_s


def sweep_temporaries(data_dir: Path, min_age_s: float = SWEEP_MIN_AGE_S) -> int:
    """Delete temp files left by a crash mid-write; returns how many.

    Files of a process that still runs on this machine are left alone, and
    those of other machines only once they are older than ``min_age_s``.
    """
    count = 0
    # os.walk (scandir underneath): the whole archive's folders are read, so no
    # pathlib object per entry (rglob took 7 s warm at 100,000 studies).
    for folder, _, names in os.walk(data_dir / "studies"):
        for name in names:
            if not (name.startswith(".in-") and name.endswith(".tmp")):
                continue
            tmp = Path(folder, name)
            try:
                mtime = tmp.stat().st_mtime
            except FileNotFoundError:
                continue  # its writer renamed or removed it meanwhile
            if _writer_gone(name, min_age_s, mtime):
                remove(tmp)
                count += 1
    return count


def _makedirs(directory: Path) -> list[Path]:
    if directory.is_dir():
        return []
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
