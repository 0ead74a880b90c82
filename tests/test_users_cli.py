"""``vethub users ...`` as the clinic's IT person runs it: a real process, a real database."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path

from sqlalchemy import select

from hub.db import Database
from hub.models import AuditEvent, User
from tests.harness import run_cli


def vethub(
    data_dir: Path, db_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return run_cli(data_dir, *args, db_url=db_url, stdin=stdin)


def upgrade(db_url: str) -> None:
    """The hub's schema, made in this process: `vethub db upgrade` as a command is
    tested in tests/test_cli.py, here it would only add a process start per test."""
    db = Database(db_url)
    try:
        db.upgrade()
    finally:
        db.dispose()


def _rows(db_url: str, username: str) -> tuple[User, list[AuditEvent]]:
    db = Database(db_url)
    try:
        with db.read_session() as s:
            user = s.scalars(select(User).where(User.username == username)).one()
            trail = s.scalars(
                select(AuditEvent)
                .where(AuditEvent.target_type == "user", AuditEvent.target_id == str(user.id))
                .order_by(AuditEvent.id)
            ).all()
            return user, list(trail)
    finally:
        db.dispose()


def test_users_are_created_listed_disabled_and_given_new_passwords(
    db_url: str, tmp_path: Path
) -> None:
    upgrade(db_url)
    name = f"anna{tmp_path.name[-6:]}".lower().replace("_", "")  # unique on a shared PostgreSQL
    made = vethub(
        tmp_path,
        db_url,
        *("users", "create", "--username", name, "--role", "vet", "--password-stdin"),
        stdin="a good long password\n",
    )
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert set(out) == {"id", "username", "role"}
    assert out["username"] == name and out["role"] == "vet"

    user, _ = _rows(db_url, name)
    assert user.password_hash.startswith("$argon2id$")
    assert "a good long password" not in user.password_hash

    listed = [
        json.loads(line)
        for line in vethub(tmp_path, db_url, "users", "list").stdout.split("\n")
        if line
    ]
    mine = [u for u in listed if u["username"] == name]
    assert mine and mine[0]["disabled"] is False and "password_hash" not in mine[0]

    short = vethub(
        tmp_path,
        db_url,
        *("users", "set-password", name, "--password-stdin"),
        stdin="short\n",
    )
    assert short.returncode == 2 and "password: must be at least 10 characters" in short.stderr
    changed = vethub(
        tmp_path,
        db_url,
        *("users", "set-password", name, "--password-stdin"),
        stdin="another long password\n",
    )
    assert changed.returncode == 0, changed.stderr
    after, _ = _rows(db_url, name)
    assert after.password_hash != user.password_hash

    assert vethub(tmp_path, db_url, "users", "disable", name).returncode == 0
    disabled, trail = _rows(db_url, name)
    assert disabled.disabled
    assert [e.action for e in trail] == ["user.create", "user.password", "user.change"]
    assert {e.actor for e in trail} == {f"cli:{getpass.getuser()}"}
    assert all("password" not in json.dumps(e.detail or {}) for e in trail)


def test_bad_input_is_refused_with_the_field_named(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    taken = f"ben{tmp_path.name[-6:]}".lower().replace("_", "")
    args = ("users", "create", "--username", taken, "--role", "tech", "--password-stdin")
    assert vethub(tmp_path, db_url, *args, stdin="password 1234\n").returncode == 0
    again = vethub(tmp_path, db_url, *args, stdin="password 1234\n")
    assert again.returncode == 2 and "is taken" in again.stderr
    bad_role = vethub(
        tmp_path,
        db_url,
        *("users", "create", "--username", "x" + taken, "--role", "integration"),
        "--password-stdin",
        stdin="password 1234\n",
    )
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    missing = vethub(tmp_path, db_url, "users", "disable", "nobody-here")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
