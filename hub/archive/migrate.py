"""Migration from a live old PACS: C-FIND what it holds, C-GET what the hub lacks.

The hub is the SCU here. Studies come from a Study Root C-FIND (since a date,
if given); for each, the instance UIDs are listed level by level (series,
then images: the hierarchical queries every archive answers, DCMTK dcmqrscp
included), and a study whose instances are all stored already is skipped, so
a re-run resumes where the last one stopped. The rest is fetched with C-GET
on one association, each received instance going through the C-STORE path
(``store_instance``: checked, matched, deduplicated, durable) before the
old PACS is told it arrived.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from hub.archive import ingest
from hub.errors import HubError, Invalid
from hub.services import ingest as ingest_service

if TYPE_CHECKING:
    from hub.context import Hub

_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
_PENDING = (0xFF00, 0xFF01)

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class OldPacs:
    ae_title: str
    host: str
    port: int
    calling_ae: str = "VETHUB"


@dataclass
class Summary:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> bool:
        return bool(self.outcomes["failed"] or self.outcomes["study_failed"])

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.outcomes.items()))


def run(hub: Hub, pacs: OldPacs, *, since: date | None, report: Report) -> Summary:
    """Pull every study (since ``since``) the hub does not hold whole yet."""
    done = Summary()
    assoc = _associate(hub, pacs)
    try:
        for study_uid in _studies(assoc, since):
            wanted = set(_instances_of(assoc, study_uid))
            missing = wanted - _stored(hub, wanted)
            if wanted and not missing:
                done.outcomes["studies_complete"] += 1
                report(
                    {
                        "study_instance_uid": study_uid,
                        "outcome": "complete",
                        "instances": len(wanted),
                    }
                )
                continue
            got = _get(assoc, study_uid)
            done.outcomes.update({k: v for k, v in got.items() if k != "status"})
            ok = got["status"] == 0 and not got["failed"]
            done.outcomes["studies_retrieved" if ok else "study_failed"] += 1
            report(
                {"study_instance_uid": study_uid, "outcome": "retrieved" if ok else "failed"}
                | dict(got)
            )
    finally:
        if assoc.is_established:
            assoc.release()
    return done


def _associate(hub: Hub, pacs: OldPacs) -> Association:
    ae = AE(ae_title=pacs.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []
    for cx in StoragePresentationContexts[: 128 - 2]:
        uid = str(cx.abstract_syntax)
        ae.add_requested_context(uid, _SYNTAXES)
        roles.append(build_role(uid, scp_role=True))
    _config.STORE_RECV_CHUNKED_DATASET = True  # a received instance goes to a temp file
    receiver = _Receiver(hub, pacs.ae_title)
    assoc = ae.associate(
        pacs.host,
        pacs.port,
        ae_title=pacs.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, receiver.on_store)],
    )
    if not assoc.is_established:
        raise HubError(
            f"no association with {pacs.ae_title} at {pacs.host}:{pacs.port} "
            "(refused, wrong AE title, or not reachable)"
        )
    assoc.receiver = receiver  # type: ignore[attr-defined]
    return assoc


def _find(assoc: Association, query: Dataset) -> Iterator[Dataset]:
    for status, found in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        code = int(getattr(status, "Status", -1))
        if code in _PENDING and found is not None:
            yield found
        elif code not in (0x0000, *_PENDING):
            level = query.QueryRetrieveLevel
            raise HubError(f"C-FIND at {level} level failed on the old PACS: status 0x{code:04X}")


def _studies(assoc: Association, since: date | None) -> list[str]:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = ""
    q.StudyDate = f"{since:%Y%m%d}-" if since else ""
    return sorted({str(d.StudyInstanceUID) for d in _find(assoc, q) if d.get("StudyInstanceUID")})


def _instances_of(assoc: Association, study_uid: str) -> Iterator[str]:
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = ""
    series = [str(d.SeriesInstanceUID) for d in _find(assoc, q) if d.get("SeriesInstanceUID")]
    for series_uid in series:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = ""
        yield from (str(d.SOPInstanceUID) for d in _find(assoc, q) if d.get("SOPInstanceUID"))


def _stored(hub: Hub, uids: set[str]) -> set[str]:
    with hub.db.read_session() as s:
        return {u for u in uids if ingest_service.indexed(s, u)}


def _get(assoc: Association, study_uid: str) -> Counter[str]:
    receiver: _Receiver = assoc.receiver  # type: ignore[attr-defined]
    receiver.counts = Counter()
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study_uid
    final = 0
    for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
        code = int(getattr(status, "Status", 0xC000))
        if code not in _PENDING:
            final = code
    got = Counter(receiver.counts)
    got["status"] = final
    got.setdefault("failed", 0)
    if final not in (0x0000, 0xB000) and not assoc.is_established:
        got["failed"] += 1  # the association dropped mid-study
    return got


class _Receiver:
    """The C-STORE sub-operations of a C-GET, into the archive."""

    def __init__(self, hub: Hub, calling_ae: str) -> None:
        self.hub = hub
        self.calling_ae = calling_ae
        self.counts: Counter[str] = Counter()

    def on_store(self, event: evt.Event) -> int:
        path = event.dataset_path
        data: bytes | Path = (
            Path(path) if path is not None else event.encoded_dataset(include_meta=False)
        )
        inc = ingest.Incoming(
            data=data,
            sop_class_uid=str(event.context.abstract_syntax),
            sop_instance_uid=str(cast(C_STORE, event.request).AffectedSOPInstanceUID or ""),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=self.calling_ae,
        )
        try:
            stored = ingest.store_instance(self.hub, inc)
        except (Invalid, ingest.TooLarge):
            self.counts["failed"] += 1
            return 0xC000
        except OSError as exc:
            self.counts["failed"] += 1
            return 0xA700 if exc.errno == errno.ENOSPC else 0xC000
        self.counts["duplicate" if stored.duplicate else "stored"] += 1
        return 0x0000
