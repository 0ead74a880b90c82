"""Asking the upstream worklist: one C-FIND (Modality Worklist Information Model FIND)
as SCU, with the return keys a veterinary modality would ask for.

Either the whole list comes back, or ``PollFailed`` says why not (refused or
aborted association, timeout, a failure or cancel status, more items than
``max_items``): a partial list must never look like items gone from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from adapters.upstream_mwl.config import STEP_KEYS, Upstream
from worklist.send import no_delay

log = logging.getLogger("adapters.upstream_mwl")

PENDING = (0xFF00, 0xFF01)
# Return keys at the item's top level (PS3.4 K.6.1.2, plus the veterinary module).
TOP_RETURN = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "MedicalAlerts",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "PatientSexNeutered",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedurePriority",
    "ReasonForTheRequestedProcedure",
    "PlacerOrderNumberImagingServiceRequest",
    "ImagingServiceRequestComments",
)
TOP_SEQUENCES = (
    "PatientSpeciesCodeSequence",
    "PatientBreedCodeSequence",
    "RequestedProcedureCodeSequence",
)
STEP_RETURN = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation",
)


class PollFailed(Exception):
    """The upstream's list could not be read in full; nothing may change."""


def identifier(up: Upstream, today: date, extra: Iterable[str] = ()) -> Dataset:
    """The C-FIND identifier: the source's matching keys, every return key empty.

    ``extra``: keywords the source's field mapping reads (PatientComments...).
    """
    query = up.query_values(today)
    ds, step = Dataset(), Dataset()
    for keyword in (*TOP_RETURN, *extra):
        target = step if keyword in STEP_KEYS or keyword in STEP_RETURN else ds
        setattr(target, keyword, "")
    for keyword in TOP_SEQUENCES:
        setattr(ds, keyword, Sequence([]))
    for keyword in STEP_RETURN:
        setattr(step, keyword, "")
    step.ScheduledProtocolCodeSequence = Sequence([])
    for keyword, value in query.items():
        setattr(step if keyword in STEP_KEYS else ds, keyword, value)
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def find(up: Upstream, today: date) -> list[Dataset]:
    """Every item the upstream answers, or ``PollFailed``."""
    extra = [e.keyword for e in up.fields.values()]
    query = identifier(up, today, extra)
    ae = AE(ae_title=up.calling_ae_title)
    ae.add_requested_context(ModalityWorklistInformationFind)
    for attr in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, attr, up.timeout_s)
    where = f"{up.ae_title} at {up.host}:{up.port}"
    try:
        assoc = ae.associate(
            up.host, up.port, ae_title=up.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)]
        )
    except (OSError, ValueError) as exc:
        raise PollFailed(f"cannot reach {where}: {exc}") from None
    try:
        if assoc.is_rejected:
            raise PollFailed(f"{where} rejected the association (are the AE titles right?)")
        if not assoc.is_established:
            raise PollFailed(
                f"cannot reach {where}: no association (connection refused, aborted, "
                f"or no answer within {up.timeout_s:g} s)"
            )
        items: list[Dataset] = []
        for status, answer in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status is None or "Status" not in status:
                raise PollFailed(f"{where} sent no C-FIND response within {up.timeout_s:g} s")
            code = int(status.Status)
            if code in PENDING:
                if answer is None:
                    raise PollFailed(f"{where} sent a pending response without an item")
                if "SpecificCharacterSet" not in answer:
                    answer.SpecificCharacterSet = up.character_set
                items.append(answer)
                if len(items) > up.max_items:
                    assoc.abort()
                    raise PollFailed(
                        f"{where} has more than max_items={up.max_items} items; "
                        "narrow the query or raise max_items"
                    )
                continue
            if code != 0x0000:
                comment = status.get("ErrorComment", "")
                raise PollFailed(
                    f"{where} answered C-FIND with status 0x{code:04X}"
                    + (f" ({comment})" if comment else "")
                )
            return items
        raise PollFailed(f"{where} ended the C-FIND without a final status")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
