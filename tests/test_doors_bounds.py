"""Issue #9 red-team findings: limits and rules the doors must keep across restarts."""

from __future__ import annotations

import logging
import resource
import tracemalloc
import zlib
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from sqlalchemy import func, select
from sqlmodel import col

from hub.archive import dicomfile
from hub.context import Hub
from hub.models import ApiKey, Instance
from hub.serve import bootstrap_admin
from hub.services import keys
from tests import study_factory as sf
from tests.harness import ADMIN_KEY
from tests.worklist_scu import running_door

MB = 1 << 20


def _bomb(inflated_mb: int) -> bytes:
    """A raw deflate stream of ``inflated_mb`` MB of zeros (about 1 KB per MB),
    built in steps so the test itself never holds the inflated bytes."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MB)
    parts = [squeeze.compress(block) for _ in range(inflated_mb)]
    return b"".join([*parts, squeeze.flush()])


def _deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


def test_the_bounded_inflater_stops_at_its_bound() -> None:
    bomb = _bomb(256)
    assert len(bomb) < 300 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(dicomfile.TooLarge):
            dicomfile.inflate(bomb, 4 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the bound, zlib's step and a 1 MB input slice: never the 256 MB inside
    assert peak < 4 * MB * 1.15 + 2 * MB, peak


def test_the_bounded_inflater_takes_what_fits_exactly() -> None:
    data = bytes(range(256)) * 4096  # 1 MB
    stream = _deflate(data)
    assert dicomfile.inflate(stream, MB) == data
    assert dicomfile.inflate(b"xx" + stream, MB, start=2) == data
    with pytest.raises(dicomfile.TooLarge):
        dicomfile.inflate(stream, MB - 1)
    with pytest.raises(dicomfile.Incomplete):
        dicomfile.inflate(b"\xff" * 64, MB)


def test_a_deflate_bomb_is_refused_out_of_resources(hub: Hub, tmp_path: Path) -> None:
    """Issue #9: 306 KB sent took the process from 188 MB to 776 MB."""
    hub.settings.dicom_max_inflated_mb = 8
    uid = generate_uid()
    bomb = tmp_path / "bomb.dcm"
    meta = dicomfile.file_meta(sf.DX, uid, str(DeflatedExplicitVRLittleEndian))
    bomb.write_bytes(meta + _bomb(512))
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(sf.DX, DeflatedExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    with running_door(hub) as port:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
        assoc = ae.associate("127.0.0.1", port, ae_title=hub.settings.dicom_ae)
        assert assoc.is_established
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            answer = assoc.send_c_store(bomb)
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert sf.send(port, [sf.instance()]) == [0]  # the listener is unharmed
    assert int(answer.Status) == 0xA700
    assert "inflates beyond 8 MB" in str(answer.ErrorComment)
    assert grown_mb < 128, grown_mb  # 512 MB inside, the bound is 8 MB
    with hub.db.read_session() as s:
        assert (
            s.scalar(select(func.count(Instance.id)).where(Instance.sop_instance_uid == uid)) == 0
        )
    stored = [p.name for p in (hub.settings.data_dir / "studies").rglob("*") if p.is_file()]
    assert f"{uid}.dcm" not in stored


def _bootstrap_row(hub: Hub) -> ApiKey:
    with hub.db.read_session() as s:
        row = s.scalars(select(ApiKey).where(col(ApiKey.key_hash) == keys.hash_key(ADMIN_KEY)))
        found = row.one()
        s.expunge(found)
        return found


def test_a_revoked_bootstrap_admin_key_stays_revoked_across_restarts(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    assert bootstrap_admin(hub) is None  # first start: the key exists (made by the fixture)
    key_id = _bootstrap_row(hub).id
    assert key_id is not None
    with hub.db.session() as s:
        keys.revoke(s, key_id, actor="test:admin")
    caplog.set_level(logging.WARNING, logger="hub.keys")
    restarted = Hub.open(hub.settings)  # a second start on the same database
    try:
        assert bootstrap_admin(restarted) is None
        assert bootstrap_admin(restarted) is None
    finally:
        restarted.close()
    assert _bootstrap_row(hub).revoked_at is not None
    with hub.db.read_session() as s:
        assert keys.authenticate(s, ADMIN_KEY) is None
    assert any("stays revoked" in r.getMessage() for r in caplog.records)


def test_a_new_bootstrap_value_creates_nothing_while_an_admin_key_exists(hub: Hub) -> None:
    hub.settings.bootstrap_admin_key = "vh_another-bootstrap-value-0123456789"
    assert bootstrap_admin(hub) is None
    with hub.db.read_session() as s:
        assert keys.authenticate(s, "vh_another-bootstrap-value-0123456789") is None
        assert keys.authenticate(s, ADMIN_KEY) is not None
