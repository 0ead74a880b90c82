"""The hot path's cost in statements: telling a resend from a reused MSH-10 adds none.

An NW order message is 4 SELECT (the resend lookup, which also brings the raw
text of earlier messages with that MSH-10; the placer and key check; the
order read back; the re-match check of issue #8) and 3 INSERT (order, outbox
event, log row).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from adapters.hl7.apply import apply_batch
from adapters.hl7.prepare import prepare
from adapters.hl7.profile import load_profiles
from hub.context import Hub
from hub.mappings import default_mappings_dir
from tests.mllp_client import sample


def test_nw_message_costs_four_selects_and_three_inserts(hub: Hub) -> None:
    profiles = load_profiles(default_mappings_dir() / "hl7")
    prepared = prepare(sample("orm_o01_nw_v251_utf8.hl7"), profiles)
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            seen.append(verb)

    event.listen(hub.db.engine, "before_cursor_execute", count)
    try:
        with hub.db.session() as s:
            [logged] = apply_batch(s, [prepared], hub.orders)
    finally:
        event.remove(hub.db.engine, "before_cursor_execute", count)
    assert logged.outcome == "AA"
    assert sorted(seen) == ["INSERT"] * 3 + ["SELECT"] * 4, seen
    assert seen[0] == "SELECT"  # the resend lookup, once per batch
