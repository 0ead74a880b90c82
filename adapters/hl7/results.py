"""HL7 v2.5 messages back to the placer, rendered from a delivery document.

- ``oru``: ORU^R01 with the accession and placer/filler numbers and the
  study link twice: an OBX of type RP (reference pointer, for systems that
  open links) and an OBX of type TX (for systems that only show text), plus
  the Study Instance UID (DCM 110180).
- ``orm_status``: ORM^O01 with ORC-1 ``SC`` (status changed) and ORC-5 the
  order's new status (SC, IP, CM, CA, DC).

The document is the snapshot stored with the delivery (docs/webhooks.md), so
a retry renders the same message, with the same MSH-10.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hl7apy.core import Message

from adapters.hl7.parse import escape

VERSION = "2.5"
SENDING_APPLICATION = "VETHUB"
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


def _header(msg: Message, doc: dict[str, Any], receiver: str, code: str) -> None:
    msh = msg.msh
    msh.msh_3 = SENDING_APPLICATION
    msh.msh_5 = _t(receiver)
    msh.msh_7 = _ts(doc.get("occurred_at")) or datetime.now().strftime("%Y%m%d%H%M%S")
    msh.msh_9 = code
    msh.msh_10 = control_id(doc["delivery_id"])
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    msh.msh_15 = "AL"
    msh.msh_16 = "NE"
    msh.msh_18 = "UNICODE UTF-8"


def _pid(pid: Any, order: dict[str, Any]) -> None:
    patient, owner = order["patient"], order["owner"]
    pid.pid_1 = "1"
    pid.pid_3 = _comp(patient["id"], "", "", "", "PI")
    pid.pid_5 = _comp(owner.get("last_name") or owner.get("organization") or "", patient["name"])
    if patient.get("birth_date"):
        pid.pid_7 = patient["birth_date"].replace("-", "")
    if patient.get("sex"):
        pid.pid_8 = SEX.get(patient["sex"], "U")


def _orc(orc: Any, control: str, doc: dict[str, Any], source: str) -> None:
    order = doc["order"]
    orc.orc_1 = control
    orc.orc_2 = _comp(order["placer_order_number"], source)
    orc.orc_3 = _comp(order["filler_order_number"], SENDING_APPLICATION)
    orc.orc_5 = ORC5.get(order["status"], "")
    orc.orc_9 = _ts(doc.get("occurred_at"))


def _obr(obr: Any, doc: dict[str, Any], source: str, result_status: str = "") -> None:
    order, study = doc["order"], doc.get("study") or {}
    obr.obr_1 = "1"
    obr.obr_2 = _comp(order["placer_order_number"], source)
    obr.obr_3 = _comp(order["filler_order_number"], SENDING_APPLICATION)
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


def oru(doc: dict[str, Any], receiver: str) -> str:
    """ORU^R01 carrying the study link; the document must have a study."""
    study = doc["study"]
    final = doc["order"]["status"] == "completed"
    status = "F" if final else "P"
    msg = Message("ORU_R01", version=VERSION)
    _header(msg, doc, receiver, "ORU^R01^ORU_R01")
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    _pid(result.add_group("ORU_R01_PATIENT").pid, doc["order"])
    obs = result.add_group("ORU_R01_ORDER_OBSERVATION")
    _orc(obs.orc, "RE", doc, doc["source"])
    _obr(obs.obr, doc, doc["source"], status)
    url = doc["viewer_url"]
    counts = f"{study['series_count']} series, {study['instance_count']} images"
    rows = [
        (
            "RP",
            _comp("STUDYLINK", "Study viewer link", "L"),
            _comp(url, SENDING_APPLICATION, "TEXT", "HTML"),
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
        obx.obx_5 = value
        obx.obx_11 = status
    return msg.to_er7()


def orm_status(doc: dict[str, Any], receiver: str) -> str:
    """ORM^O01, ORC-1 SC: the order's status changed to ORC-5."""
    msg = Message("ORM_O01", version=VERSION)
    _header(msg, doc, receiver, "ORM^O01^ORM_O01")
    patient = msg.add_group("ORM_O01_PATIENT")
    _pid(patient.pid, doc["order"])
    order = msg.add_group("ORM_O01_ORDER")
    _orc(order.orc, "SC", doc, doc["source"])
    detail = order.add_group("ORM_O01_ORDER_DETAIL")
    _obr(detail.add_group("ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP").obr, doc, doc["source"])
    return msg.to_er7()
