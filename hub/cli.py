"""``vethub`` command line: init, serve, doctor, backup, restore, keys, users, export, import, db.

Every command reads its settings through ``hub.config.load`` with the one
``--config PATH`` option (accepted before or after the command), so they all
act on the same hub; ``hub.data_dir.require`` stops a command pointed at a
data dir without a hub database instead of creating one there.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hub import data_dir, setup_wizard
from hub.config import Settings, load
from hub.context import Hub
from hub.db import Database, SchemaNotCurrent, head_revision, new_revision
from hub.errors import HubError
from hub.logs import setup_logging
from hub.models import User
from hub.services import events, keys, users

log = logging.getLogger("hub.cli")


def _keys_create(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.session() as s:
        row, plain = keys.create(s, args.name, args.role, actor=_actor(), source=args.source)
        out = {"id": row.id, "name": row.name, "role": row.role, "source": row.source}
        out["key"] = plain
    print(json.dumps(out))
    return 0


def _keys_list(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.read_session() as s:
        for k in keys.list_all(s):
            print(
                json.dumps(
                    {
                        "id": k.id,
                        "name": k.name,
                        "role": k.role,
                        "source": k.source,
                        "prefix": k.prefix,
                        "created_at": k.created_at.isoformat(),
                        "revoked": k.revoked_at is not None,
                    }
                )
            )
    return 0


def _keys_revoke(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.session() as s:
        keys.revoke(s, args.id, actor=_actor())
    print(json.dumps({"id": args.id, "revoked": True}))
    return 0


def _password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin (scripts), else asked twice without echo."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise HubError("the two passwords differ; nothing was changed")
    return first


def _user_out(user: User) -> dict[str, object]:
    return {"id": user.id, "username": user.username, "role": user.role}


def _users_create(args: argparse.Namespace, hub: Hub) -> int:
    password = _password(args)
    with hub.db.session() as s:
        user = users.create(s, args.username, args.role, password, actor=_actor())
        out = _user_out(user)
    print(json.dumps(out))
    return 0


def _users_list(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.read_session() as s:
        for u in users.list_all(s):
            print(
                json.dumps(
                    _user_out(u) | {"disabled": u.disabled, "created_at": u.created_at.isoformat()}
                )
            )
    return 0


def _users_disable(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.session() as s:
        user = users.change(s, users.by_name(s, args.username), actor=_actor(), disabled=True)
        out = _user_out(user) | {"disabled": True}
    print(json.dumps(out))
    return 0


def _users_set_password(args: argparse.Namespace, hub: Hub) -> int:
    password = _password(args)
    with hub.db.session() as s:
        user = users.set_password(s, users.by_name(s, args.username), password, actor=_actor())
        out = _user_out(user) | {"password_changed": True}
    print(json.dumps(out))
    return 0


def _db_upgrade(settings: Settings) -> int:
    db = Database(settings.db_url)
    try:
        before = db.revision()
        db.upgrade()
        after = db.revision()
    finally:
        db.dispose()
    print(json.dumps({"database": _where(settings), "from": before, "to": after}))
    return 0


def _db_current(settings: Settings) -> int:
    if not data_dir.holds_database(settings):  # report it, without creating the file
        print(json.dumps({"database": _where(settings), "revision": None, "head": head_revision()}))
        print(f"vethub: no hub database at {data_dir.sqlite_file(settings)}", file=sys.stderr)
        return 1
    db = Database(settings.db_url)
    try:
        current = db.revision()
    finally:
        db.dispose()
    head = head_revision()
    print(json.dumps({"database": _where(settings), "revision": current, "head": head}))
    return 0 if current == head else 1


def _db_revision(message: str) -> int:
    """For contributors: a migration from head to the models, diffed on a scratch SQLite."""
    with tempfile.TemporaryDirectory(prefix="vethub-revision-") as scratch:
        db = Database(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            db.upgrade()
            path = new_revision(db.engine, message)
        finally:
            db.dispose()
    print(json.dumps({"written": path}))
    print("review it: autogenerate misses renames and server defaults", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, hub: Hub) -> int:
    from hub.archive import export

    if args.verify:
        checked, problems = export.verify(args.verify)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(json.dumps({"verified": checked, "differences": len(problems)}))
        return 1 if problems else 0
    if args.to is None:
        raise HubError("say where: --to DIR (or --verify DIR)")
    scope = export.Scope(since=args.since, patient_id=args.patient_id)
    _instances, size = export.totals(hub, scope)
    with _progress("export", size) as advance:
        done = export.export(hub, args.to, scope, actor=_actor(), progress=advance)
    for problem in done.unreadable:
        print(f"vethub: not exported: {problem}", file=sys.stderr)
    print(
        json.dumps(
            {"exported_to": str(args.to)} | vars(done) | {"unreadable": len(done.unreadable)}
        )
    )
    return 1 if done.unreadable else 0


def _import(args: argparse.Namespace, hub: Hub) -> int:
    from hub.archive import importer

    if args.from_ae:
        return _migrate(args, hub)
    if args.folder is None:
        raise HubError("say what: a folder, or --from-ae AE --host H --port P")
    with _progress("import (files)", None) as advance:
        done = importer.run(hub, args.folder, apply=args.apply, report=_reporter(advance))
    if args.apply:
        _audit_import(hub, str(args.folder), done.as_dict())
    print(json.dumps({"applied": args.apply, "summary": done.as_dict()}))
    return 1 if done.failed else 0


def _audit_import(hub: Hub, source: str, summary: dict[str, int]) -> None:
    with hub.db.session() as s:
        events.audit(s, _actor(), "import", "archive", source, {"summary": summary})


def _reporter(advance: Callable[[int], None]) -> Callable[[dict[str, Any]], None]:
    """One JSON line a file or study on stdout, and the progress bar a step on."""

    def report(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)
        advance(1)

    return report


def _migrate(args: argparse.Namespace, hub: Hub) -> int:
    from hub.archive import migrate

    if not args.host or not args.port:
        raise HubError("--from-ae needs --host and --port of the old PACS")
    pacs = migrate.OldPacs(args.from_ae, args.host, args.port, hub.settings.dicom_ae)
    with _progress(f"import from {args.from_ae} (studies)", None) as advance:
        done = migrate.run(
            hub,
            pacs,
            since=args.since,
            report=_reporter(advance),
            retrieve=args.retrieve,
            listen_port=args.listen_port,
        )
    _audit_import(hub, f"{args.from_ae}@{args.host}:{args.port}", done.as_dict())
    line = {"from_ae": args.from_ae, "retrieve": done.retrieve, "summary": done.as_dict()}
    print(json.dumps(line))
    return 1 if done.failed else 0


@contextlib.contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal, else nothing (logs stay clean)."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    if total is None:  # files or studies, as they come: a count, no end known
        columns: tuple[Any, ...] = (
            TextColumn("{task.description}"),
            SpinnerColumn(),
            TextColumn("{task.completed} done"),
            TimeElapsedColumn(),
        )
    else:  # bytes of a known total
        columns = (*Progress.get_default_columns(), DownloadColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _actor() -> str:
    """Who ran the command, for the audit trail: the operating-system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _where(settings: Settings) -> str:
    return make_url(settings.db_url).render_as_string(hide_password=True)


def _init(args: argparse.Namespace, config: Path | None) -> int:
    given = {
        name: getattr(args, name)
        for name in (
            "data_dir",
            "http_host",
            "http_port",
            "public_url",
            "dicom_ae",
            "dicom_port",
            "hl7_port",
            "database_url",
            "admin_username",
        )
    }
    interactive = not args.non_interactive and sys.stdin.isatty()
    if not interactive and not args.password_stdin:
        raise HubError(
            "without a terminal to ask on, give the admin password with --admin-password-stdin"
        )
    return setup_wizard.run(
        config,
        given,
        interactive=interactive,
        password=lambda: _password(args),
        force=args.force,
        actor=_actor(),
    )


def _doctor(args: argparse.Namespace, config: Path | None) -> int:
    """Exit 1 when a check failed; a config that does not parse is itself the report."""
    from hub import doctor

    try:
        settings = load(config)
    except HubError as exc:
        checks = doctor.config_failure(exc)
    else:
        from hub.serve import doctor_probes  # the composition root holds the DICOM probe

        checks = doctor.examine(settings, doctor_probes(settings))
    if args.json:
        print(doctor.as_json(checks))
    else:
        doctor.print_report(checks)
    return 1 if doctor.failed(checks) else 0


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from hub import backup

    try:
        done = backup.backup(settings, args.to, link=not args.copy, checksums=args.checksums)
    except OSError as exc:  # e.g. the backup disk is full or not writable
        raise HubError(f"backup to {args.to} stopped: {exc}") from exc
    for rel in done.missing:
        print(f"vethub: in the database but not on disk: {rel}", file=sys.stderr)
    if done.unsettled:
        print(
            f"vethub: {len(done.unsettled)} files changed after the last snapshot; "
            "see 'unsettled' in the manifest",
            file=sys.stderr,
        )
    print(json.dumps(vars(done) | {"missing": len(done.missing), "unsettled": len(done.unsettled)}))
    return 1 if done.missing else 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from hub import backup

    try:
        done = backup.restore(settings, args.frm, force=args.force)
    except OSError as exc:
        raise HubError(f"restore from {args.frm} stopped: {exc}") from exc
    print(json.dumps({"restored_from": str(args.frm)} | vars(done)))
    return 0


def split_config(argv: list[str]) -> tuple[Path | None, list[str]]:
    """``--config PATH`` (or ``--config=PATH``) taken out wherever it stands, so it may
    come before or after the command, and commands added later get it too."""
    config: Path | None = None
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest += [arg, *args]
            break
        if arg == "--config":
            value = next(args, None)
            if value is None:
                raise HubError("--config needs a path: --config /path/to/vethub.toml")
            config = Path(value)
        elif arg.startswith("--config="):
            config = Path(arg.removeprefix("--config="))
        else:
            rest.append(arg)
    return config, rest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vethub", description="Imaging integration hub for vet clinics"
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the vethub.toml to use (before or after the command); default: $VETHUB_CONFIG, "
        "./vethub.toml, then ~/.config/vethub/vethub.toml",
    )
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser(
        "init", help="set up a new hub: write vethub.toml, create the database and first admin"
    )
    n.add_argument(
        "--data-dir", type=Path, help="data folder (default: vethub-data beside the config)"
    )
    n.add_argument("--http-host", help="HTTP listen address (default 0.0.0.0: every network card)")
    n.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    n.add_argument("--public-url", help="what links start with (default: this machine's address)")
    n.add_argument("--dicom-ae", help="the hub's DICOM AE title (default VETHUB)")
    n.add_argument("--dicom-port", type=int, help="DICOM port (default 11112)")
    n.add_argument("--hl7-port", type=int, help="HL7 v2 MLLP port (default 2575)")
    n.add_argument(
        "--database-url", help="a PostgreSQL database instead of SQLite in the data folder"
    )
    n.add_argument("--admin-username", help="the first admin's username (default admin)")
    n.add_argument(
        "--admin-password-stdin",
        dest="password_stdin",
        action="store_true",
        help="read the first admin's password from stdin",
    )
    n.add_argument(
        "--non-interactive",
        "--yes",
        action="store_true",
        help="ask nothing: flags, else defaults (needs --admin-password-stdin)",
    )
    n.add_argument("--force", action="store_true", help="replace an existing config file")
    sub.add_parser("serve", help="run the hub (HTTP, DICOM and HL7 doors) in the foreground")
    dr = sub.add_parser(
        "doctor", help="check config, database, doors, links, disk, certificate, devices, sources"
    )
    dr.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    b = sub.add_parser("backup", help="back up the database and stored files (hub may run)")
    b.add_argument("--to", type=Path, required=True, metavar="DIR", help="the backup folder")
    b.add_argument("--copy", action="store_true", help="copy files even where hard links would do")
    b.add_argument("--checksums", action="store_true", help="record each file's sha256")
    rs = sub.add_parser("restore", help="put a backup into an empty data dir and database")
    rs.add_argument("--from", dest="frm", type=Path, required=True, metavar="DIR")
    rs.add_argument("--force", action="store_true", help="replace a database and files there")

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    c = k.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    c.add_argument("--role", required=True, choices=keys.ROLES)
    c.add_argument(
        "--source", help="scope the key to this source: it places and changes only its orders"
    )
    c.set_defaults(func=_keys_create)
    k.add_parser("list", help="list keys (never the keys themselves)").set_defaults(func=_keys_list)
    r = k.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id", type=int)
    r.set_defaults(func=_keys_revoke)

    u = sub.add_parser("users", help="manage staff accounts (people who sign in)")
    us = u.add_subparsers(dest="users", required=True)
    uc = us.add_parser("create", help="create an account; prints its id, username and role")
    uc.add_argument("--username", required=True)
    uc.add_argument("--role", required=True, choices=users.ROLES)
    uc.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    uc.set_defaults(func=_users_create)
    us.add_parser("list", help="list accounts (never passwords)").set_defaults(func=_users_list)
    ud = us.add_parser("disable", help="disable an account; its sessions end")
    ud.add_argument("username")
    ud.set_defaults(func=_users_disable)
    up = us.add_parser("set-password", help="set a new password; the account's sessions end")
    up.add_argument("username")
    up.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    up.set_defaults(func=_users_set_password)

    e = sub.add_parser("export", help="write every stored study out as plain DICOM files")
    e.add_argument("--to", type=Path, help="the folder to write (re-running resumes)")
    e.add_argument("--since", type=_day, help="studies received on or after YYYY-MM-DD")
    e.add_argument("--patient-id", help="only this patient's studies")
    e.add_argument("--verify", type=Path, metavar="DIR", help="re-check an export's checksums")
    e.set_defaults(func=_export)
    i = sub.add_parser(
        "import", help="take in an old archive folder, DICOMDIR media or a live old PACS"
    )
    i.add_argument("folder", type=Path, nargs="?")
    i.add_argument("--apply", action="store_true", help="store (without: only report)")
    i.add_argument("--from-ae", help="migrate from a live old PACS with this AE title")
    i.add_argument("--host", help="the old PACS's host")
    i.add_argument("--port", type=int, help="the old PACS's DICOM port")
    i.add_argument("--since", type=_day, help="its studies dated on or after YYYY-MM-DD")
    i.add_argument(
        "--retrieve",
        choices=("get", "move"),
        default="get",
        help="C-GET (default; C-MOVE when the old PACS refuses C-GET) or C-MOVE to the hub's "
        "AE title, which the old PACS must know with this host and --listen-port",
    )
    i.add_argument(
        "--listen-port",
        type=int,
        help="where the import takes the old PACS's C-MOVE (default: VETHUB_DICOM_PORT)",
    )
    i.set_defaults(func=_import)

    d = sub.add_parser("db", help="database tasks").add_subparsers(dest="db", required=True)
    d.add_parser("upgrade", help="bring the schema to this version's revision")
    d.add_parser("current", help="show the schema revision (exit 1 when not current)")
    rev = d.add_parser("revision", help="contributors: write a migration for changed models")
    rev.add_argument("-m", "--message", required=True, help="what the migration changes")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        config, rest = split_config(list(sys.argv[1:] if argv is None else argv))
    except HubError as exc:
        print(f"vethub: {exc}", file=sys.stderr)
        return 2
    args = parser().parse_args(rest)
    try:
        if args.command == "init":
            return _init(args, config)
        if args.command == "doctor":
            return _doctor(args, config)
        settings = load(config)
        if args.command == "backup":
            return _backup(args, settings)
        if args.command == "restore":
            return _restore(args, settings)
        if args.command == "serve":
            from hub.serve import serve

            if not data_dir.holds_database(settings):
                data_dir.require(settings, first_start=True)
                setup_logging(settings.log_level)
                log.info(
                    "first start: creating a new hub database",
                    extra={"database": str(data_dir.sqlite_file(settings))},
                )
            serve(settings)
            return 0
        if args.command == "db":
            if args.db == "upgrade":  # makes the schema, so it may make the database too
                return _db_upgrade(settings)
            if args.db == "current":
                return _db_current(settings)
            return _db_revision(args.message)
        data_dir.require(settings)
        hub = Hub.open(settings)
    except (SchemaNotCurrent, HubError) as exc:
        print(f"vethub: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, hub))
    except HubError as exc:
        print(f"vethub: {exc}", file=sys.stderr)
        return 2
    finally:
        hub.close()


if __name__ == "__main__":
    sys.exit(main())
