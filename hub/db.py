"""Engine, sessions and schema upgrades for SQLite (embedded) and PostgreSQL.

Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two
threads never both read and then fail to upgrade to a write lock; readers
(worklist queries) use a plain deferred ``BEGIN`` and run beside writers
thanks to WAL mode.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Key of the PostgreSQL advisory lock that serialises schema upgrades: hub
# processes starting together against one database migrate one at a time.
UPGRADE_LOCK_KEY = 0x76657468_7562  # "vethub"


class SchemaNotCurrent(RuntimeError):
    """The database is not at the revision this vethub needs; ``vethub db upgrade`` fixes it."""


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=16,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (see module docstring).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we acknowledge it (HTTP 2xx, HL7 AA).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("vethub_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """The engine plus the two kinds of session the hub uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer_lock: AbstractContextManager[object]
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._writer_lock = threading.Lock() if is_sqlite(self.engine) else nullcontext()
        self._read = sessionmaker(
            self.engine.execution_options(vethub_readonly=True), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error.

        On SQLite, writers of this process queue on a lock of ours: SQLite's
        own busy handler sleeps in growing steps while it waits, which wastes
        most of the write slot under concurrent load.
        """
        with self._writer_lock, self._write() as s, s.begin():
            yield s

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    def upgrade(self) -> None:
        upgrade_schema(self.engine)

    def revision(self) -> str | None:
        """The schema revision the database is at (None: no schema yet)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_schema(self) -> None:
        """Refuse to work on a database older (or newer) than this code's migrations."""
        current, head = self.revision(), head_revision()
        if current == head:
            return
        where = self.engine.url.render_as_string(hide_password=True)
        if current is None:
            raise SchemaNotCurrent(
                f"the database at {where} has no vethub schema yet: run `vethub db upgrade`"
            )
        raise SchemaNotCurrent(
            f"the database at {where} is at schema revision {current}, this vethub needs "
            f"{head}: run `vethub db upgrade` (after a backup)"
        )

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(
    connection: Connection | None = None, migrations: Path = MIGRATIONS_DIR
) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision.

    On PostgreSQL the upgrade holds an advisory lock on its own connection, so
    processes started together queue here and each finds the work done by the
    first; SQLite's single-writer lock (BEGIN IMMEDIATE) does the same there.
    """
    with engine.connect() as conn:
        locked = conn.dialect.name == "postgresql"
        if locked:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(alembic_config(conn), "head")
        finally:
            if locked:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
                conn.commit()


def new_revision(engine: Engine, message: str, migrations: Path = MIGRATIONS_DIR) -> str:
    """Write a migration that takes the schema from head to the models (autogenerate).

    ``engine`` must be at head; contributors get a throwaway SQLite one from the CLI.
    """
    script = ScriptDirectory.from_config(alembic_config(migrations=migrations))
    number = 1 + max(
        int(rev.revision[:4]) for rev in script.walk_revisions() if rev.revision[:4].isdigit()
    )
    with engine.connect() as conn:
        made = command.revision(
            alembic_config(conn, migrations),
            message=message,
            autogenerate=True,
            rev_id=f"{number:04d}",
        )
        conn.commit()
    if isinstance(made, list):
        made = made[0]
    assert made is not None
    return str(made.path)
