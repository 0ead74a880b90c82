"""``vethub init``: a new hub in one step, from a few answers to a working install.

It asks (or takes as flags) where the data goes, the three doors and the
first admin; creates the data dir and the database; writes ``vethub.toml``
last, so a failure leaves no config pointing at a half-made hub; then says
what to do next (start it, open the firewall, set up devices and the
practice software, back it up). It writes a LAN bind (0.0.0.0) and a fixed
public URL: a clinic's PIMS and PCs must reach the hub, and the links it
sends should not change when it restarts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import ValidationError

from hub import public_address
from hub.config import CONFIG_ENV, CONFIG_NAME, ENV_PREFIX, ConfigError, Settings, explain
from hub.context import Hub
from hub.data_dir import sqlite_file
from hub.db import head_revision
from hub.errors import HubError, NotFound
from hub.services import users


@dataclass
class Answers:
    """What ``vethub init`` asks; the first eight are written to vethub.toml."""

    data_dir: Path
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    public_url: str = ""  # "" until asked: derived from the host and port
    dicom_ae: str = "VETHUB"
    dicom_port: int = 11112
    hl7_port: int = 2575
    database_url: str | None = None  # None: SQLite in data_dir
    admin_username: str = "admin"


QUESTIONS = {
    "data_dir": "Data folder (database and received images; put it on a disk that is backed up)",
    "http_host": "HTTP listen address (0.0.0.0: every network card)",
    "http_port": "HTTP port (API, console, viewer)",
    "public_url": "Public URL (what links sent to the practice software and owners start with)",
    "dicom_ae": "DICOM AE title of the hub (devices are set up with it)",
    "dicom_port": "DICOM port (worklist, images, MPPS)",
    "hl7_port": "HL7 v2 (MLLP) port",
    "admin_username": "First admin's username",
}
# Written to the file in this order, each after its comment line.
COMMENTS = {
    "data_dir": "Folder of the SQLite database and the received images: back it up.",
    "database_url": "The database (PostgreSQL) instead of SQLite in data_dir.",
    "http_host": "HTTP door (REST API, console, viewer); 0.0.0.0 listens on every network card.",
    "http_port": None,
    "public_url": "What links the hub sends (viewer, shares, results to the PIMS) start with.",
    "dicom_ae": "DICOM door: worklist, images (C-STORE) and MPPS from the imaging devices.",
    "dicom_port": None,
    "hl7_port": "HL7 v2 over MLLP from the practice software.",
}


def target(config: Path | None) -> Path:
    """Where init writes: ``--config``, else ``$VETHUB_CONFIG``, else ./vethub.toml."""
    named = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    return (named or Path(CONFIG_NAME)).expanduser().absolute()


def check(name: str, value: Any) -> Any:
    """The value as the hub will read it, or a ``ConfigError`` naming the fault."""
    if name == "admin_username":
        if not users.USERNAME.fullmatch(users.normalize(str(value))):
            raise ConfigError(
                "admin username: 1-64 characters, letters, digits and . _ @ - (not first)"
            )
        return users.normalize(str(value))
    if name == "data_dir":
        return Path(value).expanduser().absolute()
    try:
        checked = Settings(**{name: value})
    except ValidationError as exc:
        raise ConfigError(explain(exc, None)) from None
    return getattr(checked, name)


def ask(answers: Answers, prompt: Callable[[str], str], out: TextIO) -> Answers:
    """Each question with its current answer as the default; a bad answer is asked again."""
    for name, question in QUESTIONS.items():
        default = getattr(answers, name)
        if name == "public_url" and not default:
            default = public_address.derive(answers.http_host, answers.http_port, tls=False)
        while True:
            typed = prompt(f"{question} [{default}]: ").strip()
            try:
                value = check(name, typed or default)
            except ConfigError as exc:
                print(f"  {exc}", file=out)
                continue
            answers = replace(answers, **{name: value})
            break
    return answers


def checked(answers: Answers) -> Answers:
    """Flags and defaults, checked like typed answers; the public URL derived if not given."""
    for f in fields(Answers):
        value = getattr(answers, f.name)
        if value is not None and value != "":
            answers = replace(answers, **{f.name: check(f.name, value)})
    if not answers.public_url:
        derived = public_address.derive(answers.http_host, answers.http_port, tls=False)
        answers = replace(answers, public_url=derived)
    return answers


def settings_for(answers: Answers) -> Settings:
    values = {f.name: getattr(answers, f.name) for f in fields(Answers)}
    del values["admin_username"]
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(explain(exc, None)) from None


def toml_text(answers: Answers, path: Path) -> str:
    """The config file: the answers as TOML, a relative data_dir when it sits beside the file."""
    lines = [
        f"# vethub settings, written by `vethub init` on {date.today().isoformat()}.",
        "# Keys are setting names (docs/deployment.md, 'The config file'); a VETHUB_*",
        "# environment variable overrides the key of the same name. Relative paths are",
        "# from this file's folder.",
    ]
    for name, comment in COMMENTS.items():
        value: Any = getattr(answers, name)
        if value is None:
            continue
        if name == "data_dir":
            value = str(
                value.relative_to(path.parent) if value.is_relative_to(path.parent) else value
            )
        if comment:
            lines += ["", f"# {comment}"]
        lines.append(f"{name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a TOML basic string, once DEL (which JSON leaves raw) is escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def write_config(path: Path, text: str) -> None:
    """Written whole or not at all, readable by its owner only (it may hold a database password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def make_hub(settings: Settings, username: str, password: str, actor: str) -> str:
    """Create (or bring up to date) the database and the first admin; a sentence on each."""
    file = sqlite_file(settings)
    existed = file is None or file.is_file()  # a server database is made by its administrator
    hub = Hub.open(settings, upgrade=True)
    try:
        with hub.db.session() as s:
            try:
                users.by_name(s, username)
                made = f'"{username}" already exists, left as it was'
            except NotFound:
                users.create(s, username, "admin", password, actor=actor)
                made = f'"{username}" created'
    finally:
        hub.close()
    where = file or "at database_url"
    kept = "existing, brought up to date" if existed else "created"
    return f"database     {where} ({kept}, schema {head_revision()})\n  admin        {made}"


def overridden() -> list[str]:
    """``VETHUB_*`` variables of this shell that would override the file's keys."""
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].lower() in Settings.model_fields
    )


def next_steps(path: Path, settings: Settings, answers: Answers) -> str:
    host = urlsplit(settings.public_url).hostname or answers.http_host
    cfg = f"--config {path}"
    base = settings.public_url.rstrip("/")
    return f"""
What to do next:
  1. Start the hub:   vethub serve {cfg}
     As a service (restarted when it stops): docs/deployment.md, "Run as a service".
  2. Open these TCP ports in this machine's firewall:
       {settings.http_port:<6} HTTP: the practice software's REST calls, console and viewer
       {settings.dicom_port:<6} DICOM: the imaging devices (worklist, images, MPPS)
       {settings.hl7_port:<6} HL7 v2 (MLLP) from the practice software
  3. Sign in at {base}/sign-in as {answers.admin_username}.
  4. Imaging devices: worklist and storage SCP = AE title {settings.dicom_ae}, host {host},
     port {settings.dicom_port}. Register each one's AE title in the console
     ({base}/console/devices): once one is, unknown callers are refused.
  5. Practice software: REST at {base}/api/v1 with a key from
       vethub keys create {cfg} --name pims --role integration
     or HL7 v2 to {host}:{settings.hl7_port}; register it as a source (same page) to
     get results back.
  6. Backups: vethub backup {cfg} --to DIR (docs/deployment.md, "Backup and restore").

Other vethub commands find this config when run from {path.parent};
from elsewhere add {cfg} or set {CONFIG_ENV}={path}.
"""


def run(
    config: Path | None,
    given: dict[str, Any],
    *,
    interactive: bool,
    password: Callable[[], str],
    force: bool,
    actor: str,
    out: TextIO | None = None,
) -> int:
    """``vethub init``: ``given`` holds the answers passed as flags (None: not given)."""
    out = out or sys.stdout
    path = target(config)
    if path.exists() and not force:
        raise HubError(f"{path} exists: not overwriting it (add --force to replace it)")
    answers = Answers(data_dir=path.parent / "vethub-data")
    answers = replace(answers, **{k: v for k, v in given.items() if v is not None})
    if interactive:
        print(f"Setting up a new vethub; the config goes to {path}.", file=out)
        answers = ask(answers, input, out)
    answers = checked(answers)
    settings = settings_for(answers)
    secret = password()
    if len(secret) < users.MIN_PASSWORD:
        raise ConfigError(f"admin password: must be at least {users.MIN_PASSWORD} characters")
    made = make_hub(settings, answers.admin_username, secret, actor)
    write_config(path, toml_text(answers, path))
    print(f"vethub is set up.\n  config       {path}\n  {made}", file=out)
    for name in overridden():
        print(f"  note: {name} is set in this shell and overrides the file's key", file=out)
    print(next_steps(path, settings, answers), file=out, end="")
    return 0
