"""Settings: ``vethub.toml`` under ``VETHUB_*`` environment variables (docs/deployment.md).

Every ``vethub`` command gets its settings from ``load``, so ``serve``, ``keys``
and ``users`` find the same config file and so the same database. The file is
looked for in one order (``find_config``); its keys are the field names below,
and an environment variable overrides its key. Building ``Settings(...)``
directly (tests) reads no file.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from contextvars import ContextVar
from datetime import time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from hub import public_address
from hub.errors import HubError

# A DICOM UID (PS3.5 9.1): dotted digits, at most 64 characters.
Uid = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]

CONFIG_NAME = "vethub.toml"
CONFIG_ENV = "VETHUB_CONFIG"
ENV_PREFIX = "VETHUB_"
# The file ``load`` is reading, for ``Settings.settings_customise_sources``
# (a source cannot be handed arguments through the constructor).
_reading: ContextVar[Path | None] = ContextVar("vethub_config_file", default=None)


class ConfigError(HubError):
    """The config file or a ``VETHUB_*`` variable cannot be used; says which, and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    dicom_ae: str = Field("VETHUB", min_length=1, max_length=16)
    dicom_port: int = Field(11112, ge=0, le=65535)
    dicom_host: str = "0.0.0.0"
    # Calling AE titles not registered under /api/v1/modalities: true lets them
    # in, false refuses them; unset is the first-run mode: open while no device
    # is registered, closed once one is. Unknown callers are listed either way.
    dicom_allow_unknown_ae: bool | None = None
    # DICOM door limits: associations open at once, and per calling address;
    # the TCP listen backlog; seconds a new connection may take to send its
    # A-ASSOCIATE-RQ (ARTIM) and an association may sit silent before it is closed.
    dicom_max_associations: int = Field(64, ge=1, le=1000)
    dicom_max_associations_per_peer: int = Field(16, ge=1, le=1000)
    dicom_listen_backlog: int = Field(128, ge=1, le=4096)
    dicom_artim_seconds: float = Field(10, gt=0, le=600)
    dicom_idle_seconds: float = Field(30, gt=0, le=3600)
    # DICOM over TLS on its own port (2762 is usual); off when unset.
    dicom_tls_port: int | None = Field(None, ge=0, le=65535)
    # A Deflated Explicit VR Little Endian data set may inflate to at most this
    # many MB; beyond it the C-STORE is refused (deflate bombs reach 1000:1).
    dicom_max_inflated_mb: int = Field(1024, ge=1)
    # The Storage SCP takes every storage SOP class pynetdicom knows in every
    # transfer syntax pydicom knows (worklist/storage.py); UIDs listed here are
    # refused at association time instead (a JSON list, e.g. '["1.2.840.10008.1.2.2"]').
    dicom_refused_sop_classes: list[Uid] = Field(default_factory=list)
    dicom_refused_transfer_syntaxes: list[Uid] = Field(default_factory=list)
    # Private or newer storage classes pynetdicom does not know, taken like the rest.
    dicom_extra_sop_classes: list[Uid] = Field(default_factory=list)
    hl7_host: str = "0.0.0.0"
    hl7_port: int = Field(2575, ge=0, le=65535)
    # HL7 over TLS (MLLP inside TLS) on its own port; off when unset.
    hl7_tls_port: int | None = Field(None, ge=0, le=65535)
    # Senders not allowed by any source's hl7_senders: true lets them in, false
    # answers AR; unset is the first-run mode (open until a source lists senders).
    hl7_allow_unknown_senders: bool | None = None
    # HL7 door limits: connections at once and per sending address; a connection
    # with no complete message for idle seconds is closed (stray bytes outside a
    # frame do not count), and a started frame must end within frame seconds.
    hl7_max_connections: int = Field(200, ge=1, le=10000)
    hl7_max_connections_per_peer: int = Field(16, ge=1, le=10000)
    hl7_idle_seconds: float = Field(120, gt=0, le=86400)
    hl7_frame_seconds: float = Field(60, gt=0, le=3600)
    # TLS (docs/interface.md "Encryption in transit"): PEM certificate and key
    # for HTTPS and the TLS doors; a CA whose client certificates the DICOM TLS
    # door then requires; extra CAs trusted for outgoing connections. The files
    # are re-read when they change (checked every tls_reload_seconds).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_extra_ca: Path | None = None
    tls_reload_seconds: float = Field(60, gt=0)
    data_dir: Path = Path("./vethub-data")
    # Studies older than this many days (by study date) are listed by
    # GET /api/v1/storage/retention; never deleted by the hub. Unset: no limit.
    retention_days: int | None = Field(None, ge=1)
    database_url: str | None = None
    # Encrypts vendor credentials of sources by kind at rest (hub/services/sealed.py):
    # any passphrase of 16+ characters, kept outside the data dir and its backups.
    secret_key: str | None = None
    bootstrap_admin_key: str | None = None
    # Where links the hub sends (viewer_url, shares, results) point. Unset: derived
    # from http_host/http_port (hub/public_address.py); a wildcard host becomes
    # this machine's address, and https when TLS is configured.
    public_url: str = ""
    # Naive times in orders are in this zone; empty means the machine's zone.
    timezone: str = ""
    log_level: str = "INFO"
    # HTTP door: a request body larger than this is refused with 413 (hub/api/limits.py).
    http_max_body_mb: float = Field(16, gt=0)
    # A request's headers must arrive within this many seconds (slowloris), and at
    # most this many connections + requests are handled at once (more get 503).
    http_header_timeout_seconds: float = Field(10, gt=0)
    http_max_connections: int = Field(1000, ge=1)
    mappings_dir: Path | None = None
    # Staff sign-in (docs/interface.md "Staff accounts and sign-in"): a session
    # ends after this many minutes without use.
    session_idle_minutes: float = Field(720, gt=0)
    # Optional single sign-on (OpenID Connect, authorization code flow with PKCE):
    # the provider's issuer URL and this hub's client registration there. Roles
    # come from the claim named by oidc_role_claim, mapped by oidc_role_map
    # (JSON, claim value -> frontdesk/tech/vet/admin); no mapped value, no entry.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_role_claim: str = "roles"
    oidc_role_map: dict[str, str] = Field(default_factory=dict)
    oidc_provider_name: str = "single sign-on"
    # Daily QC (GET /api/v1/qc): a study unmatched for longer than this is listed.
    qc_waiting_minutes: float = Field(60, ge=0)
    # Local time after which yesterday's qc.daily event is written (HH:MM).
    qc_daily_at: time = time(7, 0)
    # Origins (scheme://host:port) of an external DICOMweb viewer allowed to call
    # /dicomweb from a browser (CORS); the built-in viewer is same-origin and
    # needs none. A JSON list in the environment.
    dicomweb_cors_origins: list[str] = Field(default_factory=list)
    # `vethub serve` brings the schema to this version's revision at start
    # (one process at a time on PostgreSQL). Off: serve refuses an old schema
    # and `vethub db upgrade` is run by hand, e.g. after a backup.
    auto_migrate: bool = True

    # Worklist hygiene: open orders scheduled longer ago than this leave the
    # worklist (their status is unchanged). 0 switches the cut-off off.
    worklist_max_age_days: float = Field(7, ge=0)
    # Largest number of items one C-FIND may return; 0 = no limit.
    worklist_max_results: int = Field(0, ge=0)

    # Studies: an in-progress order is completed when its images stopped
    # arriving this many minutes ago (most clinic devices send no MPPS); 0 = off.
    study_quiet_minutes: float = Field(30, ge=0)
    # Match rule 3 of docs/interface.md (PatientID + animal name + modality + day).
    match_patient_day: bool = True

    # Results deliveries (hub/services/deliveries/): the worker polls every
    # poll_seconds, retries with exponential backoff (base, capped, with jitter)
    # and marks a delivery failed after max_attempts.
    delivery_poll_seconds: float = Field(1.0, gt=0)
    delivery_backoff_seconds: float = Field(5.0, gt=0)
    delivery_backoff_max_seconds: float = Field(900.0, gt=0)
    delivery_max_attempts: int = Field(20, ge=1)
    delivery_timeout_seconds: float = Field(10.0, gt=0)
    delivery_batch: int = Field(50, ge=1, le=1000)
    delivery_concurrency: int = Field(8, ge=1, le=64)

    # The vethub.toml these settings were read with (None: environment and defaults).
    _config_file: Path | None = PrivateAttr(None)
    # True while public_url is the derived one: `vethub serve` re-derives it
    # with the port it bound when http_port is 0.
    _public_url_derived: bool = PrivateAttr(False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then vethub.toml (when ``load`` reads one)."""
        path = _reading.get()
        if path is None:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        config_file = ConfigFileSource(settings_cls, toml_file=path)
        return init_settings, env_settings, config_file, dotenv_settings, file_secret_settings

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname
        ):
            raise ValueError(
                "must be an absolute http:// or https:// URL, e.g. http://10.0.0.5:8080"
            )
        return value

    @model_validator(mode="after")
    def _derive_public_url(self) -> Settings:
        if not self.public_url:
            tls = self.tls_cert is not None
            self.public_url = public_address.derive(self.http_host, self.http_port, tls)
            self._public_url_derived = True
        return self

    @property
    def config_file(self) -> Path | None:
        return self._config_file

    @property
    def public_url_derived(self) -> bool:
        return self._public_url_derived

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vethub.db').resolve()}"

    @cached_property
    def tz(self) -> ZoneInfo | None:
        """The hub's local zone, or None for the machine's own."""
        return ZoneInfo(self.timezone) if self.timezone else None


def path_fields() -> frozenset[str]:
    """Settings that name a file or folder (a relative one in vethub.toml is from its folder)."""
    return frozenset(
        name
        for name, info in Settings.model_fields.items()
        if info.annotation is Path or Path in get_args(info.annotation)
    )


class ConfigFileSource(TomlConfigSettingsSource):
    """vethub.toml, checked as it is read: unknown keys stop the start, relative paths
    are taken from the file's folder (so the file works whatever the working directory)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_config(Path(file_path))


def read_config(path: Path) -> dict[str, Any]:
    """The file's keys and values; a syntax error or unknown key is a ``ConfigError``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = Settings.model_fields
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            if isinstance(data[key], dict):
                hint = "; keys are the setting names at the top level, without [tables]"
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
    for key in path_fields() & data.keys():
        if isinstance(data[key], str):
            data[key] = str(path.parent / Path(data[key]).expanduser())
    return data


def platform_config() -> Path | None:
    """``$XDG_CONFIG_HOME/vethub/vethub.toml``, else ``~/.config/vethub/vethub.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if not base:
        try:
            base = str(Path.home() / ".config")
        except RuntimeError:  # no home directory (a bare service account)
            return None
    return Path(base) / "vethub" / CONFIG_NAME


def find_config(explicit: Path | None = None) -> Path | None:
    """The config file: ``--config``, then ``$VETHUB_CONFIG``, then ``./vethub.toml``,
    then the platform's config dir; None when there is none (environment and defaults).

    A file named by the flag or the variable must exist: a typo in it would
    otherwise quietly run on defaults, against another database.
    """
    named = os.environ.get(CONFIG_ENV)
    if explicit is not None or named:
        path, given = (
            (explicit, "--config") if explicit is not None else (Path(named or ""), CONFIG_ENV)
        )
        path = path.expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} (given by {given}) does not exist")
        return path.absolute()
    for candidate in (Path.cwd() / CONFIG_NAME, platform_config()):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def load(config: Path | None = None, **overrides: Any) -> Settings:
    """The settings every ``vethub`` command runs with (``config``: the ``--config`` path).

    A bad value stops here with a ``ConfigError`` naming the file or variable,
    the key and the fault, instead of a traceback later.
    """
    path = find_config(config)
    token = _reading.set(path)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(explain(exc, path)) from None
    except SettingsError as exc:  # e.g. a list setting whose variable is not JSON
        raise ConfigError(str(exc)) from None
    finally:
        _reading.reset(token)
    settings._config_file = path
    return settings


def explain(exc: ValidationError, path: Path | None) -> str:
    """One line per bad setting, saying where it came from: the environment or the file."""
    in_file = read_config(path) if path is not None else {}
    env = {name.upper() for name in os.environ}
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        fault = err["msg"].removeprefix("Value error, ")
        variable = f"{ENV_PREFIX}{key.upper()}"
        if variable in env:
            where = f"environment variable {variable}"
        elif key in in_file:
            where = f"config file {path}: {key}"
        else:
            where = key or "settings"
        lines.append(f"{where}: {fault} (got {err['input']!r})")
    return "; ".join(lines)
