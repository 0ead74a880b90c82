"""Studies through a whole ``vethub serve`` process: DCMTK storescu, and SIGKILL mid-transfer."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select

from hub.db import Database
from hub.models import Instance
from tests import study_factory as sf
from tests.factories import REX
from tests.harness import ServedHub, empty_tables, start_hub


def test_storescu_into_served_hub(served_hub: ServedHub, tmp_path: Path) -> None:
    with served_hub.api() as api:
        order = api.post("/api/v1/orders", json=REX).json()
        folder = tmp_path / "send"
        series = generate_uid()
        for _ in range(3):
            sf.save(
                sf.instance(
                    accession=order["accession_number"],
                    patient_name="SMITH^REX",
                    series_uid=series,
                    study_uid=order["study_instance_uid"],
                ),
                folder,
            )
        out = subprocess.run(
            ["storescu", "-aet", "DX_ROOM1", "-aec", served_hub.ae_title, "+sd",
             "127.0.0.1", str(served_hub.dicom), str(folder)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        body = api.get(f"/api/v1/studies/{order['study_instance_uid']}").json()
        assert body["order_id"] == order["id"] and body["match_method"] == "accession"
        assert body["instance_count"] == 3
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"


def test_sigkill_while_receiving_loses_nothing_acknowledged(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("postgresql"):
        db = Database(db_url)
        empty_tables(db)
        db.dispose()
    data_dir = tmp_path / "served"
    hub = start_hub(data_dir, db_url)
    study, series = generate_uid(), generate_uid()
    datasets = [sf.instance(study_uid=study, series_uid=series, rows=256) for _ in range(400)]
    acked: list[str] = []

    def sender() -> None:
        ae = sf.scu()
        assoc = ae.associate("127.0.0.1", hub.dicom, ae_title=hub.ae_title)
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except Exception:
                return
            if "Status" not in status:  # connection gone: no answer
                return
            if status.Status == 0:
                acked.append(ds.SOPInstanceUID)
        assoc.release()

    t = threading.Thread(target=sender)
    t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    hub.process.send_signal(signal.SIGKILL)
    hub.process.wait()
    t.join(60)
    assert 20 <= len(acked) < len(datasets), "the kill must land mid-transfer"

    again = start_hub(data_dir, db_url)
    try:
        db = Database(db_url)
        with db.read_session() as s:
            rows = {i.sop_instance_uid: i for i in s.scalars(select(Instance))}
        db.dispose()
        by_uid = {d.SOPInstanceUID: d for d in datasets}
        # Crash leftovers are swept beside the door, soon after the start.
        swept_by = time.monotonic() + 10
        while list((data_dir / "studies").rglob(".in-*")) and time.monotonic() < swept_by:
            time.sleep(0.05)
        assert not list((data_dir / "studies").rglob(".in-*"))
        for uid in acked:  # every acknowledged instance survived, whole
            assert uid in rows
        for uid, row in rows.items():  # and nothing indexed is partial
            stored = pydicom.dcmread(data_dir / row.path)
            assert stored.PixelData == by_uid[uid].PixelData
            assert row.size == (data_dir / row.path).stat().st_size
        with again.api() as api:
            assert api.get(f"/api/v1/studies/{study}").json()["instance_count"] == len(rows)
        # The restarted hub takes the rest, resends included.
        assert sf.send(again.dicom, datasets[: len(acked) + 5], ae_title="DX_ROOM1") == [0] * (
            len(acked) + 5
        )
    finally:
        again.stop()


def test_mpps_through_served_hub(served_hub: ServedHub) -> None:
    with served_hub.api() as api:
        order = api.post("/api/v1/orders", json=REX).json()
        assoc = sf.scu().associate("127.0.0.1", served_hub.dicom, ae_title=served_hub.ae_title)
        assert assoc.is_established
        uid = generate_uid()
        assert assoc.send_n_create(sf.mpps_create(), sf.MPPS, uid)[0].Status == 0
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
        assert assoc.send_n_set(sf.mpps_set("COMPLETED"), sf.MPPS, uid)[0].Status == 0
        assert assoc.send_n_set(sf.mpps_set("COMPLETED"), sf.MPPS, uid)[0].Status == 0x0110
        assoc.release()
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "completed"
