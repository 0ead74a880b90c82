"""HL7 messages back to the placer, rendered from a delivery document, per source.

- ``oru``: ORU^R01 with the accession and placer/filler numbers and the
  study link twice: an OBX of type RP (reference pointer, for systems that
  open links) and an OBX of type TX (for systems that only show text), plus
  the Study Instance UID (DCM 110180).
- ``orm_status``: ORM^O01 with ORC-1 ``SC`` (status changed) and ORC-5 the
  order's new status (SC, IP, CM, CA, DC).

Each is written the way its source speaks (``Addressee``, from the source's
profile ``outbound``): HL7 version (2.3 to 2.5.1, default 2.5), PID-5
``Owner^Animal`` or the animal alone, PID-3 with its assigning authority,
MSH-3/4 the hub, MSH-5/6 the source's application and facility.

The document is the snapshot stored with the delivery (docs/webhooks.md), so
a retry renders the same message, with the same MSH-10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hl7apy.core import Message

from adapters.hl7.parse import escape
from adapters.hl7.profile import Outbound

VERSION = "2.5"


@dataclass(frozen=True)
class Addressee:
    """Who a result goes to and how it is written (see ``sender.addressee``)."""

    source: str
    outbound: Outbound = field(default_factory=Outbound)
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    assigning_authority: str = ""  # PID-3.4

    @property
    def version(self) -> str:
        return self.outbound.version or VERSION


def to(receiver: str | Addressee) -> Addressee:
    """A bare source name (older callers) is a v2.5 addressee with default layout."""
    if isinstance(receiver, Addressee):
        return receiver
    return Addressee(receiver, receiving_application=receiver)


ORC5 = {
    "scheduled": "SC",
    "in_progress": "IP",
    "completed": "CM",
    "cancelled": "CA",
    "discontinued": "DC",
}
SEX = {"male": "M", "female": "F", "unknown": "U"}


def control_id(delivery_id: str) -> str:
    """MSH-10 (at most 20 characters): stable across retries of one delivery."""
    return delivery_id.replace("-", "")[:20].upper()


def _t(value: Any) -> str:
    return escape(str(value)) if value not in (None, "") else ""


def _comp(*parts: Any) -> str:
    """Components of one field, each escaped; trailing empties dropped."""
    out = [_t(p) for p in parts]
    while out and not out[-1]:
        out.pop()
    return "^".join(out)


def _ts(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).strftime("%Y%m%d%H%M%S")
    except ValueError:
        return ""


def _header(msg: Message, doc: dict[str, Any], to: Addressee, code: str, trigger: str) -> None:
    msh = msg.msh
    out = to.outbound
    msh.msh_3 = _t(out.application)
    if out.facility:
        msh.msh_4 = _t(out.facility)
    msh.msh_5 = _t(to.receiving_application or to.source)
    if to.receiving_facility:
        msh.msh_6 = _t(to.receiving_facility)
    msh.msh_7 = _ts(doc.get("occurred_at")) or datetime.now().strftime("%Y%m%d%H%M%S")
    # v2.3 has no message structure component (CM_MSG); 2.3.1 on has MSG.3.
    msh.msh_9 = f"{code}^{trigger}" if to.version == "2.3" else f"{code}^{trigger}^{code}_{trigger}"
    msh.msh_10 = control_id(doc["delivery_id"])
    msh.msh_11 = "P"
    msh.msh_12 = to.version
    msh.msh_15 = "AL"
    msh.msh_16 = "NE"
    msh.msh_18 = "UNICODE UTF-8"


def _pid(pid: Any, order: dict[str, Any], to: Addressee) -> None:
    patient, owner = order["patient"], order["owner"]
    pid.pid_1 = "1"
    pid.pid_3 = _comp(patient["id"], "", "", to.assigning_authority or to.source, "PI")
    if to.outbound.patient_name == "animal":
        pid.pid_5 = _comp(patient["name"])
    else:
        owner_name = owner.get("last_name") or owner.get("organization") or ""
        pid.pid_5 = _comp(owner_name, patient["name"])
    if patient.get("birth_date"):
        pid.pid_7 = patient["birth_date"].replace("-", "")
    if patient.get("sex"):
        pid.pid_8 = SEX.get(patient["sex"], "U")


def _orc(orc: Any, control: str, doc: dict[str, Any], source: str, filler: str) -> None:
    order = doc["order"]
    orc.orc_1 = control
    orc.orc_2 = _comp(order["placer_order_number"], source)
    orc.orc_3 = _comp(order["filler_order_number"], filler)
    orc.orc_5 = ORC5.get(order["status"], "")
    if orc.version == "2.3":
        orc.orc_7 = "1"  # quantity/timing is required in v2.3: one
    orc.orc_9 = _ts(doc.get("occurred_at"))


def _obr(obr: Any, doc: dict[str, Any], source: str, filler: str, result_status: str = "") -> None:
    order, study = doc["order"], doc.get("study") or {}
    obr.obr_1 = "1"
    obr.obr_2 = _comp(order["placer_order_number"], source)
    obr.obr_3 = _comp(order["filler_order_number"], filler)
    proc = order["procedure"]
    obr.obr_4 = _comp(proc.get("code") or "", proc.get("description") or "", "L")
    if study.get("first_received_at"):
        obr.obr_7 = _ts(study["first_received_at"])
    obr.obr_18 = _t(order["accession_number"])
    if result_status:
        obr.obr_22 = _ts(doc.get("occurred_at"))
    modality = (study.get("modalities") or [order.get("modality")])[0]
    if modality:
        obr.obr_24 = _t(modality)
    if result_status:
        obr.obr_25 = result_status
    if obr.version == "2.3":
        obr.obr_27 = "1"  # quantity/timing is required in v2.3: one


def oru(doc: dict[str, Any], receiver: str | Addressee) -> str:
    """ORU^R01 carrying the study link; the document must have a study."""
    addressee = to(receiver)
    filler = addressee.outbound.application
    study = doc["study"]
    final = doc["order"]["status"] == "completed"
    status = "F" if final else "P"
    msg = Message("ORU_R01", version=addressee.version)
    _header(msg, doc, addressee, "ORU", "R01")
    # v2.3 calls the patient/result group RESPONSE
    top = "ORU_R01_RESPONSE" if addressee.version == "2.3" else "ORU_R01_PATIENT_RESULT"
    result = msg.add_group(top)
    _pid(result.add_group("ORU_R01_PATIENT").pid, doc["order"], addressee)
    obs = result.add_group("ORU_R01_ORDER_OBSERVATION")
    _orc(obs.orc, "RE", doc, doc["source"], filler)
    _obr(obs.obr, doc, doc["source"], filler, status)
    url = doc["viewer_url"]
    counts = f"{study['series_count']} series, {study['instance_count']} images"
    rows = [
        (
            "RP",
            _comp("STUDYLINK", "Study viewer link", "L"),
            _comp(url, filler, "TEXT", "HTML"),
        ),
        (
            "TX",
            _comp("STUDYLINKTEXT", "Study viewer link (text)", "L"),
            _t(f"Images ({counts}): {url}"),
        ),
        ("ST", _comp("110180", "Study Instance UID", "DCM"), _t(study["study_instance_uid"])),
    ]
    for n, (vtype, ident, value) in enumerate(rows, start=1):
        obx = obs.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(n)
        obx.obx_2 = vtype
        obx.obx_3 = ident
        if addressee.version in ("2.3", "2.3.1"):
            obx.obx_4 = str(n)  # the sub-ID is required there
        obx.obx_5 = value
        obx.obx_11 = status
    return msg.to_er7()


def orm_status(doc: dict[str, Any], receiver: str | Addressee) -> str:
    """ORM^O01, ORC-1 SC: the order's status changed to ORC-5."""
    addressee = to(receiver)
    filler = addressee.outbound.application
    msg = Message("ORM_O01", version=addressee.version)
    _header(msg, doc, addressee, "ORM", "O01")
    patient = msg.add_group("ORM_O01_PATIENT")
    _pid(patient.pid, doc["order"], addressee)
    order = msg.add_group("ORM_O01_ORDER")
    _orc(order.orc, "SC", doc, doc["source"], filler)
    detail = order.add_group("ORM_O01_ORDER_DETAIL")
    # the OBR/RQD/RQ1/RXO/ODS/ODT choice group was renamed in v2.5
    choice = "ORM_O01_CHOICE" if addressee.version < "2.5" else "ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP"
    _obr(detail.add_group(choice).obr, doc, doc["source"], filler)
    return msg.to_er7()
