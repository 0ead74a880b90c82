"""``vethub init``: from an empty folder to a hub that every other command finds."""

from __future__ import annotations

import io
import json
import os
import stat
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.cli import main
from hub.config import load
from hub.context import Hub
from hub.data_dir import sqlite_file
from hub.serve import bootstrap_admin

PASSWORD = "a good long password"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("VETHUB_") and name != "VETHUB_CONFIG":
            monkeypatch.delenv(name)
    yield


def _init(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = PASSWORD + "\n") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["init", "--non-interactive", "--admin-password-stdin", *argv])


def _users(cfg: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["users", "list", "--config", str(cfg)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_init_on_an_empty_folder_makes_a_hub_the_other_commands_find(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "clinic" / "vethub.toml"
    admin = f"it{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared by the session
    sqlite = db_url.startswith("sqlite")
    extra = [] if sqlite else ["--database-url", db_url]
    done = _init(
        monkeypatch,
        *("--config", str(cfg), "--http-port", "28080", "--admin-username", admin, *extra),
    )
    assert done == 0
    out = capsys.readouterr().out
    written = tomllib.loads(cfg.read_text())
    assert written["http_host"] == "0.0.0.0" and written["http_port"] == 28080
    assert written["data_dir"] == "vethub-data"  # beside the file, so it moves with it
    assert written["public_url"].endswith(":28080") and "0.0.0.0" not in written["public_url"]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600  # may hold a database password

    settings = load(cfg)
    assert settings.data_dir == cfg.parent / "vethub-data"
    if sqlite:
        assert sqlite_file(settings) == cfg.parent / "vethub-data" / "vethub.db"
        assert sqlite_file(settings).is_file()  # type: ignore[union-attr]
    for said in (
        f"vethub serve --config {cfg}",
        "28080  HTTP",
        "11112  DICOM",
        "2575   HL7",
        f"{written['public_url']}/sign-in as {admin}",
        "AE title VETHUB",
        "vethub keys create --config",
        "vethub backup --config",
    ):
        assert said in out
    listed = {u["username"]: u["role"] for u in _users(cfg, capsys)}
    assert listed[admin] == "admin"

    # the file is not replaced by accident; with --force the database and admin are kept
    before = cfg.read_text()
    assert _init(monkeypatch, "--config", str(cfg), *extra) == 2
    assert "exists: not overwriting it (add --force" in capsys.readouterr().err
    assert cfg.read_text() == before
    again = ("--config", str(cfg), "--admin-username", admin, "--force", *extra)
    assert _init(monkeypatch, *again) == 0
    assert f'"{admin}" already exists, left as it was' in capsys.readouterr().out
    assert [u["username"] for u in _users(cfg, capsys)].count(admin) == 1

    if sqlite:  # the first serve prints no new admin key: the admin account signs in
        hub = Hub.open(settings)
        try:
            assert bootstrap_admin(hub) is None
        finally:
            hub.close()


def test_init_asks_on_a_terminal_and_asks_again_after_a_bad_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VETHUB_CONFIG", str(tmp_path / "vethub.toml"))  # where init writes
    answers = iter(
        ["", "", "99999", "18080", "http://pacs.clinic.example:18080", "XRAY_HUB", "", "", "anna"]
    )
    monkeypatch.setattr("builtins.input", lambda _prompt: next(answers))
    monkeypatch.setattr("getpass.getpass", lambda _prompt: PASSWORD)
    monkeypatch.setattr("sys.stdin", _Terminal())
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "http_port: Input should be less than or equal to 65535" in out
    written = tomllib.loads((tmp_path / "vethub.toml").read_text())
    assert written == {
        "data_dir": "vethub-data",
        "http_host": "0.0.0.0",
        "http_port": 18080,
        "public_url": "http://pacs.clinic.example:18080",
        "dicom_ae": "XRAY_HUB",
        "dicom_port": 11112,
        "hl7_port": 2575,
    }
    # found from the working directory without --config
    monkeypatch.delenv("VETHUB_CONFIG")
    assert main(["users", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["username"] == "anna"


def test_init_refuses_a_short_password_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "vethub.toml"
    assert _init(monkeypatch, "--config", str(cfg), stdin="short\n") == 2
    assert "admin password: must be at least 10 characters" in capsys.readouterr().err
    assert not cfg.exists() and not (tmp_path / "vethub-data").exists()
