"""DICOM status replies (PS3.7 C) built one way for every service class the door runs."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

log = logging.getLogger("vethub.dicom")

SUCCESS = 0x0000
# C-FIND answers that are not the end (PS3.4 C.4.1.1.4)
PENDING = 0xFF00
CANCEL = 0xFE00
# C-STORE / C-FIND (PS3.4 B.2.3, C.4.1.1.4, K.4.1.1.4)
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0xC001
# N-CREATE / N-SET (PS3.7 C.4)
INVALID_ATTRIBUTE_VALUE = 0x0106
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_OBJECT_INSTANCE = 0x0112
DUPLICATE_INSTANCE = 0x0111
PROCESSING_FAILURE_N = 0x0110
MISSING_ATTRIBUTE = 0x0120
CANNOT_DECODE = 0x0107


def failure(code: int, comment: str, **context: object) -> Dataset:
    """A status data set with an ErrorComment a device can show; logged as a refusal."""
    log.warning(
        "DICOM request refused",
        extra={"status": f"0x{code:04X}", "detail": comment, **context},
    )
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO holds 64 characters
    return status
