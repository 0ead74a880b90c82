"""Does a config point at a hub? The guard against making a second database by mistake.

SQLite creates a database file wherever it is asked to open one, so a
``vethub keys create`` run from the wrong folder used to make a fresh, empty
hub there and print a key the running hub rejects. Commands now refuse a data
dir without a hub database; only ``vethub init``, ``vethub db upgrade`` and a
first ``vethub serve`` create one. PostgreSQL databases are made by their
administrator, so there the schema check (hub/db.py) is the guard.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from hub.config import Settings
from hub.errors import HubError

# What a hub leaves in its data dir besides the database: received images,
# previews and the ports file. Any of them without a database means the
# database went missing, not that this is a first start.
HUB_FILES = ("studies", "thumbnails", "render", "ports.json")


class NoHubDatabase(HubError):
    """The settings name a data dir or SQLite file that holds no hub database."""


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file, or None when the database is a server (PostgreSQL)."""
    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def holds_database(settings: Settings) -> bool:
    """True for a server database, or a SQLite file that exists."""
    path = sqlite_file(settings)
    return path is None or path.is_file()


def used_before(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in HUB_FILES)


def require(settings: Settings, *, first_start: bool = False) -> None:
    """Stop unless the database is there; ``first_start`` (serve) lets a new or unused
    data dir through, where the database is then created."""
    if holds_database(settings):
        return
    if first_start and not used_before(settings.data_dir):
        return
    path = sqlite_file(settings)
    found = (
        f"config file {settings.config_file}"
        if settings.config_file
        else "no config file found, so environment and defaults"
    )
    if first_start:
        raise NoHubDatabase(
            f"the data dir {settings.data_dir} holds a hub's files but no database at {path} "
            f"({found}): restore the database from a backup, or fix data_dir / "
            "database_url; a new empty database is not created over existing images"
        )
    raise NoHubDatabase(
        f"no hub database at {path} ({found}): point this command at the running hub's "
        "config with --config PATH (or VETHUB_CONFIG), or set up a new hub with `vethub init`"
    )
