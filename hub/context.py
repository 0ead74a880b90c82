"""The hub's shared state: settings, database and vocabularies, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.archive import rewrite
from hub.config import Settings
from hub.db import Database
from hub.mappings import Mappings, load_mappings
from hub.services.orders import OrderContext


@dataclass
class Hub:
    settings: Settings
    db: Database
    mappings: Mappings
    orders: OrderContext = field(init=False)

    def __post_init__(self) -> None:
        self.orders = OrderContext(mappings=self.mappings, tz=self.settings.tz)
        rewrite.follow_orders(self)  # placing an order attaches the studies waiting for it

    @classmethod
    def open(cls, settings: Settings, *, upgrade: bool = True) -> Hub:
        """Connect, upgrade the schema and load mappings; fails fast on a bad mapping file."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        mappings = load_mappings(settings.mappings_dir)
        db = Database(settings.db_url)
        if upgrade:
            db.upgrade()
        return cls(settings=settings, db=db, mappings=mappings)

    def close(self) -> None:
        self.db.dispose()
