"""The hub's shared state: settings, database and vocabularies, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.archive import rewrite
from hub.config import Settings
from hub.db import Database
from hub.mappings import Mappings, load_mappings
from hub.services.orders import OrderContext
from hub.tls import HubTls, server_tls


@dataclass
class Hub:
    settings: Settings
    db: Database
    mappings: Mappings
    orders: OrderContext = field(init=False)
    # The server certificate for HTTPS and the TLS doors (None: no TLS configured).
    tls: HubTls | None = None

    def __post_init__(self) -> None:
        if self.tls is None:
            self.tls = server_tls(self.settings)
        self.orders = OrderContext(mappings=self.mappings, tz=self.settings.tz)
        rewrite.follow_orders(self)  # placing an order attaches the studies waiting for it

    @classmethod
    def open(cls, settings: Settings, *, upgrade: bool = False) -> Hub:
        """Connect and load mappings; fails fast on a bad mapping file, TLS file or old schema.

        Only ``upgrade=True`` (``vethub serve`` with auto-migrate on, ``vethub db
        upgrade``) changes the schema; every other caller refuses an old one.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        mappings = load_mappings(settings.mappings_dir)
        tls = server_tls(settings)  # a bad certificate stops us before the schema is touched
        db = Database(settings.db_url)
        try:
            if upgrade:
                db.upgrade()
            else:
                db.check_schema()
        except BaseException:
            db.dispose()
            raise
        return cls(settings=settings, db=db, mappings=mappings, tls=tls)

    def close(self) -> None:
        self.db.dispose()
