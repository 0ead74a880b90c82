"""``vethub backup --to DIR`` and ``vethub restore --from DIR``, while the hub runs.

A backup is the database as of one moment plus every stored file that
database references, each as it was at that moment:

1. the database is snapshotted: SQLite through its online backup API (one
   step, a consistent read beside the hub's writers thanks to WAL), PostgreSQL
   by ``pg_dump -Fc`` inside a transaction whose snapshot we export, so the
   list of files is read from exactly the rows that were dumped;
2. the files the snapshot lists are hard-linked into the backup when it is on
   the same file system (stored files are never changed in place: a header
   correction writes a new file and renames it over, so a link keeps the old
   bytes), else copied; a file unchanged since the previous backup into the
   same folder is kept;
3. a header correction commits the index first and rewrites the files after,
   so a file replaced after the snapshot may carry headers the snapshot does
   not know yet. Such a file (modified at or after the snapshot's start, or
   replaced while being taken) makes another pass: a new snapshot, and those
   files again. Passes end when one finds nothing newer, at most ``MAX_PASSES``.

``manifest.json`` is written last: a folder without one is an unfinished
backup, and restore refuses it. The old manifest is removed first for the
same reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from hub.archive import files
from hub.config import Settings
from hub.doctor import hub_running
from hub.errors import HubError

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "vethub.db"
PG_FILE = "vethub.pgdump"
FILES_DIR = "data"  # the data dir's files, under their paths relative to it
MAX_PASSES = 4
_CHUNK = 1 << 20


class BackupError(HubError):
    """A backup or restore cannot go on; the message says why and what to do."""


@dataclass
class Taken:
    """One file in the backup, and the identity of the stored file it was taken from."""

    size: int
    mtime_ns: int
    ino: int
    sha256: str | None = None

    def same(self, st: os.stat_result) -> bool:
        return (self.ino, self.mtime_ns, self.size) == (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class BackupDone:
    to: str
    database: str
    revision: str | None
    files: int = 0
    bytes: int = 0
    linked: int = 0
    copied: int = 0
    kept: int = 0
    passes: int = 0
    missing: list[str] = field(default_factory=list)
    # Files still newer than the last snapshot (a very busy hub): their headers
    # may be ahead of the database; reconciling their studies again fixes them.
    unsettled: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class RestoreDone:
    database: str
    revision: str | None
    files: int = 0
    bytes: int = 0


@dataclass
class _Snapshot:
    paths: list[str]
    revision: str | None
    # Wall clock just before the snapshot was taken: a file modified since may be newer.
    started_ns: int


def is_sqlite(settings: Settings) -> bool:
    return make_url(settings.db_url).get_backend_name() == "sqlite"


def _sqlite_path(settings: Settings) -> Path:
    name = make_url(settings.db_url).database
    if not name or name == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(name)


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """The database as pg_dump/pg_restore take it, with its password out of the process list."""
    url: URL = make_url(settings.db_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client tools of the server's major "
            "version or newer (Debian: postgresql-client)"
        )
    return found


def _where(settings: Settings) -> str:
    return make_url(settings.db_url).render_as_string(hide_password=True)


# --- backup -------------------------------------------------------------------


def backup(
    settings: Settings, to: Path, *, link: bool = True, checksums: bool = False
) -> BackupDone:
    """Back the hub up into ``to`` (made if missing; a previous backup there is updated)."""
    started = time.monotonic()
    to = to.resolve()
    data_dir = settings.data_dir.resolve()
    if to == data_dir or to.is_relative_to(data_dir / "studies"):
        raise BackupError(f"{to} is inside the data dir's files: back up to another folder")
    to.mkdir(parents=True, exist_ok=True)
    taken = _previous(to)
    (to / MANIFEST).unlink(missing_ok=True)  # from here on the folder is an unfinished backup
    snapshot = _sqlite_snapshot if is_sqlite(settings) else _pg_snapshot
    done = BackupDone(to=str(to), database=_where(settings), revision=None)
    how: dict[str, str] = {}  # path -> linked / copied in this run (else kept from the last)
    for done.passes in range(1, MAX_PASSES + 1):
        snap = snapshot(settings, to)
        done.revision = snap.revision
        done.missing = []
        for rel in snap.paths:
            _take_one(data_dir, to / FILES_DIR, rel, taken, done, how, link=link)
        done.unsettled = _unsettled(data_dir, snap.paths, taken, done.missing, snap.started_ns)
        if not done.unsettled:
            break
    wanted = set(snap.paths) - set(done.missing)
    for rel in list(taken):
        if rel not in wanted:
            del taken[rel]
    _prune(to / FILES_DIR, wanted)
    if checksums:
        for rel, t in taken.items():
            if t.sha256 is None:
                t.sha256 = _sha256(to / FILES_DIR / rel)
    done.files, done.bytes = len(taken), sum(t.size for t in taken.values())
    done.linked = sum(how.get(rel) == "linked" for rel in taken)
    done.copied = sum(how.get(rel) == "copied" for rel in taken)
    done.kept = done.files - done.linked - done.copied
    done.seconds = round(time.monotonic() - started, 2)
    _write_manifest(to, settings, done, taken)
    return done


def _previous(to: Path) -> dict[str, Taken]:
    """What the last finished backup in ``to`` holds, to keep rather than take again."""
    try:
        manifest = json.loads((to / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Taken] = {}
    for f in manifest.get("files", []):
        if (to / FILES_DIR / f["path"]).is_file() and "ino" in f:
            out[f["path"]] = Taken(f["size"], f["mtime_ns"], f["ino"], f.get("sha256"))
    return out


def _take_one(
    data_dir: Path,
    dst_root: Path,
    rel: str,
    taken: dict[str, Taken],
    done: BackupDone,
    how: dict[str, str],
    *,
    link: bool,
) -> None:
    src, dst = data_dir / rel, dst_root / rel
    try:
        st = os.stat(src)
    except FileNotFoundError:
        done.missing.append(rel)
        return
    prior = taken.get(rel)
    if prior is not None and prior.same(st):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    part.unlink(missing_ok=True)
    linked = False
    if link:
        try:
            os.link(src, part)
            linked = True
        except FileNotFoundError:
            done.missing.append(rel)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    if linked:
        st = os.stat(part)  # the inode we hold, whatever replaced the name meanwhile
        taken[rel] = Taken(st.st_size, st.st_mtime_ns, st.st_ino)
        how[rel] = "linked"
    else:
        try:
            shutil.copyfile(src, part)
            after = os.stat(src)
        except FileNotFoundError:
            done.missing.append(rel)
            return
        # Replaced while copied: an identity that matches nothing, so the check redoes it.
        taken[rel] = Taken(st.st_size, st.st_mtime_ns, st.st_ino if after == st else -1)
        how[rel] = "copied"
    os.replace(part, dst)  # never written into: dst may be a link to a stored file


def _unsettled(
    data_dir: Path, paths: list[str], taken: dict[str, Taken], missing: list[str], t0: int
) -> list[str]:
    """Files whose copy may be newer than the snapshot, or no longer what is stored."""
    gone = set(missing)
    out = []
    for rel in paths:
        if rel in gone:
            continue
        t = taken[rel]
        try:
            st = os.stat(data_dir / rel)
        except FileNotFoundError:
            out.append(rel)
            continue
        if not t.same(st) or t.mtime_ns >= t0:
            out.append(rel)
    return out


def _prune(root: Path, wanted: set[str]) -> None:
    """Files an older backup here held that this snapshot does not reference."""
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        if path.is_file() and path.relative_to(root).as_posix() not in wanted:
            path.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite_snapshot(settings: Settings, to: Path) -> _Snapshot:
    src = _sqlite_path(settings)
    if not src.is_file():
        raise BackupError(f"no hub database at {src}: are the settings those of the hub?")
    part = to / (SQLITE_FILE + ".part")
    part.unlink(missing_ok=True)
    source = sqlite3.connect(src, timeout=30)
    try:
        dest = sqlite3.connect(part)
        try:
            started_ns = time.time_ns()
            source.backup(dest)  # all pages in one step: one read transaction, one moment
            dest.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            paths = [row[0] for row in dest.execute("SELECT path FROM instances ORDER BY id")]
            revision = dest.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            dest.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot back up {src}: {exc}") from exc
    finally:
        source.close()
    _fsync(part)
    os.replace(part, to / SQLITE_FILE)
    (to / PG_FILE).unlink(missing_ok=True)
    return _Snapshot(paths, revision[0] if revision else None, started_ns)


def _pg_snapshot(settings: Settings, to: Path) -> _Snapshot:
    pg_dump = _tool("pg_dump")
    dsn, env = _libpq(settings)
    part = to / (PG_FILE + ".part")
    engine = create_engine(settings.db_url, poolclass=NullPool)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            # The dump and our file list see the same rows: pg_dump adopts this snapshot,
            # which the transaction's first statement takes.
            started_ns = time.time_ns()
            snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            paths = list(conn.execute(text("SELECT path FROM instances ORDER BY id")).scalars())
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            run = subprocess.run(
                [pg_dump, "-Fc", f"--snapshot={snapshot_id}", "--no-owner", "-f", str(part), dsn],
                env=env,
                capture_output=True,
                text=True,
            )
            conn.rollback()
    finally:
        engine.dispose()
    if run.returncode != 0:
        part.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {run.stderr.strip()}")
    _fsync(part)
    os.replace(part, to / PG_FILE)
    (to / SQLITE_FILE).unlink(missing_ok=True)
    return _Snapshot(paths, revision, started_ns)


def _write_manifest(
    to: Path, settings: Settings, done: BackupDone, taken: dict[str, Taken]
) -> None:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": {
            "kind": "sqlite" if is_sqlite(settings) else "postgresql",
            "file": SQLITE_FILE if is_sqlite(settings) else PG_FILE,
            "revision": done.revision,
        },
        "unsettled": done.unsettled,
        "missing": done.missing,
        "files": [
            {"path": rel, "size": t.size, "mtime_ns": t.mtime_ns, "ino": t.ino}
            | ({"sha256": t.sha256} if t.sha256 else {})
            for rel, t in sorted(taken.items())
        ],
    }
    part = to / (MANIFEST + ".part")
    part.write_text(json.dumps(manifest, indent=1))
    _fsync(part)
    os.replace(part, to / MANIFEST)


# --- restore ------------------------------------------------------------------


def restore(settings: Settings, frm: Path, *, force: bool = False) -> RestoreDone:
    """Put a backup into the settings' database and data dir (empty ones, unless ``force``)."""
    manifest = read_manifest(frm)
    kind = manifest["database"]["kind"]
    if kind != ("sqlite" if is_sqlite(settings) else "postgresql"):
        raise BackupError(
            f"this backup is of a {kind} database but the settings name {_where(settings)}: "
            "restore into the same kind of database"
        )
    if hub_running(settings.data_dir):
        raise BackupError(f"a hub is running on {settings.data_dir}: stop it before restoring")
    held = _holds(settings)
    if held and not force:
        raise BackupError(
            f"{held}: restore refuses to overwrite a hub; stop it and add --force to replace it"
        )
    done = RestoreDone(database=_where(settings), revision=manifest["database"]["revision"])
    dump = frm / manifest["database"]["file"]
    if not dump.is_file():
        raise BackupError(f"{dump} is missing: the backup is incomplete")
    for entry in manifest["files"]:  # check before anything is overwritten
        src = frm / FILES_DIR / entry["path"]
        if not src.is_file() or src.stat().st_size != entry["size"]:
            raise BackupError(
                f"{src} is missing or not {entry['size']} bytes: the backup is damaged"
            )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        _restore_sqlite(settings, dump)
    else:
        _restore_pg(settings, dump, clean=bool(held))
    for entry in manifest["files"]:
        rel, src = entry["path"], frm / FILES_DIR / entry["path"]
        if entry.get("sha256") and _sha256(src) != entry["sha256"]:
            raise BackupError(f"{src} does not match its checksum: the backup is damaged")
        done.bytes += files.write_atomic(
            settings.data_dir / rel, (files.FileSlice(src, 0, entry["size"]),)
        )
        done.files += 1
    return done


def read_manifest(frm: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((frm / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"no {MANIFEST} in {frm}: not a finished vethub backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{frm / MANIFEST} cannot be read: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{frm} is a backup of format {manifest.get('format')}, not {FORMAT}")
    return manifest


def _holds(settings: Settings) -> str | None:
    """What already lives where the restore would write, or None when it is all empty."""
    if is_sqlite(settings):
        path = _sqlite_path(settings)
        if path.is_file() and path.stat().st_size > 0:
            return f"{path} exists"
    else:
        engine = create_engine(settings.db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text(
                        "SELECT count(*) FROM information_schema.tables "
                        "WHERE table_schema = current_schema()"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        if tables:
            return f"the database {_where(settings)} has {tables} tables"
    studies = settings.data_dir / "studies"
    if studies.is_dir() and any(p.is_file() for p in studies.rglob("*")):
        return f"{studies} holds files"
    return None


def _restore_sqlite(settings: Settings, dump: Path) -> None:
    target = _sqlite_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # an old database's log must not replay onto this one
        with contextlib.suppress(FileNotFoundError):
            Path(f"{target}{suffix}").unlink()
    files.write_atomic(target, (files.FileSlice(dump, 0, dump.stat().st_size),))


def _restore_pg(settings: Settings, dump: Path, *, clean: bool) -> None:
    pg_restore = _tool("pg_restore")
    dsn, env = _libpq(settings)
    argv = [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "-d", dsn]
    if clean:
        argv[1:1] = ["--clean", "--if-exists"]
    run = subprocess.run([*argv, str(dump)], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise BackupError(f"pg_restore failed: {run.stderr.strip()}")
