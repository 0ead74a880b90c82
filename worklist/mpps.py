"""MPPS SCP: N-CREATE / N-SET requests become ``hub.services.mpps`` calls.

Status codes (PS3.4 F.7, PS3.7 C): 0x0106 invalid attribute value (N-CREATE
not IN PROGRESS), 0x0111 duplicate SOP instance, 0x0112 no such SOP instance,
0x0110 processing failure (comment starting "A710", the Error ID of PS3.4
F.7.2.2) for an N-SET after the step was completed or discontinued.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from hub.errors import Invalid, NotFound
from hub.services import mpps
from worklist import status

if TYPE_CHECKING:
    from hub.context import Hub

log = logging.getLogger("worklist.mpps")

MPPS_SOP_CLASS = ModalityPerformedProcedureStep
TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
# PS3.7 C: the SOP Class of the request is not one this SCP provides.
NO_SUCH_SOP_CLASS = 0x0118


class MppsService:
    """The MPPS part of the hub's DICOM door."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def add_contexts(self, ae: AE) -> None:
        ae.add_supported_context(MPPS_SOP_CLASS, TRANSFER_SYNTAXES)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_N_CREATE, self.on_create), (evt.EVT_N_SET, self.on_set)]

    def on_create(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        req = cast(N_CREATE, event.request)
        if str(req.AffectedSOPClassUID) != MPPS_SOP_CLASS:
            return _refuse(NO_SUCH_SOP_CLASS, "only MPPS is supported by N-CREATE"), None
        try:
            ds = event.attribute_list
        except Exception as exc:
            return _refuse(status.CANNOT_DECODE, f"attribute list cannot be decoded: {exc}"), None
        uid = str(req.AffectedSOPInstanceUID or generate_uid())
        links = [
            mpps.StepLink(
                accession_number=str(item.get("AccessionNumber", "") or "").strip(),
                study_instance_uid=str(item.get("StudyInstanceUID", "") or "").strip(),
            )
            for item in ds.get("ScheduledStepAttributesSequence", []) or []
        ]
        step_status = str(ds.get("PerformedProcedureStepStatus", "") or "").strip()
        try:
            with self.hub.db.session() as s:
                mpps.create(s, uid, step_status, links, _json(ds), _calling(event))
        except mpps.DuplicateStep as exc:
            return _refuse(status.DUPLICATE_INSTANCE, str(exc)), None
        except Invalid as exc:
            return _refuse(status.INVALID_ATTRIBUTE_VALUE, str(exc)), None
        except Exception:
            log.exception("MPPS N-CREATE failed")
            return _refuse(status.PROCESSING_FAILURE_N, "internal error; see the hub's log"), None
        reply = Dataset()
        if req.AffectedSOPInstanceUID is None:
            reply.AffectedSOPInstanceUID = uid
        reply.PerformedProcedureStepStatus = step_status
        return status.SUCCESS, reply

    def on_set(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        req = cast(N_SET, event.request)
        try:
            mods = event.modification_list
        except Exception as exc:
            return _refuse(
                status.CANNOT_DECODE, f"modification list cannot be decoded: {exc}"
            ), None
        uid = str(req.RequestedSOPInstanceUID or "")
        raw_status = mods.get("PerformedProcedureStepStatus")
        step_status = str(raw_status).strip() if raw_status else None
        try:
            with self.hub.db.session() as s:
                mpps.update(s, uid, step_status, _json(mods), _calling(event))
        except NotFound as exc:
            return _refuse(status.NO_SUCH_OBJECT_INSTANCE, str(exc)), None
        except mpps.FinalStep as exc:
            return _refuse(status.PROCESSING_FAILURE_N, f"A710: {exc}"), None
        except Invalid as exc:
            return _refuse(status.INVALID_ATTRIBUTE_VALUE, str(exc)), None
        except Exception:
            log.exception("MPPS N-SET failed")
            return _refuse(status.PROCESSING_FAILURE_N, "internal error; see the hub's log"), None
        return status.SUCCESS, mods


def _calling(event: evt.Event) -> str:
    return (event.assoc.requestor.ae_title or "").strip()


def _json(ds: Dataset) -> dict[str, Any]:
    try:
        return ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda e: "")
    except Exception:
        log.warning("MPPS attributes kept without values that do not convert to JSON")
        return {}


def _refuse(code: int, comment: str) -> Dataset:
    return status.failure(code, comment, service="MPPS")
