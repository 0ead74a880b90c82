"""What the tests share besides fixtures: the test servers' addresses, a served hub
process, keys and settings. Test modules import these from here, never from
conftest or from one another.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import trustme
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import SQLModel

from hub.config import Settings
from hub.context import Hub
from hub.db import Database
from hub.serve import build_app
from hub.services import keys, users

PG_SERVER = os.environ.get("VETHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_KEY = "test-admin-key-0123456789"
REPO = Path(__file__).resolve().parent.parent


def pg_admin() -> psycopg.Connection:
    """A connection to the test server's maintenance database, for CREATE/DROP DATABASE."""
    return psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5)


def pg_database_url(name: str) -> str:
    """The SQLAlchemy URL of database ``name`` on the test server."""
    base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


# The id sequences the model's tables own (serial or identity columns).
_OWNED_SEQUENCES = text(
    "SELECT s.relname FROM pg_class s"
    " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
    " JOIN pg_class t ON t.oid = d.refobjid"
    " WHERE s.relkind = 'S' AND t.relname = ANY(:tables)"
)


def empty_tables(db: Database) -> None:
    """Every table emptied and its ids restarted: a PostgreSQL database shared by the
    session starts clean.

    DELETE, children first, then each owned sequence restarted: what ``TRUNCATE ...
    RESTART IDENTITY`` did, but TRUNCATE's work per table file cost ~0.3 s a test and
    a test's few rows take DELETE ~0.03 s (most PostgreSQL tests call this once).
    """
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        sequences = conn.execute(_OWNED_SEQUENCES, {"tables": tables}).scalars().all()
        statements = [f'DELETE FROM "{t}"' for t in tables]
        statements += [f'ALTER SEQUENCE "{seq}" RESTART' for seq in sequences]
        conn.execute(text("; ".join(statements)))


def make_settings(tmp_path: Path, db_url: str, **extra: object) -> Settings:
    """An in-process hub's settings; its links name a fixed public_url (no port is bound)."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        http_port=0,
        dicom_port=0,
        hl7_port=0,
        dicom_host="127.0.0.1",
        hl7_host="127.0.0.1",
        bootstrap_admin_key=ADMIN_KEY,
        **{"public_url": "http://127.0.0.1:8080", **extra},  # type: ignore[arg-type]
    )


def key_for(hub: Hub, role: str) -> str:
    with hub.db.session() as s:
        _, plain = keys.create(s, f"test-{role}", role, actor="test")
    return plain


def write_cert(ca: trustme.CA, directory: Path, name: str = "hub") -> tuple[Path, Path]:
    """A certificate from ``ca`` for 127.0.0.1 and localhost: ``(cert.pem, key.pem)`` paths."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts only ``ca`` (and checks host names)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@dataclass
class ServedHub:
    """A ``vethub serve`` child process with every door on a free port.

    ``http`` is the HTTP door's port whether it speaks HTTP or, with
    ``scheme`` "https", TLS (then ``verify`` trusts the test CA).
    """

    process: subprocess.Popen[bytes]
    data_dir: Path
    http: int
    dicom: int
    hl7: int | None
    ae_title: str
    key: str
    log_path: Path
    scheme: str = "http"
    verify: ssl.SSLContext | bool = True
    dicom_tls: int | None = None
    hl7_tls: int | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
            verify=self.verify,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_hub(
    data_dir: Path, db_url: str, *, verify: ssl.SSLContext | None = None, **env: str
) -> ServedHub:
    """Start ``vethub serve`` with ``env`` on top of test defaults; return once healthy.

    A hub given ``VETHUB_TLS_CERT`` serves HTTPS: pass ``verify`` (e.g.
    ``trusting(ca)``) so the health check, and ``api()``, trust its certificate.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    ports_file = data_dir / "ports.json"
    ports_file.unlink(missing_ok=True)
    log_path = data_dir / "vethub.log"
    environ = {
        **os.environ,
        "VETHUB_DATA_DIR": str(data_dir),
        "VETHUB_DATABASE_URL": db_url,
        "VETHUB_HTTP_PORT": "0",
        "VETHUB_DICOM_PORT": "0",
        "VETHUB_HL7_PORT": "0",
        "VETHUB_DICOM_HOST": "127.0.0.1",
        "VETHUB_HL7_HOST": "127.0.0.1",
        "VETHUB_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        **env,
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve"],
            env=environ,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vethub serve exited: {log_path.read_text(errors='replace')}")
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
            scheme = "https" if ports.get("https") else "http"
            if scheme == "https" and verify is None:
                proc.kill()
                proc.wait()
                raise RuntimeError("the hub serves HTTPS: pass verify=trusting(ca) to start_hub")
            trust: ssl.SSLContext | bool = verify if verify is not None else True
            url = f"{scheme}://127.0.0.1:{ports[scheme]}"
            try:
                if httpx.get(f"{url}/health", verify=trust).status_code == 200:
                    return ServedHub(
                        process=proc,
                        data_dir=data_dir,
                        http=ports[scheme],
                        dicom=ports["dicom"],
                        hl7=ports.get("hl7"),
                        ae_title=env.get("VETHUB_DICOM_AE", "VETHUB"),
                        key=ADMIN_KEY,
                        log_path=log_path,
                        scheme=scheme,
                        verify=trust,
                        dicom_tls=ports.get("dicom_tls"),
                        hl7_tls=ports.get("hl7_tls"),
                    )
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"vethub serve did not become healthy: {log_path.read_text()}")


def run_cli(
    data_dir: Path,
    *args: str,
    db_url: str | None = None,
    stdin: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``vethub ARGS`` as an operator runs it: a real process on ``data_dir`` (and ``db_url``)."""
    environ = {**os.environ, "VETHUB_DATA_DIR": str(data_dir), **env}
    environ.pop("VETHUB_DATABASE_URL", None)
    if db_url:
        environ["VETHUB_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env=environ,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    """A loopback port free now (for a peer to listen on, or nothing: "it is down")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_listener(argv: list[str], port: int, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """A third-party peer (DCMTK storescp, dcmqrscp, ...) started and waited for
    until it accepts connections on ``port``; its output is discarded."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.terminate()
    raise RuntimeError(f"{argv[0]} did not listen on port {port} within {timeout} s")


def add_user(db_url: str, username: str, role: str, password: str, actor: str = "test") -> None:
    """A staff account in the database of a served hub (what `vethub users create` makes)."""
    db = Database(db_url)
    try:
        with db.session() as s:
            users.create(s, username, role, password, actor=actor)
    finally:
        db.dispose()


@contextmanager
def sqlite_api(tmp: Path, key: str | None = ADMIN_KEY) -> Iterator[TestClient]:
    """An in-process API on its own SQLite hub, for tests whose subject is parsed
    before the database matters (one per module); ``key=None``: no Authorization."""
    hub = Hub.open(make_settings(tmp, f"sqlite:///{tmp / 'vethub.db'}"), upgrade=True)
    headers = {}
    if key is not None:
        with hub.db.session() as s:
            keys.ensure(s, "bootstrap-admin", "admin", key)
        headers["Authorization"] = f"Bearer {key}"
    try:
        with TestClient(build_app(hub), headers=headers) as client:
            yield client
    finally:
        hub.close()
