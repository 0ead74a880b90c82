"""``vethub backup`` while orders and images arrive, then ``vethub restore`` into a new
data dir and database: every order placed before the backup began, and every file
the restored database references, come back byte for byte."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub import backup
from hub.archive import files
from hub.cli import main
from hub.config import Settings
from hub.context import Hub
from hub.models import Instance, Order
from hub.serve import build_app
from tests.factories import rex
from tests.harness import ADMIN_KEY, make_settings, pg_admin, pg_database_url
from tests.study_factory import instance, store


@pytest.fixture
def target_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as the hub's, to restore into."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'vethub.db'}"
        return
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed (Debian: postgresql-client)")
    name = f"vethub_r_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_database_url(name)
    with pg_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _use(monkeypatch: pytest.MonkeyPatch, data_dir: Path, db_url: str) -> None:
    monkeypatch.setenv("VETHUB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("VETHUB_DATABASE_URL", db_url)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    """``vethub ARGV`` in-process: exit status, its JSON summary, what it said on stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else {}, err


def test_backup_while_busy_then_restore(
    hub: Hub,
    db_url: str,
    target_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = TestClient(build_app(hub), headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    placed: list[str] = []
    stop = threading.Event()
    turns = threading.Semaphore(0)

    def busy() -> None:
        i = 0
        while not stop.is_set():
            number = f"B-{i}"
            body = rex(placer_order_number=number, accession_number=f"B{i}")
            assert client.post("/api/v1/orders", json=body).status_code == 201
            placed.append(number)
            store(hub, instance(accession=f"B{i}", rows=8 + i % 5))
            turns.release()
            i += 1

    writer = threading.Thread(target=busy)
    writer.start()
    try:
        for _ in range(3):
            assert turns.acquire(timeout=30)
        before = set(placed)  # committed before the backup began: must come back
        _use(monkeypatch, hub.settings.data_dir, db_url)
        code, done, _ = _run(capsys, "backup", "--to", str(tmp_path / "bk"))
        assert turns.acquire(timeout=30)  # and the hub kept working meanwhile
    finally:
        stop.set()
        writer.join()
    assert code == 0, done
    assert done["files"] >= 3 and done["missing"] == 0 and done["unsettled"] == 0
    manifest = backup.read_manifest(tmp_path / "bk")
    assert sum(f["size"] for f in manifest["files"]) == done["bytes"]

    restored = tmp_path / "restored"
    _use(monkeypatch, restored, target_url)
    code, out, _ = _run(capsys, "restore", "--from", str(tmp_path / "bk"))
    assert code == 0, out
    assert (out["files"], out["bytes"]) == (done["files"], done["bytes"])
    code, _, err = _run(capsys, "restore", "--from", str(tmp_path / "bk"))
    assert code == 2 and "--force" in err  # the restored hub is not overwritten

    again = Hub.open(Settings(data_dir=restored, database_url=target_url))  # schema current
    try:
        with again.db.read_session() as s:
            numbers = {o.placer_order_number for o in s.query(Order)}
            rows = [(i.path, i.size) for i in s.query(Instance)]
    finally:
        again.close()
    assert before <= numbers <= set(placed)
    assert len(rows) == done["files"]
    for path, _size in rows:
        kept = (restored / path).read_bytes()
        assert kept == (hub.settings.data_dir / path).read_bytes()


def test_file_rewritten_after_the_snapshot_takes_another_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'data' / 'vethub.db'}"
    hub = Hub.open(make_settings(tmp_path, db_url), upgrade=True)
    try:
        stored = [store(hub, instance(patient_name="Smith^Rex")) for _ in range(3)]
        with hub.db.read_session() as s:
            paths = [i.path for i in s.query(Instance)]
    finally:
        hub.close()
    assert len(paths) == len(stored)
    victim = tmp_path / "data" / paths[0]
    corrected = victim.read_bytes().replace(b"Smith^Rex", b"Smith^Max")
    real_snapshot = backup._sqlite_snapshot
    calls: list[int] = []

    def snapshot_then_correction(settings: Settings, to: Path) -> backup._Snapshot:
        snap = real_snapshot(settings, to)
        calls.append(1)
        if len(calls) == 1:  # a header correction lands just after the first snapshot
            files.write_atomic(victim, (corrected,))
        return snap

    monkeypatch.setattr(backup, "_sqlite_snapshot", snapshot_then_correction)
    _use(monkeypatch, tmp_path / "data", db_url)
    code, done, _ = _run(capsys, "backup", "--to", str(tmp_path / "bk"))
    assert code == 0
    assert (done["passes"], done["unsettled"], done["linked"], done["kept"]) == (2, 0, 3, 0)
    assert (tmp_path / "bk" / "data" / paths[0]).read_bytes() == corrected

    code, done, _ = _run(capsys, "backup", "--to", str(tmp_path / "bk"))  # again: incremental
    assert (code, done["kept"], done["linked"], done["passes"]) == (0, 3, 0, 1)
    code, done, _ = _run(capsys, "backup", "--to", str(tmp_path / "copy"), "--copy", "--checksums")
    assert (code, done["copied"], done["linked"]) == (0, 3, 0)
    assert all(len(f["sha256"]) == 64 for f in backup.read_manifest(tmp_path / "copy")["files"])

    (tmp_path / "copy" / backup.MANIFEST).unlink()  # as if the backup had been interrupted
    _use(monkeypatch, tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'elsewhere' / 'v.db'}")
    code, _, err = _run(capsys, "restore", "--from", str(tmp_path / "copy"))
    assert code == 2 and "not a finished vethub backup" in err
