"""HL7 acknowledgements: MSA-1 AA/AE/AR, MSA-2 = the message's MSH-10, ERR naming the fault.

The ACK is written with the standard encoding characters and in the
character set the message came in (MSH-18 echoed), so "Müller" in an error
text survives the trip back. Its layout follows the sender's version
(MSH-12), since strict parsers of older versions refuse later fields: v2.3
has a two-component MSH-9 (``ACK^O01``); v2.3 to v2.4 have ERR-1 alone (the
ELD ``segment^sequence^field^code&text&table``); v2.5 and later get ERR-2
(location), ERR-3 (code), ERR-4 (severity) and ERR-8 (text). An accepted
message with a warning (e.g. no species) says it in MSA-3, and from v2.5 on
also in an ERR of severity W.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime

from adapters.hl7.parse import CHARSETS, Encoding, escape

# HL7 table 0357 (message error condition codes) used by the hub.
ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
_STD = Encoding()
_ids = itertools.count(1)
_BOOT = format(int(time.time()) % 36**5, "x")


@dataclass(frozen=True)
class Hl7Error:
    """Why a message was not accepted: ERR-2 location, ERR-3 code, text for ERR-8/MSA-3."""

    code: int
    message: str
    location: str = ""  # ERL: SEG^seq^field^rep^comp, or "" when no field is to blame
    severity: str = "E"


@dataclass(frozen=True)
class Addressing:
    """The parts of the received MSH an ACK is built from."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset: str = ""


def control_id() -> str:
    return f"VH{_BOOT}{next(_ids):08d}"


def build(
    code: str, to: Addressing, error: Hl7Error | None = None, warning: Hl7Error | None = None
) -> str:
    """The ACK as text (segments ended by CR); ``warning``: for an accepted message."""
    e = escape
    now = datetime.now().strftime("%Y%m%d%H%M%S")
    version = to.version or "2.5"
    msh = [
        "MSH",
        "^~\\&",
        e(to.receiving_application or "VETHUB"),
        e(to.receiving_facility),
        e(to.sending_application),
        e(to.sending_facility),
        now,
        "",
        _message_type(to.trigger, version),
        control_id(),
        e(to.processing_id or "P"),
        e(version),
    ]
    charset = to.charset if to.charset.upper() in CHARSETS else ""
    if charset:
        msh += ["", "", "", "", "", e(charset)]
    segs = ["|".join(msh)]
    said = error or warning
    msa = ["MSA", code, e(to.control_id)]
    if said is not None:
        msa.append(e(_clip(said.message, 80)))
    segs.append("|".join(msa))
    if error is not None:
        segs.append(_err(error, version))
    elif warning is not None and not _before_25(version):
        segs.append(_err(warning, version))
    return "\r".join(segs) + "\r"


def _before_25(version: str) -> bool:
    """v2.1 to v2.4: the ERR segment has ERR-1 (ELD) only."""
    return version.startswith(("2.1", "2.2", "2.3", "2.4"))


def _message_type(trigger: str, version: str) -> str:
    """MSH-9: ``ACK^O01^ACK`` from v2.3.1 on; v2.3 has no structure component (CM_MSG)."""
    if not trigger:
        return "ACK"
    if version.startswith(("2.1", "2.2")) or version in ("2.3", "2.3.0"):
        return f"ACK^{escape(trigger)}"
    return f"ACK^{escape(trigger)}^ACK"


def _err(error: Hl7Error, version: str) -> str:
    text = ERROR_TEXT.get(error.code, "Error")
    code = f"{error.code}^{escape(text)}^HL70357"
    loc = error.location  # already in ERL form (^-separated, values not escaped)
    if _before_25(version):
        # ERR-1 (ELD): segment^sequence^field^code&text&table, the pre-2.5 form, alone
        seg, seq, fld = [*loc.split("^"), "", "", ""][:3]
        eld = f"{seg}^{seq}^{fld}^{error.code}&{escape(text)}&HL70357"
        return "|".join(["ERR", eld])
    return "|".join(["ERR", "", loc, code, error.severity, "", "", "", escape(error.message)])


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def encode(ack: str, charset: str) -> bytes:
    """ACK text -> bytes in the message's character set (UTF-8 when unknown)."""
    codec = CHARSETS.get(charset.strip().upper(), "utf-8")
    return ack.encode(codec, errors="replace")
