"""vethub.toml: where it is found, what overrides it, what a bad one says; the derived
public URL and serve's reachability warnings; the refusal to make a second database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub import data_dir, public_address
from hub.cli import main, split_config
from hub.config import ConfigError, Settings, load


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No VETHUB_* settings, a fresh working directory and config home."""
    monkeypatch.delenv("VETHUB_CONFIG", raising=False)
    for name in list(os.environ):
        if name.upper().startswith("VETHUB_") and name[7:].lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_flag_then_env_then_working_dir_then_config_home(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = _config(clean / "flag" / "vethub.toml", "http_port = 9001\n")
    env = _config(clean / "env" / "vethub.toml", "http_port = 9002\n")
    here = _config(clean / "work" / "vethub.toml", "http_port = 9003\n")
    home = _config(clean / "xdg" / "vethub" / "vethub.toml", "http_port = 9004\n")

    monkeypatch.setenv("VETHUB_CONFIG", str(env))
    assert (load(flag).http_port, load(flag).config_file) == (9001, flag)
    assert (load().http_port, load().config_file) == (9002, env)
    monkeypatch.delenv("VETHUB_CONFIG")
    assert load().config_file == here and load().http_port == 9003
    here.unlink()
    assert load().config_file == home and load().http_port == 9004
    home.unlink()
    none = load()
    assert none.config_file is None and none.http_port == 8080


def test_environment_overrides_the_file_and_relative_paths_are_from_its_folder(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(
        clean / "etc" / "vethub.toml",
        'http_port = 9001\ndicom_ae = "FILE_AE"\ndata_dir = "data"\ntls_cert = "certs/hub.pem"\n'
        'dicom_refused_sop_classes = ["1.2.840.10008.5.1.4.1.1.1"]\n',
    )
    monkeypatch.setenv("VETHUB_HTTP_PORT", "9999")
    settings = load(cfg)
    assert settings.http_port == 9999  # the variable wins
    assert settings.dicom_ae == "FILE_AE"  # the file still sets the rest
    assert settings.data_dir == clean / "etc" / "data"  # not the working directory
    assert settings.tls_cert == clean / "etc" / "certs" / "hub.pem"
    assert settings.dicom_refused_sop_classes == ["1.2.840.10008.5.1.4.1.1.1"]
    assert settings.db_url == f"sqlite:///{clean / 'etc' / 'data' / 'vethub.db'}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("http_prot = 8080\n", "unknown key 'http_prot'; did you mean http_port?"),
        ("[dicom]\nport = 104\n", "unknown key 'dicom'; keys are the setting names"),
        ("http_port = 70000\n", "http_port: Input should be less than or equal to 65535"),
        ('public_url = "clinic:8080"\n', "public_url: must be an absolute http:// or https://"),
        ("http_port = \n", "is not valid TOML: Invalid value (at line 1, column 13)"),
    ],
)
def test_a_bad_file_stops_every_command_naming_file_key_and_fault(
    clean: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    cfg = _config(clean / "vethub.toml", text)
    assert main(["keys", "list", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vethub: config file {cfg}") and said in err
    assert "Traceback" not in err
    assert not (clean / "work" / "vethub-data").exists()


def test_a_bad_variable_is_named_as_the_variable(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(clean / "vethub.toml", "dicom_port = 104\n")
    monkeypatch.setenv("VETHUB_DICOM_PORT", "many")
    with pytest.raises(ConfigError, match="environment variable VETHUB_DICOM_PORT: Input should"):
        load(cfg)


def test_a_named_config_must_exist(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml \(given by --config\) does not exist"):
        load(clean / "missing.toml")
    monkeypatch.setenv("VETHUB_CONFIG", str(clean / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml \(given by VETHUB_CONFIG\) does not exist"):
        load()


def test_config_option_before_or_after_the_command() -> None:
    first = split_config(["--config", "a.toml", "keys", "list"])
    assert first == (Path("a.toml"), ["keys", "list"])
    assert split_config(["users", "list", "--config=b.toml"]) == (Path("b.toml"), ["users", "list"])
    assert split_config(["import", "--", "--config"]) == (None, ["import", "--", "--config"])


def test_commands_refuse_a_data_dir_without_a_hub_database(
    clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = clean / "elsewhere"
    cfg = _config(clean / "vethub.toml", f'data_dir = "{wrong}"\n')
    for argv in (
        ["keys", "create", "--name", "pims", "--role", "integration"],
        ["users", "list"],
        ["export", "--to", str(clean / "out")],
    ):
        assert main([*argv, "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert f"no hub database at {wrong / 'vethub.db'} (config file {cfg})" in err
        assert "--config PATH" in err and "`vethub init`" in err
    assert not wrong.exists()  # neither the folder nor a database was made


def test_serve_creates_a_database_only_in_a_new_or_unused_data_dir(clean: Path) -> None:
    fresh = Settings(data_dir=clean / "new")
    data_dir.require(fresh, first_start=True)  # a first start: allowed
    used = Settings(data_dir=clean / "used")
    (used.data_dir / "studies").mkdir(parents=True)  # images, but the database is gone
    with pytest.raises(data_dir.NoHubDatabase, match="holds a hub's files but no database"):
        data_dir.require(used, first_start=True)
    with pytest.raises(data_dir.NoHubDatabase, match="no hub database at"):
        data_dir.require(fresh)  # any other command


def test_public_url_is_derived_from_the_http_door() -> None:
    assert Settings(http_port=28080).public_url == "http://127.0.0.1:28080"
    assert Settings(http_host="10.1.2.3", http_port=443, tls_cert=Path("c.pem")).public_url == (
        "https://10.1.2.3:443"
    )
    assert Settings(http_host="::1", http_port=8080).public_url == "http://[::1]:8080"
    lan = Settings(http_host="0.0.0.0", http_port=8080)
    assert lan.public_url == f"http://{public_address.primary_address()}:8080"
    assert lan.public_url_derived and "0.0.0.0" not in lan.public_url
    given = Settings(http_port=28080, public_url="https://pacs.clinic.example")
    assert given.public_url == "https://pacs.clinic.example" and not given.public_url_derived


def test_serve_warns_when_links_or_the_http_door_are_unreachable_from_elsewhere() -> None:
    def warned(bound: int = 8080, **values: object) -> list[str]:
        return public_address.warnings(Settings(**values), bound)  # type: ignore[arg-type]

    loopback = warned(28080, http_port=28080)  # the defaults: 127.0.0.1, derived URL
    assert any("HTTP listens on 127.0.0.1 only" in w for w in loopback)
    assert any("start with http://127.0.0.1" in w for w in loopback)
    assert warned(http_host="0.0.0.0", public_url="http://10.0.0.5:8080") == []
    [port] = warned(http_host="0.0.0.0", public_url="http://10.0.0.5:8080", bound=0)
    assert "names port 8080 but HTTP listens on 0" in port
    # no port, or https before a plain hub: a proxy's address, not compared
    assert warned(http_host="0.0.0.0", public_url="https://pacs.example", bound=0) == []
    assert warned(http_host="0.0.0.0", public_url="https://pacs.example:8443") == []
    [tls] = warned(http_host="0.0.0.0", public_url="http://10.0.0.5:8080", tls_cert=Path("c.pem"))
    assert "plain http but the hub serves HTTPS" in tls
