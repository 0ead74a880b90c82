"""Storage SCP: C-STORE requests become ``hub.archive.ingest.store_instance`` calls.

pynetdicom receives each data set in chunks into a file
(``_config.STORE_RECV_CHUNKED_DATASET``), so a 2 GB instance costs disk, not
RAM; the archive checks that file's bytes as the device sent them (no decode,
no recompression) and copies them into place. The device gets its answer only
after the instance is written and indexed. Domain errors map to C-STORE
statuses here, once.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt, register_uid
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from hub.archive import files, ingest
from hub.errors import Invalid
from worklist import status

if TYPE_CHECKING:
    from hub.context import Hub

log = logging.getLogger("worklist.storage")

# Every storage SOP class pynetdicom knows (PS3.4 Annex B: images, RT, ECG and
# other waveforms, segmentations, SRs including X-Ray Radiation Dose SR,
# ophthalmic photography, encapsulated PDF, video, ...), as DCMTK storescp
# takes them. An acceptor is not bound by the 128-context limit: that bounds
# what one A-ASSOCIATE-RQ proposes, and the requestor picks its own subset.
# Older ultrasound devices still send the retired classes, which pynetdicom
# does not know (PS3.4 B.5: 1.2.840.10008.5.1.4.1.1.3 and .6): without being
# registered as storage (``_as_storage``) their contexts would be
# accepted and every C-STORE on them aborted.
RETIRED_US = ("1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.6")
STORAGE_SOP_CLASSES: tuple[str, ...] = (
    *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
    *RETIRED_US,
)

# Every transfer syntax pydicom knows: uncompressed (big endian too), deflated,
# JPEG, JPEG-LS, JPEG 2000 (Part 2 too), HTJ2K, JPIP HTJ2K Referenced, RLE,
# MPEG-2/4 and HEVC video. Of several proposed in one context pynetdicom takes
# the requestor's first. Left out: the SMPTE ST 2110 syntaxes (real-time
# streams, DICOM-RTV, never a C-STORE) and JPIP HTJ2K Referenced Deflate,
# whose deflated data set pydicom reads as if it were not (garbage to every
# reader after the door).
NOT_STORED = frozenset(
    (
        "1.2.840.10008.1.2.7.1",
        "1.2.840.10008.1.2.7.2",
        "1.2.840.10008.1.2.7.3",
        "1.2.840.10008.1.2.4.205",
    )
)
TRANSFER_SYNTAXES: list[str] = [
    str(ts) for ts in uid.AllTransferSyntaxes if str(ts) not in NOT_STORED
]


def accepted_sop_classes(refused: list[str], extra: list[str] | tuple[()] = ()) -> list[str]:
    """The storage classes the door takes: all known and ``VETHUB_DICOM_EXTRA_SOP_CLASSES``,
    less ``VETHUB_DICOM_REFUSED_SOP_CLASSES``."""
    out = set(refused)
    return [c for c in dict.fromkeys((*STORAGE_SOP_CLASSES, *extra)) if c not in out]


def _as_storage(classes: list[str]) -> list[str]:
    """``classes`` less those pynetdicom serves otherwise (an extra class that is
    MWL's, say); the ones it does not know registered with it as storage: it
    picks a request's service by SOP class, and has none for an unknown one."""
    out = []
    for uid_ in classes:
        service = uid_to_service_class(uid_)
        if service is ServiceClass:
            register_uid(uid_, "Storage_" + uid_.replace(".", "_"), StorageServiceClass)
            service = StorageServiceClass
        if service is StorageServiceClass:
            out.append(uid_)
    return out


def accepted_transfer_syntaxes(refused: list[str]) -> list[str]:
    """All known syntaxes, less ``VETHUB_DICOM_REFUSED_TRANSFER_SYNTAXES``."""
    out = set(refused)
    return [t for t in TRANSFER_SYNTAXES if t not in out]


class StorageService:
    """The Storage SCP part of the hub's DICOM door."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # Temp files of writes a crash interrupted (never acknowledged, never indexed)
        # are removed beside the door, not before it opens: the sweep reads every
        # folder of the archive, minutes at a million instances.
        threading.Thread(target=self._sweep, name="sweep-temporaries", daemon=True).start()

    def _sweep(self) -> None:
        try:
            swept = files.sweep_temporaries(self.hub.settings.data_dir)
        except OSError:
            log.exception("could not sweep unfinished temp files")
            return
        if swept:
            log.info("removed unfinished temp files", extra={"count": swept})

    def add_contexts(self, ae: AE) -> None:
        s = self.hub.settings
        syntaxes = accepted_transfer_syntaxes(s.dicom_refused_transfer_syntaxes)
        classes = accepted_sop_classes(s.dicom_refused_sop_classes, s.dicom_extra_sop_classes)
        if syntaxes:
            for abstract in _as_storage(classes):
                ae.add_supported_context(abstract, syntaxes)
        # Process-wide, and set here because this is where the door takes C-STORE:
        # every data set is received into a temp file instead of memory.
        _config.STORE_RECV_CHUNKED_DATASET = True

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_STORE, self.on_store)]

    def on_store(self, event: evt.Event) -> Dataset | int:
        req = cast(C_STORE, event.request)
        calling = (event.assoc.requestor.ae_title or "").strip()
        incoming = ingest.Incoming(
            data=_received(event),
            sop_class_uid=str(event.context.abstract_syntax),
            sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=calling,
        )
        where = {"calling_ae": calling, "sop_instance_uid": incoming.sop_instance_uid}
        try:
            ingest.store_instance(self.hub, incoming)
        except ingest.TooLarge as exc:
            # 0xA700 "out of resources", not 0xC000: the data set may be valid,
            # it is this hub's memory bound (VETHUB_DICOM_MAX_INFLATED_MB) that
            # refuses it, and the device should not take the image for garbage.
            return status.failure(status.OUT_OF_RESOURCES, str(exc), **where)
        except ingest.Unreadable as exc:
            return status.failure(status.CANNOT_UNDERSTAND, str(exc), **where)
        except Invalid as exc:
            return status.failure(status.DOES_NOT_MATCH_SOP_CLASS, str(exc), **where)
        except OSError as exc:
            what = "disk full" if exc.errno == errno.ENOSPC else f"storage error: {exc}"
            log.error("could not write instance", extra={"detail": what})
            return status.failure(status.OUT_OF_RESOURCES, what, **where)
        except Exception:
            log.exception("could not store instance", extra={"calling_ae": calling})
            return status.failure(
                status.PROCESSING_FAILURE, "internal error; see the hub's log", **where
            )
        return status.SUCCESS


def _received(event: evt.Event) -> bytes | Path:
    """The file pynetdicom received the data set into; its bytes if chunked
    receiving was off when the request came (the path is then None)."""
    path = event.dataset_path
    if path is not None:
        return Path(path)
    return event.encoded_dataset(include_meta=False)
