"""``vethub doctor``: the things that break a clinic's hub, checked in one go.

Each check has a name, a status (ok / warn / fail) and one line saying what
was found, so an IT person can act on the report without reading logs. The
checks read the same settings as ``vethub serve`` and never change anything:
a missing SQLite file is reported, not created.

The core knows no DICOM: the C-ECHO of registered devices is a callable the
composition root (``hub.serve.doctor_probes``) passes in. Network probes use
short timeouts (``TIMEOUT_S``) and run side by side, so a report takes about
one timeout however many devices and sources there are.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import col

from hub.archive.files import MIN_FREE_BYTES
from hub.config import Settings
from hub.db import head_revision
from hub.models import Instance, Modality, Source, utcnow
from hub.tls import ServerTls, TlsConfigError, client_context

OK, WARN, FAIL = "ok", "warn", "fail"
TIMEOUT_S = 2.0
# Clock difference from the database beyond which times in orders and results drift.
SKEW_WARN_S = 5.0
CERT_WARN_DAYS = 30
# Days of storage left (at the last 30 days' pace) below which the disk is a problem.
DISK_WARN_DAYS, DISK_FAIL_DAYS = 30, 7

# The database's clock: SQLite's CURRENT_TIMESTAMP has whole seconds only.
_NOW = {"sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"}

# C-ECHO a device: (called AE title, host, port, tls) -> (answered, what happened).
Echo = Callable[[str, str, int, bool], tuple[bool, str]]


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Probes:
    """What the doctor cannot do from the core: given by the CLI's composition."""

    echo: Echo | None = None


@dataclass
class _Found:
    """What the database told us, for the checks that need it."""

    checks: list[Check] = field(default_factory=list)
    current: bool = False  # schema at head: the tables below could be read
    devices: list[tuple[str, str, int, bool]] = field(default_factory=list)
    sources: list[tuple[str, str | None, str | None, int | None, bool]] = field(
        default_factory=list
    )
    stored_30d: int | None = None


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def config_failure(exc: Exception) -> list[Check]:
    """The report when the settings themselves do not parse (nothing else can be checked)."""
    detail = " ".join(str(exc).split())
    return [Check("config", FAIL, f"settings do not parse: {detail}")]


def examine(settings: Settings, probes: Probes) -> list[Check]:
    """Every check, in report order."""
    read_from = getattr(settings, "config_file", None) or "environment and defaults"
    checks = [Check("config", OK, f"read from {read_from}; data dir {settings.data_dir.resolve()}")]
    found = _database(settings)
    checks += found.checks
    with ThreadPoolExecutor(max_workers=16) as pool:
        running_f = pool.submit(hub_running, settings.data_dir)
        public_f = pool.submit(_get, settings.public_url.rstrip("/") + "/health", settings)
        echoes = [(d, pool.submit(_echo, probes.echo, *d)) for d in found.devices]
        webhooks = [(s[0], pool.submit(_webhook, s[1], settings)) for s in found.sources if s[1]]
        mllps = [
            (s[0], pool.submit(_mllp, s[2], s[3], s[4], settings))
            for s in found.sources
            if s[2] and s[3]
        ]
        running = running_f.result()
        checks += _doors(settings, running)
        checks.append(_public(settings, public_f.result(), running is not None))
        checks.append(_disk(settings.data_dir, found.stored_30d))
        checks.append(_certificate(settings))
        if found.current and not found.devices:
            checks.append(Check("devices", OK, "no device registered with a host and port"))
        for (ae, _host, _port, _tls), answered in echoes:
            ok, detail = answered.result()
            checks.append(Check(f"device {ae}", OK if ok else FAIL, detail))
        for name, reached in webhooks:
            checks.append(Check(f"source {name} webhook", *reached.result()))
        for name, reached in mllps:
            checks.append(Check(f"source {name} hl7", *reached.result()))
    return checks


# --- database -------------------------------------------------------------


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": TIMEOUT_S})
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})


def _database(settings: Settings) -> _Found:
    found = _Found()
    url = make_url(settings.db_url)
    where = url.render_as_string(hide_password=True)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).is_file():
        found.checks.append(
            Check("database", FAIL, f"no database at {sqlite_file}: is the data dir right?")
        )
        return found
    engine = _engine(settings.db_url)
    try:
        with engine.connect() as conn:
            started = time.monotonic()
            conn.execute(text("SELECT 1"))
            ms = (time.monotonic() - started) * 1000
            found.checks.append(Check("database", OK, f"reachable ({where}, {ms:.0f} ms)"))
            db_now = conn.execute(text(_NOW.get(conn.dialect.name, "SELECT CURRENT_TIMESTAMP")))
            current, head = MigrationContext.configure(conn).get_current_revision(), head_revision()
            if current == head:
                found.current = True
                found.checks.append(Check("database schema", OK, f"at revision {head}"))
            elif current is None:
                found.checks.append(
                    Check("database schema", FAIL, "no vethub schema: run `vethub db upgrade`")
                )
            else:
                found.checks.append(
                    Check(
                        "database schema",
                        FAIL,
                        f"at revision {current}, this vethub needs {head}: "
                        "run `vethub db upgrade` after a backup",
                    )
                )
            found.checks.append(_clock(db_now.scalar()))
            if found.current:
                _read_tables(conn, found)
    except Exception as exc:  # any driver's error: the report says it, the rest goes on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        found.checks.append(Check("database", FAIL, f"cannot use {where}: {first}"))
    finally:
        engine.dispose()
    return found


def _read_tables(conn: Any, found: _Found) -> None:
    since = utcnow() - timedelta(days=30)
    stored = select(func.coalesce(func.sum(col(Instance.size)), 0))
    found.stored_30d = int(conn.execute(stored.where(col(Instance.received_at) >= since)).scalar())
    devices = select(
        col(Modality.ae_title), col(Modality.host), col(Modality.port), col(Modality.tls)
    ).order_by(col(Modality.ae_title))
    found.devices = [(ae, h, p, bool(t)) for ae, h, p, t in conn.execute(devices) if h and p]
    sources = select(
        col(Source.name),
        col(Source.webhook_url),
        col(Source.hl7_host),
        col(Source.hl7_port),
        col(Source.tls),
    ).order_by(col(Source.name))
    found.sources = [(n, w, h, p, bool(t)) for n, w, h, p, t in conn.execute(sources)]


def _clock(db_now: object) -> Check:
    if isinstance(db_now, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS.SSS' in UTC
        db_now = datetime.fromisoformat(db_now).replace(tzinfo=UTC)
    if not isinstance(db_now, datetime):
        return Check("clock", WARN, f"the database's time was not understood: {db_now!r}")
    if db_now.tzinfo is None:
        db_now = db_now.replace(tzinfo=UTC)
    skew = (datetime.now(UTC) - db_now).total_seconds()
    if abs(skew) > SKEW_WARN_S:
        return Check(
            "clock",
            WARN,
            f"this machine is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
            "the database: set up NTP on both",
        )
    return Check("clock", OK, f"within {SKEW_WARN_S:g} s of the database ({skew:+.1f} s)")


# --- doors ----------------------------------------------------------------


def hub_running(data_dir: Path) -> dict[str, int | None] | None:
    """The ports of a hub answering on the HTTP port its ``ports.json`` names, else None."""
    try:
        ports = json.loads((data_dir / "ports.json").read_text())
    except (OSError, ValueError):
        return None
    scheme = "https" if ports.get("https") else "http"
    if not ports.get(scheme):
        return None
    try:  # our own hub on this machine: identify it, do not judge its certificate
        r = httpx.get(f"{scheme}://127.0.0.1:{ports[scheme]}/health", timeout=1, verify=False)
        if "status" in r.json():
            return dict(ports)
    except (httpx.HTTPError, ValueError):
        pass
    return None


def _doors(settings: Settings, running: dict[str, int | None] | None) -> list[Check]:
    http = "https" if settings.tls_cert else "http"
    doors = [
        (http, settings.http_host, settings.http_port),
        ("dicom", settings.dicom_host, settings.dicom_port),
        ("hl7", settings.hl7_host, settings.hl7_port),
    ]
    if settings.dicom_tls_port is not None:
        doors.append(("dicom_tls", settings.dicom_host, settings.dicom_tls_port))
    if settings.hl7_tls_port is not None:
        doors.append(("hl7_tls", settings.hl7_host, settings.hl7_tls_port))
    return [_door(name, host, port, running) for name, host, port in doors]


def _door(name: str, host: str, port: int, running: dict[str, int | None] | None) -> Check:
    label = f"door {name}"
    if port == 0:
        return Check(label, OK, "port 0: any free port is taken at start")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                if running is not None and running.get(name) == port:
                    return Check(label, OK, f"{host}:{port} in use by this hub (running)")
                return Check(label, FAIL, f"{host}:{port} is in use by another program")
            if exc.errno == errno.EACCES:
                return Check(
                    label,
                    FAIL,
                    f"{host}:{port} needs privileges: use a port above 1023 or grant "
                    "CAP_NET_BIND_SERVICE",
                )
            return Check(label, FAIL, f"cannot bind {host}:{port}: {exc.strerror or exc}")
    return Check(label, OK, f"{host}:{port} free")


# --- reachability ---------------------------------------------------------


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    try:
        return client_context(settings)
    except TlsConfigError:
        return True  # the certificate check reports the broken extra CA


def _get(url: str, settings: Settings) -> tuple[int | None, str]:
    try:
        r = httpx.get(url, timeout=TIMEOUT_S, verify=_verify(settings))
        return r.status_code, f"HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        return None, _why(exc)


def _why(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0]


def _public(settings: Settings, answer: tuple[int | None, str], running: bool) -> Check:
    url = settings.public_url.rstrip("/") + "/health"
    status, detail = answer
    if status == 200:
        return Check("public url", OK, f"{url} answered")
    if status is not None:
        return Check("public url", FAIL, f"{url} answered {detail}: is it this hub?")
    if not running:
        return Check("public url", WARN, f"{url} not reachable ({detail}); the hub is not running")
    return Check(
        "public url",
        FAIL,
        f"{url} not reachable ({detail}) although the hub runs: check VETHUB_PUBLIC_URL, "
        "the proxy and the firewall",
    )


def _echo(echo: Echo | None, ae: str, host: str, port: int, tls: bool) -> tuple[bool, str]:
    if echo is None:
        return False, "no DICOM probe available"
    try:
        return echo(ae, host, port, tls)
    except Exception as exc:
        return False, f"C-ECHO to {ae} at {host}:{port} failed: {_why(exc)}"


def _webhook(url: str, settings: Settings) -> tuple[str, str]:
    """Reachable when anything answers in HTTP (405 to a HEAD is still an answer)."""
    try:
        r = httpx.head(url, timeout=TIMEOUT_S, verify=_verify(settings))
        return OK, f"{url} answered HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        return FAIL, f"{url} not reachable: {_why(exc)}"


def _mllp(host: str, port: int, tls: bool, settings: Settings) -> tuple[str, str]:
    where = f"{host}:{port}{' (TLS)' if tls else ''}"
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            if tls:
                ctx = _verify(settings)
                context = ctx if isinstance(ctx, ssl.SSLContext) else ssl.create_default_context()
                with context.wrap_socket(sock, server_hostname=host):
                    pass
    except (OSError, ssl.SSLError) as exc:
        return FAIL, f"MLLP {where} not reachable: {exc.strerror or _why(exc)}"
    return OK, f"MLLP {where} accepts connections"


# --- disk and certificate ---------------------------------------------------


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(data_dir: Path, stored_30d: int | None) -> Check:
    free = shutil.disk_usage(_existing(data_dir)).free
    gb = free / 1e9
    if free < MIN_FREE_BYTES:
        return Check("disk", FAIL, f"{gb:.2f} GB free: the hub refuses images below 64 MB")
    if stored_30d is None:
        return Check("disk", OK, f"{gb:.1f} GB free; growth unknown (database not read)")
    if not stored_30d:
        return Check("disk", OK, f"{gb:.1f} GB free; nothing stored in the last 30 days")
    per_day = stored_30d / 30
    days = free / per_day
    detail = (
        f"{gb:.1f} GB free; {stored_30d / 1e9:.2f} GB stored in the last 30 days: "
        f"about {days:.0f} days left at that pace"
    )
    if days < DISK_FAIL_DAYS:
        return Check("disk", FAIL, detail)
    return Check("disk", WARN if days < DISK_WARN_DAYS else OK, detail)


def _certificate(settings: Settings) -> Check:
    name = "tls certificate"
    if not settings.tls_cert and not settings.tls_key:
        return Check(name, OK, "none configured: plain HTTP")
    if not settings.tls_cert or not settings.tls_key:
        return Check(name, FAIL, "VETHUB_TLS_CERT and VETHUB_TLS_KEY must both be set")
    try:
        ServerTls(settings.tls_cert, settings.tls_key)
        client_context(settings)
        leaf = _leaf(settings.tls_cert)
    except (TlsConfigError, ValueError, OSError) as exc:
        return Check(name, FAIL, _why(exc))
    now = datetime.now(UTC)
    until = leaf.not_valid_after_utc
    if until <= now:
        return Check(name, FAIL, f"{settings.tls_cert} expired on {until:%Y-%m-%d}")
    if leaf.not_valid_before_utc > now:
        return Check(
            name,
            FAIL,
            f"{settings.tls_cert} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}",
        )
    host = urlsplit(settings.public_url).hostname or ""
    names = _names(leaf)
    if not _covers(names, host):
        return Check(
            name,
            FAIL,
            f"{settings.tls_cert} does not name {host!r} of the public URL "
            f"(it names {', '.join(names) or 'nothing'})",
        )
    days = (until - now).days
    detail = f"names {host}; valid until {until:%Y-%m-%d} ({days} days)"
    if not settings.public_url.startswith("https://"):
        return Check(name, WARN, detail + "; but VETHUB_PUBLIC_URL is not https://")
    return Check(name, WARN if days < CERT_WARN_DAYS else OK, detail)


def _leaf(path: Path) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _names(cert: Any) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _covers(names: list[str], host: str) -> bool:
    """Whether a certificate with these subject alternative names serves ``host``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for n in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(n) == ip:
                    return True
            except ValueError:
                continue
            continue
        n, h = n.lower().rstrip("."), host.lower().rstrip(".")
        if n == h:
            return True
        if n.startswith("*.") and "." in h and h.split(".", 1)[1] == n[2:]:
            return True
    return False


# --- report -----------------------------------------------------------------


def as_json(checks: list[Check]) -> str:
    return json.dumps(
        {"ok": not failed(checks), "checks": [vars(c) for c in checks]}, ensure_ascii=False
    )


def print_report(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    table = Table(title="vethub doctor", show_lines=False)
    table.add_column("status")
    table.add_column("check")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(f"[{colour[c.status]}]{c.status}[/]", c.name, c.detail)
    console = Console()
    console.print(table)
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)}
    console.print(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed")
