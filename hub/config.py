"""Settings, read from ``VETHUB_*`` environment variables (docs/interface.md)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VETHUB_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    dicom_ae: str = Field("VETHUB", min_length=1, max_length=16)
    dicom_port: int = Field(11112, ge=0, le=65535)
    dicom_host: str = "0.0.0.0"
    dicom_allow_unknown_ae: bool = True
    # A Deflated Explicit VR Little Endian data set may inflate to at most this
    # many MB; beyond it the C-STORE is refused (deflate bombs reach 1000:1).
    dicom_max_inflated_mb: int = Field(1024, ge=1)
    hl7_host: str = "0.0.0.0"
    hl7_port: int = Field(2575, ge=0, le=65535)
    data_dir: Path = Path("./vethub-data")
    database_url: str | None = None
    bootstrap_admin_key: str | None = None
    public_url: str = "http://127.0.0.1:8080"
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

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vethub.db').resolve()}"

    @cached_property
    def tz(self) -> ZoneInfo | None:
        """The hub's local zone, or None for the machine's own."""
        return ZoneInfo(self.timezone) if self.timezone else None


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
