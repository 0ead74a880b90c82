"""Query/Retrieve SCP: the hub as an archive a workstation asks for priors.

C-FIND (Study Root and Patient Root) searches the index through
``hub.services.study_search``: no file is opened, results are paged from
SQL and sent as they come, C-CANCEL stops between two. C-MOVE opens an
association of its own to the move destination, a node registered under
``/api/v1/modalities`` with host and port (TLS when registered so); its
presentation contexts follow the instances (``worklist.send``), so each goes
in its stored syntax when the destination takes it and decompressed when it
does not. C-GET sends on the requestor's own association, in the storage
contexts it proposed with the SCP role. Every retrieve is audited (``move``
or ``get``, per study, with the destination and the instance count).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from hub.context import Hub
from hub.services import events, modalities, study_search
from hub.tls import client_context
from worklist import charset as charsets
from worklist import encoded, send, status
from worklist.encoded import EncodedIdentifier, FindAnswers
from worklist.qr_query import AnswerEncoder, QueryError, answer, parse, plan
from worklist.storage import STORAGE_SOP_CLASSES

log = logging.getLogger("worklist.qr")

FIND_MODELS = (
    str(StudyRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelFind),
)
MOVE_MODELS = (
    str(StudyRootQueryRetrieveInformationModelMove),
    str(PatientRootQueryRetrieveInformationModelMove),
)
GET_MODELS = (
    str(StudyRootQueryRetrieveInformationModelGet),
    str(PatientRootQueryRetrieveInformationModelGet),
)
# PS3.7 C.4.2.1.4 (Number of ... Sub-operations is US): one C-MOVE/C-GET moves at most this.
MAX_SUBOPERATIONS = 65535
# Answers per C-FIND at most (a "*" on a big archive is not a use).
MAX_ANSWERS = 10_000
FIND_PAGE = 2_000


class QueryRetrieveService:
    """Study Root and Patient Root FIND, MOVE and GET (pluggable into ``DicomDoor``).

    ``find_models``: the door routes C-FIND on these models here (and the
    Modality Worklist's to its own service).
    """

    find_models = FIND_MODELS

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # Answers go out as bytes written by ``qr_query.AnswerEncoder`` when
        # pynetdicom takes them (``worklist.encoded``); else as data sets.
        self.send_encoded = encoded.install()

    def add_contexts(self, ae: AE) -> None:
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
            ae.add_supported_context(model, syntaxes)
        # C-GET: the requestor proposes storage contexts with itself as SCP;
        # the hub accepts that role for every storage class it keeps.
        for cx in ae.supported_contexts:
            if str(cx.abstract_syntax) in STORAGE_SOP_CLASSES:
                cx.scu_role = True
                cx.scp_role = True

    def handlers(self) -> list[tuple]:
        return [
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
        ]

    # -- C-FIND ---------------------------------------------------------------

    def on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        calling = str(event.assoc.requestor.ae_title).strip()
        started = time.perf_counter()
        try:
            identifier = event.identifier
            asked = parse(identifier, str(event.context.abstract_syntax))
            charset = charsets.of_query(identifier.get("SpecificCharacterSet"))
        except QueryError as exc:
            yield status.failure(exc.status, exc.comment, calling_ae=calling), None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            comment = f"identifier cannot be decoded: {exc}"
            yield status.failure(status.CANNOT_UNDERSTAND, comment, calling_ae=calling), None
            return
        sent = 0
        implicit = event.context.transfer_syntax == ImplicitVRLittleEndian
        encoder = None  # the identifier's keys read on the first match, as the answers were
        # Pending answers written in batches, past pynetdicom's per-answer work
        # (worklist.encoded.FindAnswers); None: each yielded to pynetdicom.
        batch = FindAnswers.open(event) if self.send_encoded else None
        try:
            for attrs in self._matches(asked):
                if event.is_cancelled:
                    if batch is not None:
                        batch.drop()
                    yield status.CANCEL, None
                    return
                ae = self.hub.settings.dicom_ae
                encoder = encoder or AnswerEncoder(plan(identifier), asked.level, ae, implicit)
                data = encoder(attrs, charset)
                if data is not None and batch is not None:
                    if not batch.add(data):
                        event.assoc.abort()  # the socket failed mid-answer: nothing to save
                        return
                elif data is None:
                    if batch is not None:
                        # pynetdicom sends from here on, after what was written.
                        if not batch.flush():
                            event.assoc.abort()
                            return
                        batch = None
                    yield status.PENDING, answer(identifier, attrs, asked.level, charset, ae)
                else:
                    found = EncodedIdentifier(data, implicit)
                    yield status.PENDING, found if self.send_encoded else found.decoded()
                sent += 1
            if batch is not None and not batch.flush():
                event.assoc.abort()
                return
        except Exception:
            log.exception("Q/R query failed", extra={"calling_ae": calling})
            comment = "the archive could not be searched"
            yield status.failure(status.PROCESSING_FAILURE, comment, calling_ae=calling), None
            return
        log.info(
            "Q/R query",
            extra={
                "calling_ae": calling,
                "level": asked.level,
                "matches": sent,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        yield status.SUCCESS, None

    def _matches(self, asked: Any) -> Iterator[dict[str, Any]]:
        if asked.level == "PATIENT":
            with self.hub.db.read_session() as s:
                yield from study_search.patients(s, asked.query)
            return
        # Pages of FIND_PAGE: each page sorts the matches again (OFFSET), so few and large.
        q = replace(asked.query, limit=FIND_PAGE)
        offset = 0
        while offset < MAX_ANSWERS:
            with self.hub.db.read_session() as s:
                found = study_search.search(s, _page(q, offset))
            yield from found.rows
            if not found.more:
                return
            offset += q.limit

    # -- C-MOVE / C-GET ---------------------------------------------------------

    def _files(self, event: evt.Event) -> tuple[list[send.Outgoing], list[str]]:
        asked = parse(event.identifier, str(event.context.abstract_syntax), retrieve=True)
        with self.hub.db.read_session() as s:
            found = study_search.stored_files(s, asked.query)
        data_dir = self.hub.settings.data_dir
        files = [
            send.Outgoing(
                data_dir / f.path, f.sop_class_uid, f.sop_instance_uid, f.transfer_syntax_uid
            )
            for f in found
        ]
        return files, list(dict.fromkeys(f.study_instance_uid for f in found))

    def _audit(self, action: str, calling: str, studies: list[str], detail: dict) -> None:
        try:
            with self.hub.db.session() as s:
                for uid in studies:
                    events.audit(s, f"dicom:{calling}", action, "study", uid, detail)
        except Exception:  # the audit row must not fail the retrieve itself
            log.exception("could not audit a retrieve", extra={"calling_ae": calling})

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        calling = str(event.assoc.requestor.ae_title).strip()
        destination = str(event.move_destination or "").strip()
        with self.hub.db.read_session() as s:
            node = modalities.get(s, destination) if destination else None
            where = (node.host, node.port, node.tls) if node is not None else None
        if where is None or not where[0] or not where[1]:
            log.warning(
                "C-MOVE to an unknown destination",
                extra={"calling_ae": calling, "destination": destination},
            )
            yield None, None  # pynetdicom answers 0xA801
            return
        fault: QueryError | None = None
        try:
            files, studies = self._files(event)
        except QueryError as exc:
            files, studies, fault = [], [], exc
        accepted: dict[str, set[str]] = {}
        sub: list[Any] = []  # the association pynetdicom opens to the destination

        def on_accepted(ev: evt.Event) -> None:
            accepted.update(send.accepted_syntaxes(ev.assoc.accepted_contexts))
            sub.append(ev.assoc)

        host, port, tls = where
        kwargs: dict[str, Any] = {
            "contexts": send.contexts_for(files) or send.contexts_for(_placeholder()),
            "evt_handlers": [(evt.EVT_ACCEPTED, on_accepted), (evt.EVT_CONN_OPEN, send.no_delay)],
        }
        if tls:
            kwargs["tls_args"] = (client_context(self.hub.settings), host)
        yield host, port, kwargs
        if fault is not None:
            yield 1
            yield status.failure(fault.status, fault.comment, calling_ae=calling), None
            return
        if len(files) > MAX_SUBOPERATIONS:
            files = files[:MAX_SUBOPERATIONS]
        yield len(files)
        self._audit("move", calling, studies, {"destination": destination, "instances": len(files)})

        def link_up() -> bool:
            return not sub or send.link_up(sub[0])

        yield from self._suboperations(event, files, accepted, calling, link_up)
        if sub and sub[0].is_established and not link_up():
            sub[0].abort()  # so pynetdicom does not try to release a dead connection

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            files, studies = self._files(event)
        except QueryError as exc:
            yield 1
            yield status.failure(exc.status, exc.comment, calling_ae=calling), None
            return
        files = files[:MAX_SUBOPERATIONS]
        yield len(files)
        self._audit("get", calling, studies, {"destination": calling, "instances": len(files)})
        contexts = [cx for cx in event.assoc.accepted_contexts if cx.as_scu]

        def link_up() -> bool:
            return bool(event.assoc.is_established)

        accepted = send.accepted_syntaxes(contexts)
        yield from self._suboperations(event, files, accepted, calling, link_up)

    def _suboperations(
        self,
        event: evt.Event,
        files: list[send.Outgoing],
        accepted: dict[str, set[str]],
        calling: str,
        link_up: Callable[[], bool],
    ) -> Iterator[Any]:
        """One (status, data set) per instance, as pynetdicom's Q/R SCP takes them.

        C-CANCEL: stop before the next instance; pynetdicom answers 0xFE00
        with the counts (the unsent ones as remaining) and the UIDs that failed.
        A store association that dropped: every instance left is a failed
        sub-operation under its UID, without reading its file, so the final
        answer is 0xB000 (or 0xA702 if none went) with the counts, at once.
        """
        dropped = False
        for n, item in enumerate(files):
            if event.is_cancelled:
                log.info(
                    "retrieve cancelled", extra={"calling_ae": calling, "left": len(files) - n}
                )
                yield status.CANCEL, None
                return
            if not dropped and not link_up():
                dropped = True
                log.warning(
                    "retrieve destination dropped the association",
                    extra={"calling_ae": calling, "left": len(files) - n},
                )
            if dropped:
                yield status.PENDING, _uid_only(item, "the association dropped")
                continue
            try:
                data = send.payload(item, accepted)
                ds = data if isinstance(data, Dataset) else _read(data)
            except (send.Unsendable, OSError) as exc:
                log.warning(
                    "instance not retrievable",
                    extra={"calling_ae": calling, "sop_instance_uid": item.sop_instance_uid},
                )
                # pynetdicom counts a data set it cannot send as a failed sub-operation.
                yield status.PENDING, _uid_only(item, str(exc))
                continue
            yield status.PENDING, ds


def _read(path: Path) -> Dataset:
    return dcmread(path)


def _uid_only(item: send.Outgoing, reason: str) -> Dataset:
    """A stand-in pynetdicom cannot send (no transfer syntax), so it counts a
    failed sub-operation under this instance's UID."""
    ds = Dataset()
    ds.SOPClassUID = item.sop_class_uid
    ds.SOPInstanceUID = item.sop_instance_uid
    return ds


def _page(q: study_search.Query, offset: int) -> study_search.Query:
    return replace(q, offset=offset)


def _placeholder() -> list[send.Outgoing]:
    """Something to propose when nothing matched (an association needs one context)."""
    return [
        send.Outgoing(
            Path("/nonexistent"),
            STORAGE_SOP_CLASSES[0],
            "1.2.3",
            str(ExplicitVRLittleEndian),
        )
    ]
