"""The ``vethub`` command line as an operator runs it: a real process, a real database."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path

from hub.db import Database, head_revision
from hub.services import events
from tests.harness import run_cli


def vethub(data_dir: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(data_dir, *args, db_url=db_url)


def test_commands_refuse_a_database_without_schema_and_db_upgrade_makes_it(
    tmp_path: Path,
) -> None:
    refused = vethub(tmp_path, "keys", "list")  # no database file: none is made
    assert refused.returncode == 2
    assert f"no hub database at {tmp_path / 'vethub.db'}" in refused.stderr
    assert not (tmp_path / "vethub.db").exists()
    (tmp_path / "vethub.db").touch()  # a database without the hub's tables
    refused = vethub(tmp_path, "keys", "list")
    assert refused.returncode == 2
    assert "no vethub schema yet: run `vethub db upgrade`" in refused.stderr
    current = vethub(tmp_path, "db", "current")
    assert current.returncode == 1
    assert json.loads(current.stdout)["revision"] is None

    upgraded = vethub(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout) | {"database": None} == {
        "database": None,
        "from": None,
        "to": head_revision(),
    }
    assert vethub(tmp_path, "db", "current").returncode == 0
    assert vethub(tmp_path, "keys", "list").returncode == 0


def test_keys_made_and_revoked_on_the_command_line_are_audited(db_url: str, tmp_path: Path) -> None:
    assert vethub(tmp_path, "db", "upgrade", db_url=db_url).returncode == 0
    made = vethub(
        tmp_path, "keys", "create", "--name", "pims", "--role", "integration", db_url=db_url
    )
    assert made.returncode == 0, made.stderr
    key_id = json.loads(made.stdout)["id"]
    assert vethub(tmp_path, "keys", "revoke", str(key_id), db_url=db_url).returncode == 0

    db = Database(db_url)
    try:
        with db.read_session() as s:
            trail, _ = events.audit_trail(s, target_id=str(key_id))
            mine = [(e.action, e.actor) for e in trail if e.target_type == "key"]
    finally:
        db.dispose()
    # newest first; a PostgreSQL database shared by the session may hold older rows
    assert [action for action, _ in mine[:2]] == ["key.revoke", "key.create"]
    assert {actor for _, actor in mine[:2]} == {f"cli:{getpass.getuser()}"}


def test_unusable_tls_files_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "vethub.db").touch()  # a database file, so the TLS files are what fails
    done = run_cli(
        tmp_path,
        "keys",
        "list",
        VETHUB_TLS_CERT=str(tmp_path / "missing.pem"),
        VETHUB_TLS_KEY=str(tmp_path / "missing.key"),
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "missing.pem" in done.stderr
