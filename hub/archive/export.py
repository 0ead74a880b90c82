"""Everything the hub stores, written out as a plain tree a clinic can take with it.

``DIR/<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` byte for byte as
stored, ``DIR/studies.jsonl`` (one study a line, instances with SHA-256) and
``DIR/audit.jsonl``. Streaming: studies are read from the database 200 at
a time (a few queries per batch, not per study), their files copied in 1 MB
steps (a few at once), the JSON lines written batch by batch, so memory
stays flat whatever the archive's size. A file reaches its final
name only whole (temporary name, then rename), so a re-run skips every file
already there at its size: an interrupted export resumes. Files are not
fsynced one by one; everything is flushed once before ``studies.jsonl``
takes its name, so a listing present means its files are on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sqlmodel import col, select

from hub.errors import HubError
from hub.models import AuditEvent, Instance, Order, Series, Study
from hub.services import events

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from hub.context import Hub

STUDIES_FILE = "studies.jsonl"
AUDIT_FILE = "audit.jsonl"
_BATCH = 200
_CHUNK = 1 << 20
# Files copied at once: hashing and I/O release the GIL, so two cores hash two files.
_WORKERS = min(4, os.cpu_count() or 1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

Progress = Callable[[int], None]  # called with the bytes of each batch of instances done

_STUDY = Study.__table__  # type: ignore[attr-defined]
_SERIES = Series.__table__  # type: ignore[attr-defined]
_INSTANCE = Instance.__table__  # type: ignore[attr-defined]
_SERIES_COLUMNS = tuple(
    _SERIES.c[name]
    for name in (
        "id",
        "study_id",
        "series_instance_uid",
        "modality",
        "series_number",
        "series_description",
    )
)
_INSTANCE_COLUMNS = tuple(
    _INSTANCE.c[name]
    for name in (
        "series_id",
        "path",
        "size",
        "sop_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "coerced",
        "received_at",
    )
)


@dataclass
class Summary:
    studies: int = 0
    instances: int = 0
    copied: int = 0
    skipped: int = 0
    unreadable: list[str] = field(default_factory=list)  # stored files that could not be read
    bytes: int = 0


@dataclass(frozen=True)
class Scope:
    since: date | None = None
    patient_id: str | None = None


@dataclass
class Mismatch:
    problems: list[str] = field(default_factory=list)


def safe_name(text: str) -> str:
    """An id as a path part: anything but letters, digits, ``.``, ``_`` and ``-`` replaced."""
    name = _UNSAFE.sub("_", text.strip())
    return name if name.strip(".") else "_"


def totals(hub: Hub, scope: Scope) -> tuple[int, int]:
    """(instances, bytes) the export will cover, for the progress bar."""
    from sqlalchemy import func

    with hub.db.read_session() as s:
        stmt = select(func.count(col(Instance.id)), func.coalesce(func.sum(Instance.size), 0))
        stmt = _scoped(stmt.join(Study, col(Study.id) == col(Instance.study_id)), scope)
        n, size = s.execute(stmt).one()
    return int(n), int(size)


def export(hub: Hub, to: Path, scope: Scope, *, actor: str, progress: Progress) -> Summary:
    """Write the scope's studies under ``to``; audited as ``export``."""
    to.mkdir(parents=True, exist_ok=True)
    # Into an empty folder nothing can be there already: no look before each copy.
    fresh = not any(os.scandir(to))
    done = Summary()
    studies_tmp = to / f".{STUDIES_FILE}.part"
    with _writing(studies_tmp) as out, ThreadPoolExecutor(_WORKERS) as pool:
        # One batch read and its copies started while the one before finishes:
        # the queries and the JSON lines overlap the copying (two batches in memory).
        in_flight: list[_Batch] = []
        try:
            for ids in _study_batches(hub, scope):
                with hub.db.read_session() as s:
                    in_flight.append(_start_batch(hub, s, ids, to, pool, fresh))
                if len(in_flight) > 1:
                    _write(out, studies_tmp, _finish_batch(in_flight.pop(0), done, progress))
            while in_flight:
                _write(out, studies_tmp, _finish_batch(in_flight.pop(0), done, progress))
        except BaseException:  # copies not begun are not begun (the pool waits for the rest)
            for batch in in_flight:
                for copying in batch.copies:
                    copying.cancel()
            raise
    _export_audit(hub, to)
    os.sync()  # one flush for all files (an fsync each cost 3x the copying)
    os.replace(studies_tmp, to / STUDIES_FILE)
    with hub.db.session() as s:
        events.audit(
            s,
            actor,
            "export",
            "archive",
            str(to),
            {
                "since": scope.since.isoformat() if scope.since else None,
                "patient_id": scope.patient_id,
                "studies": done.studies,
                "instances": done.instances,
                "bytes": done.bytes,
                "unreadable": len(done.unreadable),
            },
        )
    return done


def verify(to: Path) -> tuple[int, list[str]]:
    """(instances checked, problems): every file listed in studies.jsonl re-hashed."""
    listing = to / STUDIES_FILE
    if not listing.is_file():
        raise HubError(f"{listing} not found: not an export folder")
    checked, problems = 0, []
    with listing.open(encoding="utf-8") as f:
        for line in f:
            study = json.loads(line)
            for series in study["series"]:
                for inst in series["instances"]:
                    checked += 1
                    path = to / inst["file"]
                    if inst["sha256"] is None:
                        problems.append(f"{inst['file']}: not exported ({inst.get('error')})")
                        continue
                    if not path.is_file():
                        problems.append(f"{inst['file']}: missing")
                        continue
                    digest, size = _hash(path)
                    if digest != inst["sha256"] or size != inst["size"]:
                        problems.append(f"{inst['file']}: checksum differs")
    return checked, problems


def _study_batches(hub: Hub, scope: Scope) -> Iterator[list[int]]:
    """Study ids in id order, a batch per query (keyset, not offset)."""
    last = 0
    while True:
        with hub.db.read_session() as s:
            stmt = select(Study.id).where(col(Study.id) > last)
            ids = [i for i in s.scalars(_scoped(stmt, scope).order_by(col(Study.id)).limit(_BATCH))]
        if not ids:
            return
        yield [i for i in ids if i is not None]
        last = ids[-1] or last


def _scoped(stmt: Any, scope: Scope) -> Any:
    if scope.since is not None:
        stmt = stmt.where(col(Study.last_received_at) >= datetime.combine(scope.since, time()))
    if scope.patient_id is not None:
        stmt = stmt.where(col(Study.patient_id) == scope.patient_id)
    return stmt


@dataclass
class _Batch:
    """One batch of studies read from the database, its files being copied."""

    studies: list[Any]
    series_of: dict[int, list[Any]]
    instances: list[Any]
    rels: list[str]
    orders: dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]]
    copies: list[Future[list[tuple[str | None, str]]]]


def _start_batch(
    hub: Hub,
    s: Session,
    study_ids: list[int],
    to: Path,
    pool: ThreadPoolExecutor,
    fresh: bool,
) -> _Batch:
    """A batch of studies: four queries for all of them, their files handed to the pool.

    (A query per study and per series cost more than copying the files.)
    Rows are read as plain tuples (no ORM objects: at 10,000 instances their
    construction cost as much as the copying); only the few orders are models,
    turned into their JSON parts here while the session is open.
    """
    studies = list(
        s.execute(select(*_STUDY.c).where(_STUDY.c.id.in_(study_ids)).order_by(_STUDY.c.id))
    )
    order_ids = {st.order_id for st in studies if st.order_id}
    orders = (
        {
            o.id: (_owner(o), _order(o))
            for o in s.scalars(select(Order).where(col(Order.id).in_(order_ids)))
            if o.id is not None
        }
        if order_ids
        else {}
    )
    series_of: dict[int, list[Any]] = {}
    for series in s.execute(
        select(*_SERIES_COLUMNS).where(_SERIES.c.study_id.in_(study_ids)).order_by(_SERIES.c.id)
    ):
        series_of.setdefault(series.study_id, []).append(series)
    instances_of: dict[int, list[Any]] = {}
    for inst in s.execute(
        select(*_INSTANCE_COLUMNS)
        .join(_SERIES, _SERIES.c.id == _INSTANCE.c.series_id)
        .where(_SERIES.c.study_id.in_(study_ids))
        .order_by(_INSTANCE.c.id)
    ):
        instances_of.setdefault(inst.series_id, []).append(inst)
    every: list[Any] = []
    rels: list[str] = []
    for study in studies:
        folder = f"{safe_name(study.patient_id or 'NO_PATIENT_ID')}/"
        folder += f"{safe_name(study.study_instance_uid)}/"
        for series in series_of.get(study.id, []):
            where = f"{folder}{safe_name(series.series_instance_uid)}/"
            for inst in instances_of.get(series.id, []):
                every.append(inst)
                rels.append(f"{where}{safe_name(inst.sop_instance_uid)}.dcm")
    data_dir, target = str(hub.settings.data_dir), str(to)
    jobs = [
        (os.path.join(data_dir, inst.path), os.path.join(target, rel), inst.size, not fresh)
        for inst, rel in zip(every, rels, strict=True)
    ]
    # A few jobs per worker, not one per file: the hand-off costs more than a small copy.
    step = max(1, -(-len(jobs) // (_WORKERS * 4)))
    copies = [pool.submit(_copy_all, jobs[i : i + step]) for i in range(0, len(jobs), step)]
    return _Batch(studies, series_of, every, rels, orders, copies)


def _finish_batch(batch: _Batch, done: Summary, progress: Progress) -> str:
    """The batch's JSON lines, once its files are copied (a copy's failure raised here)."""
    copies = [result for copying in batch.copies for result in copying.result()]
    every, rels, series_of = batch.instances, batch.rels, batch.series_of
    listed_of: dict[int, list[dict[str, Any]]] = {}
    size = 0
    for inst, rel, (digest, outcome) in zip(every, rels, copies, strict=True):
        if outcome == "copied":
            done.copied += 1
        elif outcome == "skipped":
            done.skipped += 1
        else:
            done.unreadable.append(f"{inst.path}: {outcome}")
        size += inst.size
        listed_of.setdefault(inst.series_id, []).append(
            {
                "sop_instance_uid": inst.sop_instance_uid,
                "sop_class_uid": inst.sop_class_uid,
                "transfer_syntax_uid": inst.transfer_syntax_uid,
                "file": rel,
                "size": inst.size,
                "sha256": digest,
                "coerced": inst.coerced,
                "received_at": inst.received_at,
            }
            | ({} if digest else {"error": f"stored file {outcome}"})
        )
    done.instances += len(every)
    done.bytes += size
    progress(size)
    lines = []
    for study in batch.studies:
        owner, order = batch.orders.get(study.order_id, (None, None))
        series_out = [
            {
                "series_instance_uid": series.series_instance_uid,
                "modality": series.modality,
                "series_number": series.series_number,
                "series_description": series.series_description,
                "instances": listed_of.get(series.id, []),
            }
            for series in series_of.get(study.id, [])
        ]
        done.studies += 1
        lines.append(
            {
                "study_instance_uid": study.study_instance_uid,
                "patient": {"id": study.patient_id, "name": study.patient_name},
                "owner": owner,
                "order": order,
                "match": {
                    "method": study.match_method,
                    "unmatched_reason": study.unmatched_reason,
                    "held": study.held,
                },
                "accession_number": study.accession_number,
                "study_date": study.study_date,
                "modality": study.modality,
                "study_description": study.study_description,
                "calling_ae": study.calling_ae,
                "received_at": study.created_at,
                "series": series_out,
            }
        )
    return "".join(json.dumps(line, default=_plain) + "\n" for line in lines)


def _owner(order: Order | None) -> dict[str, Any] | None:
    if order is None:
        return None
    return {
        "id": order.owner_id,
        "last_name": order.owner_last_name,
        "first_name": order.owner_first_name,
        "organization": order.owner_organization,
    }


def _order(order: Order | None) -> dict[str, Any] | None:
    if order is None:
        return None
    return order.model_dump(exclude={"name_key"})


def _copy_all(jobs: list[tuple[str, str, int, bool]]) -> list[tuple[str | None, str]]:
    return [_copy(src, dst, size, look) for src, dst, size, look in jobs]


def _copy(src: str, dst: str, size: int, look: bool = True) -> tuple[str | None, str]:
    """(SHA-256, "copied" / "skipped" / why the stored file cannot be read).

    Copies in steps through a temporary name, hashing as it goes (each byte
    read once); a whole file already at ``dst`` (same size) is kept and only
    hashed (``look`` False: the folder was empty, nothing to look for). A
    stored file that cannot be read costs only itself; a
    destination that cannot be written stops the export. Plain ``os`` calls
    on ``str`` paths: for the many ~1 KB files the cost per file is the
    system calls, and ``pathlib`` would cost as much again.
    """
    try:
        if look and os.stat(dst).st_size == size and os.path.isfile(dst):
            return _hash(dst)[0], "skipped"
    except OSError:
        pass
    try:
        fin = os.open(src, os.O_RDONLY)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    head, name = os.path.split(dst)
    tmp = os.path.join(head, f".{name}.part")
    digest = hashlib.sha256()
    try:
        fout = _create(tmp)
        try:
            while block := _read(fin):
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fout, view) :]
        finally:
            os.close(fout)
    except _Unreadable as exc:
        _unlink(tmp)
        return None, f"cannot be read ({exc.strerror})"
    except OSError as exc:
        _unlink(tmp)
        _write_failed(dst, exc)
    finally:
        os.close(fin)
    os.replace(tmp, dst)
    return digest.hexdigest(), "copied"


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Unreadable(OSError):
    """A read of the stored file failed (not the export's own disk)."""


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _CHUNK)
    except OSError as exc:
        raise _Unreadable(exc.errno, exc.strerror) from None


def _create(tmp: str) -> int:
    """The temporary file opened for writing, its folder made on first need."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        return os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        return os.open(tmp, flags, 0o666)


def _write_failed(dst: str, exc: OSError) -> NoReturn:
    if exc.errno == errno.ENOSPC:
        raise HubError(f"disk full writing {dst}; nothing half-written kept") from None
    raise HubError(f"cannot write {dst}: {exc.strerror}") from None


def _hash(path: Path | str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _export_audit(hub: Hub, to: Path) -> None:
    tmp = to / f".{AUDIT_FILE}.part"
    last = 0
    with _writing(tmp) as out:
        while True:
            with hub.db.read_session() as s:
                rows = list(
                    s.scalars(
                        select(AuditEvent)
                        .where(col(AuditEvent.id) > last)
                        .order_by(col(AuditEvent.id))
                        .limit(_BATCH * 5)
                    )
                )
                lines = [json.dumps(r.model_dump(), default=_plain) + "\n" for r in rows]
            if not rows:
                break
            _write(out, tmp, "".join(lines))
            last = rows[-1].id or last
    os.replace(tmp, to / AUDIT_FILE)


class _writing:
    """A text file open for writing, removed (not left looking complete) on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        try:
            self.f = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise HubError(f"cannot write {self.path}: {exc.strerror}") from None
        return self.f

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            self.f.close()
        except OSError:
            if kind is None:
                self.path.unlink(missing_ok=True)
                raise HubError(f"disk full writing {self.path}") from None
        if kind is not None:
            self.path.unlink(missing_ok=True)


def _write(out: Any, path: Path, text: str) -> None:
    try:
        out.write(text)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HubError(f"disk full writing {path}") from None
        raise HubError(f"cannot write {path}: {exc.strerror}") from None


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
