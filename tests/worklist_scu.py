"""The device side of the worklist tests: placing orders, building identifiers, asking."""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from hub.context import Hub
from hub.schemas import OrderIn
from hub.services import orders
from tests.factories import REX, rex
from worklist.server import DicomDoor

MWL = ModalityWorklistInformationFind

# Rex with his own numbers and an owner whose name needs more than ASCII.
BASE_ORDER: dict[str, Any] = rex(
    placer_order_number="ORD-1",
    accession_number="A1",
    patient={**REX["patient"], "id": "P-1"},
    owner={**REX["owner"], "id": "C-1", "last_name": "Müller"},
)


def order(n: int | str, **changes: Any) -> dict[str, Any]:
    """A copy of BASE_ORDER with its own numbers; nested dicts in ``changes`` merge."""
    body = copy.deepcopy(BASE_ORDER)
    body["placer_order_number"] = f"ORD-{n}"
    body["accession_number"] = f"A{n}"
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    return body


def place(hub: Hub, bodies: list[dict[str, Any]]) -> list[int]:
    ids = []
    with hub.db.session() as s:
        for body in bodies:
            o, _ = orders.place(s, OrderIn.model_validate(body), hub.orders)
            ids.append(o.id)
    return ids


def identifier(
    *,
    sps: dict[str, Any] | None = None,
    charset: str | None = "ISO_IR 192",
    **keys: Any,
) -> Dataset:
    """An MWL identifier; ``sps`` (if given) becomes the one SPS sequence item."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    for key, value in keys.items():
        setattr(ds, key, value)
    if sps is not None:
        item = Dataset()
        for key, value in sps.items():
            setattr(item, key, value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def find(
    port: int, ds: Dataset, *, aet: str = "TESTSCU", aec: str = "VETHUB"
) -> tuple[list[Dataset], int, Dataset | None]:
    """(answers, final status, final status data set) of one C-FIND on a new association."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title=aec)
    assert assoc.is_established, "association refused"
    answers: list[Dataset] = []
    final, final_ds = -1, None
    try:
        for status, answer in assoc.send_c_find(ds, MWL):
            if status is None:
                break
            if status.Status in (0xFF00, 0xFF01):
                answers.append(answer)
            else:
                final, final_ds = status.Status, status
    finally:
        assoc.release()
    return answers, final, final_ds


def accessions(answers: list[Dataset]) -> set[str]:
    return {str(a.AccessionNumber) for a in answers}


@contextmanager
def running_door(hub: Hub, **kwargs: Any) -> Iterator[int]:
    """An in-process DICOM door on a free port."""
    door = DicomDoor(hub, **kwargs)
    port = asyncio.run(door.start())
    try:
        yield port
    finally:
        door.stop_blocking(grace=2)


def findscu(
    port: int, keys: list[str], out_dir: Path, *, aet: str = "FINDSCU", aec: str = "VETHUB"
) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    """DCMTK findscu -W; the answers it extracted (-X) read back with pydicom."""
    exe = shutil.which("findscu")
    assert exe, "DCMTK findscu is required (apt-get install dcmtk)"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-W", "-X", "-od", str(out_dir), "-aet", aet, "-aec", aec, "-to", "20"]
    for key in keys:
        cmd += ["-k", key]
    cmd += ["127.0.0.1", str(port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    answers = [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]
    return proc, answers
