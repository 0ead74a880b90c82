"""An old archive folder or a CD/USB into the hub, through the C-STORE path.

Every file under the folder is offered to ``store_instance`` as if a
modality had sent it (checked, matched, corrected, deduplicated, durable),
one at a time, so memory stays flat and a corrupt file costs only itself.
A DICOMDIR is followed to report the files it lists but the medium lacks.
Without ``apply`` nothing is written: each file gets what *would* happen.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from hub.archive import ingest
from hub.errors import HubError
from hub.models import Order
from hub.services import ingest as ingest_service

if TYPE_CHECKING:
    from hub.context import Hub

CALLING_AE = "IMPORT"  # the instances' calling AE: they came by import, not from a device
FAILED = ("unreadable", "missing", "refused")
# An export's own listings (hub.archive.export), beside its DICOM files.
_LISTINGS = frozenset({"studies.jsonl", "audit.jsonl"})

Report = Callable[[dict[str, Any]], None]


@dataclass
class Summary:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> bool:
        return any(self.outcomes[k] for k in FAILED)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.outcomes.items()))


def files_under(folder: Path) -> Iterator[Path]:
    """Every regular file, sorted; DICOMDIRs, hidden files and an export's listings aside."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.upper() != "DICOMDIR" and not name.startswith(".") and name not in _LISTINGS:
                yield Path(root) / name


def missing_from_dicomdirs(folder: Path) -> Iterator[tuple[str, str]]:
    """(file, reason) for each DICOMDIR under ``folder`` that cannot be read or
    lists a file that is not there."""
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.upper() != "DICOMDIR":
                continue
            path = Path(root) / name
            try:
                records = dcmread(path).get("DirectoryRecordSequence") or []
            except Exception as exc:  # pydicom raises many kinds on garbage
                yield _rel(path, folder), f"DICOMDIR cannot be read: {exc}"
                continue
            for rec in records:
                ref = rec.get("ReferencedFileID")
                if not ref:
                    continue
                parts = [ref] if isinstance(ref, str) else list(ref)
                target = Path(root).joinpath(*parts)
                if not _exists_any_case(target):
                    yield _rel(target, folder), f"listed in {_rel(path, folder)} but not found"


def run(hub: Hub, folder: Path, *, apply: bool, report: Report) -> Summary:
    """Report (and with ``apply`` store) every file under ``folder``."""
    if not folder.is_dir():
        raise HubError(f"{folder} is not a folder")
    done = Summary()
    for name, reason in missing_from_dicomdirs(folder):
        done.outcomes["missing"] += 1
        report({"file": name, "outcome": "missing", "reason": reason})
    for path in files_under(folder):
        line = {"file": _rel(path, folder)} | one_file(hub, path, apply=apply)
        done.outcomes[line["outcome"]] += 1
        report(line)
    return done


def one_file(hub: Hub, path: Path, *, apply: bool) -> dict[str, Any]:
    """What became (or would become) of one file."""
    try:
        inc = incoming(path)
        if apply:
            stored = ingest.store_instance(hub, inc)
            return {
                "outcome": "duplicate" if stored.duplicate else "stored",
                "study_instance_uid": stored.study_instance_uid,
                "order": _accession(hub, stored.order_id),
            }
        return _dry_run(hub, inc)
    except ingest.Unreadable as exc:
        return {"outcome": "unreadable", "reason": str(exc)}
    except HubError as exc:  # a header that contradicts itself, too large, disk full
        return {"outcome": "refused", "reason": str(exc)}


def incoming(path: Path) -> ingest.Incoming:
    """A Part 10 file as the Storage SCP would hand it over."""
    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ingest.Unreadable.one("file", f"not a DICOM file: {exc}") from None
    missing = [
        kw
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        if not meta.get(kw)
    ]
    if missing:
        raise ingest.Unreadable.one("file meta", f"lacks {', '.join(missing)}")
    return ingest.Incoming(
        data=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        calling_ae=CALLING_AE,
    )


def _dry_run(hub: Hub, inc: ingest.Incoming) -> dict[str, Any]:
    header = ingest.header_of(hub, inc)
    with hub.db.read_session() as s:
        seen = ingest_service.preview(s, header, patient_day=hub.settings.match_patient_day)
    line: dict[str, Any] = {
        "outcome": seen.outcome,
        "study_instance_uid": header.study_instance_uid,
        "order": _accession(hub, seen.order_id),
    }
    if seen.outcome == "new":
        if seen.order_id is not None:
            line["would"] = f"match order {line['order']} ({seen.match_method})"
        else:
            line["would"] = f"wait for a person ({seen.unmatched_reason})"
    return line


def _accession(hub: Hub, order_id: int | None) -> str | None:
    if order_id is None:
        return None
    with hub.db.read_session() as s:
        order = s.get(Order, order_id)
        return order.accession_number if order else None


def _exists_any_case(path: Path) -> bool:
    """Media file ids are upper case; the mounted copy may not be."""
    if path.exists():
        return True
    parent = path.parent
    return parent.is_dir() and path.name.upper() in {p.name.upper() for p in parent.iterdir()}


def _rel(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)
