"""Storage SCP: C-STORE requests become ``hub.services.studies.store_instance`` calls.

The data set is taken as the bytes the device sent (no decode, no
recompression) and answered only after the core has written and indexed it.
Domain errors map to C-STORE statuses here, once.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from hub.errors import Invalid
from hub.services import archive, studies

log = logging.getLogger("worklist.storage")

# PS3.4 Annex B storage classes a veterinary clinic's devices send.
STORAGE_SOP_CLASSES = {
    "ComputedRadiographyImageStorage": "1.2.840.10008.5.1.4.1.1.1",
    "DigitalXRayImageStorageForPresentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "DigitalXRayImageStorageForProcessing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "DigitalIntraOralXRayImageStorageForPresentation": "1.2.840.10008.5.1.4.1.1.1.3",
    "DigitalIntraOralXRayImageStorageForProcessing": "1.2.840.10008.5.1.4.1.1.1.3.1",
    "CTImageStorage": "1.2.840.10008.5.1.4.1.1.2",
    "EnhancedCTImageStorage": "1.2.840.10008.5.1.4.1.1.2.1",
    "UltrasoundMultiFrameImageStorageRetired": "1.2.840.10008.5.1.4.1.1.3",
    "UltrasoundMultiFrameImageStorage": "1.2.840.10008.5.1.4.1.1.3.1",
    "MRImageStorage": "1.2.840.10008.5.1.4.1.1.4",
    "EnhancedMRImageStorage": "1.2.840.10008.5.1.4.1.1.4.1",
    "UltrasoundImageStorageRetired": "1.2.840.10008.5.1.4.1.1.6",
    "UltrasoundImageStorage": "1.2.840.10008.5.1.4.1.1.6.1",
    "SecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7",
    "MultiFrameSingleBitSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.1",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.2",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.3",
    "MultiFrameTrueColorSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.4",
    "XRayAngiographicImageStorage": "1.2.840.10008.5.1.4.1.1.12.1",
    "XRayRadiofluoroscopicImageStorage": "1.2.840.10008.5.1.4.1.1.12.2",
    "NuclearMedicineImageStorage": "1.2.840.10008.5.1.4.1.1.20",
    "VLEndoscopicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.1",
    "VideoEndoscopicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.1.1",
    "VLMicroscopicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.2",
    "VLPhotographicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.4",
    "VideoPhotographicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.4.1",
    "BasicTextSRStorage": "1.2.840.10008.5.1.4.1.1.88.11",
    "EnhancedSRStorage": "1.2.840.10008.5.1.4.1.1.88.22",
    "ComprehensiveSRStorage": "1.2.840.10008.5.1.4.1.1.88.33",
    "EncapsulatedPDFStorage": "1.2.840.10008.5.1.4.1.1.104.1",
    "GrayscaleSoftcopyPresentationStateStorage": "1.2.840.10008.5.1.4.1.1.11.1",
    "KeyObjectSelectionDocumentStorage": "1.2.840.10008.5.1.4.1.1.88.59",
}

TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML (US clips, video endoscopy)
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible
]

# DCMTK's largest send PDU; pynetdicom's own default is 16382.
MAX_PDU_RECEIVE = 131072
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0xC001


class StorageService:
    """The Storage SCP part of the hub's DICOM door."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        # Temp files of writes a crash interrupted (never acknowledged, never indexed).
        swept = archive.sweep_temporaries(hub.settings.data_dir)
        if swept:
            log.info("removed unfinished temp files", extra={"count": swept})

    def add_contexts(self, ae: AE) -> None:
        # Let senders use big P-DATA PDUs: at pynetdicom's default (16 kB) a 0.5 MB
        # CT slice is 32 PDUs through its state machine, and that dominates C-STORE.
        ae.maximum_pdu_size = max(ae.maximum_pdu_size or 0, MAX_PDU_RECEIVE)
        for uid in STORAGE_SOP_CLASSES.values():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_STORE, self.on_store)]

    def on_store(self, event: evt.Event) -> Dataset | int:
        req = event.request
        calling = (event.assoc.requestor.ae_title or "").strip()
        incoming = studies.Incoming(
            raw=req.DataSet.getvalue(),  # type: ignore[union-attr]
            sop_class_uid=str(event.context.abstract_syntax),
            sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=calling,
        )
        try:
            studies.store_instance(self.hub, incoming)
        except studies.Unreadable as exc:
            return _refuse(CANNOT_UNDERSTAND, str(exc), incoming)
        except Invalid as exc:
            return _refuse(DOES_NOT_MATCH_SOP_CLASS, str(exc), incoming)
        except OSError as exc:
            what = "disk full" if exc.errno == errno.ENOSPC else f"storage error: {exc}"
            log.error("could not write instance", extra={"detail": what})
            return _refuse(OUT_OF_RESOURCES, what, incoming)
        except Exception:
            log.exception("could not store instance", extra={"calling_ae": calling})
            return _refuse(PROCESSING_FAILURE, "internal error; see the hub's log", incoming)
        return SUCCESS


def _refuse(code: int, comment: str, incoming: studies.Incoming) -> Dataset:
    log.warning(
        "C-STORE refused",
        extra={
            "status": f"0x{code:04X}",
            "detail": comment,
            "calling_ae": incoming.calling_ae,
            "sop_instance_uid": incoming.sop_instance_uid,
        },
    )
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO
    return status
