"""MPPS SCP: N-CREATE / N-SET requests become ``hub.services.mpps`` calls.

Status codes (PS3.4 F.7, PS3.7 C): 0x0106 invalid attribute value (N-CREATE
not IN PROGRESS), 0x0111 duplicate SOP instance, 0x0112 no such SOP instance,
0x0110 processing failure (comment starting "A710", the Error ID of PS3.4
F.7.2.2) for an N-SET after the step was completed or discontinued.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from hub.errors import Invalid, NotFound
from hub.services import mpps

log = logging.getLogger("worklist.mpps")

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]


class MppsService:
    """The MPPS part of the hub's DICOM door."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def add_contexts(self, ae: AE) -> None:
        ae.add_supported_context(MPPS_SOP_CLASS, TRANSFER_SYNTAXES)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_N_CREATE, self.on_create), (evt.EVT_N_SET, self.on_set)]

    def on_create(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        req = event.request
        if str(req.AffectedSOPClassUID) != MPPS_SOP_CLASS:
            return _status(0x0118, "only MPPS is supported by N-CREATE"), None
        try:
            ds = event.attribute_list
        except Exception as exc:
            return _status(0x0107, f"attribute list cannot be decoded: {exc}"), None
        uid = str(req.AffectedSOPInstanceUID or generate_uid())
        links = [
            mpps.StepLink(
                accession_number=str(item.get("AccessionNumber", "") or "").strip(),
                study_instance_uid=str(item.get("StudyInstanceUID", "") or "").strip(),
            )
            for item in ds.get("ScheduledStepAttributesSequence", []) or []
        ]
        status = str(ds.get("PerformedProcedureStepStatus", "") or "").strip()
        try:
            with self.hub.db.session() as s:
                mpps.create(s, uid, status, links, _json(ds), _calling(event))
        except mpps.DuplicateStep as exc:
            return _status(0x0111, str(exc)), None
        except Invalid as exc:
            return _status(0x0106, str(exc)), None
        except Exception:
            log.exception("MPPS N-CREATE failed")
            return _status(0x0110, "internal error; see the hub's log"), None
        reply = Dataset()
        if req.AffectedSOPInstanceUID is None:
            reply.AffectedSOPInstanceUID = uid
        reply.PerformedProcedureStepStatus = status
        return 0x0000, reply

    def on_set(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        req = event.request
        try:
            mods = event.modification_list
        except Exception as exc:
            return _status(0x0107, f"modification list cannot be decoded: {exc}"), None
        uid = str(req.RequestedSOPInstanceUID or "")
        raw_status = mods.get("PerformedProcedureStepStatus")
        status = str(raw_status).strip() if raw_status else None
        try:
            with self.hub.db.session() as s:
                mpps.update(s, uid, status, _json(mods), _calling(event))
        except NotFound as exc:
            return _status(0x0112, str(exc)), None
        except mpps.FinalStep as exc:
            return _status(0x0110, f"A710: {exc}"), None
        except Invalid as exc:
            return _status(0x0106, str(exc)), None
        except Exception:
            log.exception("MPPS N-SET failed")
            return _status(0x0110, "internal error; see the hub's log"), None
        return 0x0000, mods


def _calling(event: evt.Event) -> str:
    return (event.assoc.requestor.ae_title or "").strip()


def _json(ds: Dataset) -> dict[str, Any]:
    try:
        return ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda e: "")
    except Exception:
        log.warning("MPPS attributes kept without values that do not convert to JSON")
        return {}


def _status(code: int, comment: str) -> Dataset:
    log.warning("MPPS request refused", extra={"status": f"0x{code:04X}", "detail": comment})
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status
