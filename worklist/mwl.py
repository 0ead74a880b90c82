"""Modality Worklist C-FIND: the service a device's "refresh worklist" button talks to.

The identifier becomes one SELECT over indexed order columns (``query``);
matching rows are streamed from a database cursor and each answer is sent as
soon as it is encoded (``items``), so a query matching thousands of items
neither waits for all of them nor holds them in memory. C-CANCEL stops the
stream between two answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from hub.context import Hub
from hub.models import Modality
from hub.services import modalities
from worklist import charset as charsets
from worklist import encoded, status
from worklist.encoded import EncodedIdentifier
from worklist.items import EncodingCache, build_item, encode_answer
from worklist.query import QueryError, Scope, answer_modality, parse, statement

log = logging.getLogger("worklist.mwl")

# A device's last_query_at is for "is it alive"; one write per this many
# seconds spares a disk flush on every query of a device that polls often.
TOUCH_INTERVAL_S = 5.0


class WorklistService:
    """MWL C-FIND SCP over the hub's orders (pluggable into ``DicomDoor``)."""

    def __init__(self, hub: Hub, cache: EncodingCache | None = None) -> None:
        self.hub = hub
        self.cache = cache if cache is not None else EncodingCache()
        self.dialect = hub.db.engine.dialect.name
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()
        # False when the installed pynetdicom does not pass the shim's checks
        # (encoded.install logs why): answers then go out as decoded data sets.
        self.send_encoded = encoded.install()

    def add_contexts(self, ae: AE) -> None:
        # Only little-endian syntaxes: those are what items.encode writes.
        ae.add_supported_context(
            ModalityWorklistInformationFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_FIND, self.on_find)]

    # -- per query ----------------------------------------------------------

    def on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        calling = str(event.assoc.requestor.ae_title).strip()
        started = time.perf_counter()
        if event.context.abstract_syntax != ModalityWorklistInformationFind:
            # C-FIND has one handler per AE; another model must get its own service here.
            yield (
                status.failure(
                    status.SOP_CLASS_NOT_SUPPORTED,
                    "only Modality Worklist queries are answered",
                    calling_ae=calling,
                ),
                None,
            )
            return
        aliases = self.hub.mappings.modality_aliases
        breeds = self.hub.mappings.breeds
        try:
            identifier = event.identifier
            query = parse(identifier, self.dialect, aliases)
            asked = charsets.of_query(identifier.get("SpecificCharacterSet"))
        except QueryError as exc:
            yield status.failure(exc.status, exc.comment, calling_ae=calling), None
            return
        except Exception as exc:  # an identifier pydicom cannot even decode
            yield (
                status.failure(
                    status.CANNOT_UNDERSTAND,
                    f"identifier cannot be decoded: {exc}",
                    calling_ae=calling,
                ),
                None,
            )
            return
        if not query.spec:
            yield (
                status.failure(
                    status.DOES_NOT_MATCH_SOP_CLASS,
                    "identifier requests no keys",
                    calling_ae=calling,
                ),
                None,
            )
            return

        settings = self.hub.settings
        implicit = event.context.transfer_syntax == ImplicitVRLittleEndian
        sent = 0
        try:
            with self.hub.db.read_session() as session:
                device = modalities.get(session, calling)
                charset = charsets.normalise(device.character_set if device else None)
                scope = _scope_of(device)
                stmt = statement(
                    query,
                    now=self.hub.orders.now(),
                    max_age_days=settings.worklist_max_age_days,
                    scope=scope,
                    limit=settings.worklist_max_results,
                    aliases=aliases,
                )
                if device is not None:
                    self._touch(calling)
                rows = session.execute(stmt.execution_options(yield_per=256))
                for row in rows:
                    if event.is_cancelled:
                        log.info("worklist query cancelled", extra={"calling_ae": calling})
                        yield status.CANCEL, None
                        return
                    modality = answer_modality(query, row.modality, aliases)
                    key = (row.id, row.version, asked, charset, implicit, query.spec, modality)
                    data = self.cache.get(key)
                    if data is None:
                        breed = breeds.resolve(row.breed, row.species_code)
                        item = build_item(row, modality, breed)
                        data = encode_answer(item, query.spec, asked, charset, implicit)
                        self.cache.put(key, data)
                    sent += 1
                    answer = EncodedIdentifier(data, implicit)
                    yield status.PENDING, answer if self.send_encoded else answer.decoded()
        except Exception:
            log.exception("worklist query failed", extra={"calling_ae": calling})
            yield (
                status.failure(
                    status.CANNOT_UNDERSTAND, "the worklist could not be read", calling_ae=calling
                ),
                None,
            )
            return
        log.info(
            "worklist query",
            extra={
                "calling_ae": calling,
                "matches": sent,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    def _touch(self, ae_title: str) -> None:
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(ae_title)
            if last is not None and now - last < TOUCH_INTERVAL_S:
                return
            self._touched[ae_title] = now
        # A write (and on SQLite a disk flush) the answer need not wait for.
        threading.Thread(
            target=self._write_touch, args=(ae_title,), name="mwl-touch", daemon=True
        ).start()

    def _write_touch(self, ae_title: str) -> None:
        try:
            with self.hub.db.session() as s:
                modalities.touch(s, ae_title, "query")
        except Exception:  # bookkeeping must never fail a query
            log.exception("could not note the device's query", extra={"calling_ae": ae_title})


def _scope_of(device: Modality | None) -> Scope | None:
    if device is None:
        return None
    return Scope(
        station=device.ae_title if device.scope_station else None,
        modality=device.modality if device.scope_modality else None,
        site=device.site if device.scope_site else None,
        date_window_days=device.date_window_days,
    )
