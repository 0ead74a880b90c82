"""``vethub`` command line: serve, keys, db."""

from __future__ import annotations

import argparse
import json
import sys

from hub.config import Settings
from hub.context import Hub
from hub.errors import HubError
from hub.services import keys


def _keys_create(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.session() as s:
        row, plain = keys.create(s, args.name, args.role)
        out = {"id": row.id, "name": row.name, "role": row.role, "key": plain}
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
                        "prefix": k.prefix,
                        "created_at": k.created_at.isoformat(),
                        "revoked": k.revoked_at is not None,
                    }
                )
            )
    return 0


def _keys_revoke(args: argparse.Namespace, hub: Hub) -> int:
    with hub.db.session() as s:
        keys.revoke(s, args.id)
    print(json.dumps({"id": args.id, "revoked": True}))
    return 0


def _db_upgrade(args: argparse.Namespace, hub: Hub) -> int:
    print(json.dumps({"database": hub.db.engine.url.render_as_string(hide_password=True)}))
    return 0  # Hub.open already upgraded


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vethub", description="Imaging integration hub for vet clinics"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the hub (HTTP, DICOM and HL7 doors) in the foreground")

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    c = k.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    c.add_argument("--role", required=True, choices=keys.ROLES)
    c.set_defaults(func=_keys_create)
    k.add_parser("list", help="list keys (never the keys themselves)").set_defaults(func=_keys_list)
    r = k.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id", type=int)
    r.set_defaults(func=_keys_revoke)

    d = sub.add_parser("db", help="database tasks").add_subparsers(dest="db", required=True)
    d.add_parser("upgrade", help="bring the schema to the newest revision").set_defaults(
        func=_db_upgrade
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    if args.command == "serve":
        from hub.serve import serve

        serve(settings)
        return 0
    hub = Hub.open(settings)
    try:
        return args.func(args, hub)
    except HubError as exc:
        print(f"vethub: {exc}", file=sys.stderr)
        return 2
    finally:
        hub.close()


if __name__ == "__main__":
    sys.exit(main())
