"""NUL characters from devices: PostgreSQL text cannot hold them; the hub still answers.

Each door must turn such input into a status of its own protocol and go on
serving the same association, on both databases.
"""

from __future__ import annotations

import asyncio

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from hub.context import Hub
from tests import study_factory as sf
from worklist.server import DicomDoor

MWL = ModalityWorklistInformationFind


def _is_answer(status: int) -> bool:
    """Success or warning, or a failure status: anything but a torn association."""
    return status in (0x0000, 0xB000) or status >= 0xA000


def test_store_with_nul_in_patient_id_gets_a_status(hub: Hub) -> None:
    ds = sf.instance(patient_id="P\x00555", patient_name="Smith^Re\x00x")
    with sf.scp(hub) as scp:
        [status] = sf.send(scp.port, [ds])
        assert _is_answer(status)
        [ok] = sf.send(scp.port, [sf.instance()])
        assert ok == 0x0000


def test_worklist_query_with_nul_gets_a_status(hub: Hub) -> None:
    door = DicomDoor(hub)
    port = asyncio.run(door.start())
    try:
        ae = AE(ae_title="DX_ROOM1")
        ae.add_requested_context(MWL)
        assoc = ae.associate("127.0.0.1", port, ae_title=hub.settings.dicom_ae)
        assert assoc.is_established
        query = Dataset()
        query.PatientID = "P\x00555"
        query.PatientName = ""
        statuses = [int(st.Status) for st, _ in assoc.send_c_find(query, MWL) if st]
        assert statuses and _is_answer(statuses[-1])
        # The same association still answers a plain query.
        query.PatientID = "P-1"
        statuses = [int(st.Status) for st, _ in assoc.send_c_find(query, MWL) if st]
        assert statuses[-1] == 0x0000
        assoc.release()
    finally:
        door.stop_blocking(grace=1)
