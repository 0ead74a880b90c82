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
from typing import Any

import pynetdicom.service_class as _service_class
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from hub.context import Hub
from hub.services import modalities
from worklist import charset as charsets
from worklist.items import EncodingCache, build_item, encode
from worklist.query import STATUS_UNABLE, QueryError, Scope, parse, statement

log = logging.getLogger("worklist.mwl")

PENDING = 0xFF00
CANCELLED = 0xFE00
# A device's last_query_at is for "is it alive"; one write per this many
# seconds spares a disk flush on every query of a device that polls often.
TOUCH_INTERVAL_S = 5.0


class EncodedIdentifier(Dataset):
    """An answer already encoded by ``items.encode``; pynetdicom sends its bytes as they are."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_vethub_data", data)
        object.__setattr__(self, "_vethub_implicit", implicit)


def _install_fast_encode() -> None:
    """Let pynetdicom's C-FIND SCP send pre-encoded answers without pydicom re-encoding them.

    pynetdicom encodes each yielded identifier with ``dsutils.encode``; the
    wrapper short-cuts only ``EncodedIdentifier`` (whose encoding matches the
    context's transfer syntax) and passes every other data set through.
    """
    original = _service_class.encode
    if getattr(original, "_vethub_fast", False):
        return

    def fast_encode(
        ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if (
            isinstance(ds, EncodedIdentifier)
            and is_little_endian
            and not deflated
            and ds._vethub_implicit == is_implicit_vr
        ):
            return ds._vethub_data  # type: ignore[no-any-return]
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    fast_encode._vethub_fast = True  # type: ignore[attr-defined]
    _service_class.encode = fast_encode


def failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


class WorklistService:
    """MWL C-FIND SCP over the hub's orders (pluggable into ``DicomDoor``)."""

    def __init__(self, hub: Hub, cache: EncodingCache | None = None) -> None:
        self.hub = hub
        self.cache = cache if cache is not None else EncodingCache()
        self.dialect = hub.db.engine.dialect.name
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()
        _install_fast_encode()

    def add_contexts(self, ae: AE) -> None:
        # Only little-endian syntaxes: those are what items.encode writes.
        ae.add_supported_context(
            ModalityWorklistInformationFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_FIND, self.on_find)]

    # -- per query ----------------------------------------------------------

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        calling = str(event.assoc.requestor.ae_title).strip()
        started = time.perf_counter()
        if event.context.abstract_syntax != ModalityWorklistInformationFind:
            # C-FIND has one handler per AE; another model must get its own service here.
            yield failure(0x0122, "only Modality Worklist queries are answered"), None
            return
        try:
            query = parse(event.identifier, self.dialect)
        except QueryError as exc:
            log.warning(
                "worklist query refused",
                extra={
                    "calling_ae": calling,
                    "status": f"0x{exc.status:04X}",
                    "reason": exc.comment,
                },
            )
            yield failure(exc.status, exc.comment), None
            return
        except Exception as exc:  # an identifier pydicom cannot even decode
            log.warning(
                "worklist identifier undecodable", extra={"calling_ae": calling, "error": str(exc)}
            )
            yield failure(STATUS_UNABLE, f"identifier cannot be decoded: {exc}"), None
            return
        if not query.spec:
            yield failure(0xA900, "identifier requests no keys"), None
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
                )
                if device is not None:
                    self._touch(calling)
                rows = session.execute(stmt.execution_options(yield_per=256))
                for row in rows:
                    if event.is_cancelled:
                        log.info("worklist query cancelled", extra={"calling_ae": calling})
                        yield CANCELLED, None
                        return
                    key = (row.id, row.version, charset, implicit, query.spec)
                    data = self.cache.get(key)
                    if data is None:
                        data = encode(build_item(row), query.spec, charset, implicit)
                        self.cache.put(key, data)
                    sent += 1
                    yield PENDING, EncodedIdentifier(data, implicit)
        except Exception:
            log.exception("worklist query failed", extra={"calling_ae": calling})
            yield failure(STATUS_UNABLE, "the worklist could not be read"), None
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


def _scope_of(device: Any) -> Scope | None:
    if device is None:
        return None
    return Scope(
        station=device.ae_title if device.scope_station else None,
        modality=device.modality if device.scope_modality else None,
        site=device.site if device.scope_site else None,
        date_window_days=device.date_window_days,
    )
