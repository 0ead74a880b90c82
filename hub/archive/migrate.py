"""Migration from a live old PACS: C-FIND what it holds, retrieve what the hub lacks.

The hub is the SCU here. Studies come from a Study Root C-FIND (since a date,
if given); for each, the instance UIDs are listed level by level (series,
then images: the hierarchical queries every archive answers, DCMTK dcmqrscp
included), and a study whose instances are all stored already is skipped, so
a re-run resumes where the last one stopped.

The rest is retrieved study by study, by C-GET on the same association
(``retrieve="get"``, the default) or by C-MOVE to the hub's own AE title
(``"move"``; also when the old PACS refuses the C-GET context, as many do).
For C-MOVE the old PACS opens an association of its own to the hub's AE at
the host and port it was configured with, so the import listens there
(``listen_port``) while it runs. Either way each received instance goes
through the C-STORE path (``store_instance``: checked, matched,
deduplicated, durable) before the old PACS is told it arrived, and each
study's report line is the same.
"""

from __future__ import annotations

import errno
import logging
import threading
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
    StudyRootQueryRetrieveInformationModelMove,
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
FIND = StudyRootQueryRetrieveInformationModelFind
GET = StudyRootQueryRetrieveInformationModelGet
MOVE = StudyRootQueryRetrieveInformationModelMove
RETRIEVES = ("get", "move")
# PS3.4 C.4.2.1.5: the old PACS does not know the move destination.
_UNKNOWN_DESTINATION = 0xA801

log = logging.getLogger("hub.archive.migrate")

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
    retrieve: str = "get"  # how the studies came: "get" or "move"

    @property
    def failed(self) -> bool:
        return bool(self.outcomes["failed"] or self.outcomes["study_failed"])

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.outcomes.items()))


def run(
    hub: Hub,
    pacs: OldPacs,
    *,
    since: date | None,
    report: Report,
    retrieve: str = "get",
    listen_port: int | None = None,
) -> Summary:
    """Pull every study (since ``since``) the hub does not hold whole yet.

    ``retrieve``: "get", falling back to "move" when the old PACS refuses
    C-GET, or "move" (the import then listens on ``listen_port``, by default
    the hub's DICOM port, under the hub's AE title).
    """
    if retrieve not in RETRIEVES:
        raise Invalid.one("retrieve", f"must be one of {', '.join(RETRIEVES)}")
    assoc = _associate(hub, pacs)
    done = Summary(retrieve=retrieve)
    listener: Any = None
    try:
        if retrieve == "get" and not _accepted(assoc, GET):
            log.warning(
                "the old PACS refused C-GET; retrieving by C-MOVE",
                extra={"pacs": pacs.ae_title},
            )
            done.retrieve = "move"
        if done.retrieve == "move":
            if not _accepted(assoc, MOVE):
                raise HubError(f"{pacs.ae_title} accepts neither C-GET nor C-MOVE from the hub")
            listener = _listen(hub, assoc.receiver, listen_port)  # type: ignore[attr-defined]
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
            if done.retrieve == "move":
                got, error = _move(assoc, study_uid, hub.settings.dicom_ae)
            else:
                got, error = _get(assoc, study_uid), None
            done.outcomes.update({k: v for k, v in got.items() if k != "status"})
            ok = got["status"] == 0 and not got["failed"]
            done.outcomes["studies_retrieved" if ok else "study_failed"] += 1
            line = {"study_instance_uid": study_uid, "outcome": "retrieved" if ok else "failed"}
            report(line | dict(got) | ({"error": error} if error else {}))
    finally:
        if assoc.is_established:
            assoc.release()
        if listener is not None:
            listener.shutdown()
    return done


def _associate(hub: Hub, pacs: OldPacs) -> Association:
    ae = AE(ae_title=pacs.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for model in (FIND, GET, MOVE):
        ae.add_requested_context(model)
    roles: list[Any] = []
    for cx in StoragePresentationContexts[: 128 - 3]:
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


def _accepted(assoc: Association, model: str) -> bool:
    return any(str(cx.abstract_syntax) == model for cx in assoc.accepted_contexts)


def _listen(hub: Hub, receiver: _Receiver, port: int | None) -> Any:
    """A Storage SCP under the hub's AE title for the old PACS's C-MOVE sub-operations."""
    ae = AE(ae_title=hub.settings.dicom_ae)
    ae.require_called_aet = True
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for cx in StoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), _SYNTAXES)
    where = (hub.settings.dicom_host, hub.settings.dicom_port if port is None else port)
    try:
        return ae.start_server(
            where, block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.on_store)]
        )
    except OSError as exc:
        raise HubError(
            f"cannot listen on {where[0]}:{where[1]} for the old PACS's C-MOVE ({exc}); "
            "is vethub serve using that port? Stop it for the import, or give --listen-port "
            "a port the old PACS knows for the hub's AE title"
        ) from exc


def _find(assoc: Association, query: Dataset) -> Iterator[Dataset]:
    for status, found in assoc.send_c_find(query, FIND):
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
    for status, _ in assoc.send_c_get(q, GET):
        code = int(getattr(status, "Status", 0xC000))
        if code not in _PENDING:
            final = code
    got = Counter(receiver.counts)
    got["status"] = final
    got.setdefault("failed", 0)
    if final not in (0x0000, 0xB000) and not assoc.is_established:
        got["failed"] += 1  # the association dropped mid-study
    return got


def _move(assoc: Association, study_uid: str, hub_ae: str) -> tuple[Counter[str], str | None]:
    """C-MOVE one study to the hub's AE; the counts, and what went wrong, if anything."""
    receiver: _Receiver = assoc.receiver  # type: ignore[attr-defined]
    receiver.counts = Counter()
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study_uid
    final, failed_there = 0xC000, 0
    for status, _ in assoc.send_c_move(q, hub_ae, MOVE):
        code = int(getattr(status, "Status", 0xC000))
        if code not in _PENDING:
            final = code
            failed_there = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
    with receiver.lock:
        got = Counter(receiver.counts)
    got["status"] = final
    got.setdefault("failed", 0)
    error = None
    if final == _UNKNOWN_DESTINATION:
        error = (
            f"the old PACS does not know the move destination {hub_ae}: add the hub's AE "
            "title with its host and port (the import's --listen-port) to its destinations"
        )
    elif final not in (0x0000, 0xB000) or failed_there > got["failed"]:
        # sub-operations that failed on the old PACS's side never reached the hub
        got["failed"] = max(got["failed"], failed_there, 1)
        error = f"C-MOVE ended with status 0x{final:04X}, {failed_there} failed on the old PACS"
    return got, error


class _Receiver:
    """The C-STORE sub-operations of a C-GET, into the archive."""

    def __init__(self, hub: Hub, calling_ae: str) -> None:
        self.hub = hub
        self.calling_ae = calling_ae
        self.counts: Counter[str] = Counter()
        # C-MOVE sub-operations arrive on the listener's threads.
        self.lock = threading.Lock()

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
            self._count("failed")
            return 0xC000
        except OSError as exc:
            self._count("failed")
            return 0xA700 if exc.errno == errno.ENOSPC else 0xC000
        self._count("duplicate" if stored.duplicate else "stored")
        return 0x0000

    def _count(self, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1
