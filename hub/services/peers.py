"""Who may call the DICOM and HL7 doors, and who called without being known.

Both doors share one rule (docs/interface.md, docs/reliability.md): an
explicit setting wins (true: anyone may call, false: only the registered);
unset is the *first-run mode*, open while nothing is registered so a new
clinic can see what turns up, closed as soon as something is. Every caller
that is not registered is written to ``unknown_peers`` (throttled), so the
IT person can register what they see.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import UnknownPeer, utcnow

Door = Literal["dicom", "hl7"]
# Rows kept at most: someone cycling AE titles must not grow the table without bound.
MAX_ROWS = 1000
# One row update per caller per this many seconds; calls in between are counted.
WRITE_EVERY_S = 30.0

log = logging.getLogger("hub.peers")


def admits(setting: bool | None, known: bool, anything_registered: bool) -> bool:
    """Whether a caller gets in: ``setting`` is ``VETHUB_*_ALLOW_UNKNOWN_*`` (None = first run)."""
    if known or setting is True:
        return True
    if setting is False:
        return False
    return not anything_registered


def sender_matches(
    entry: Mapping[str, str], application: str, facility: str, address: str | None
) -> bool:
    """One ``hl7_senders`` entry against MSH-3, MSH-4 and the peer's address.

    Each part the entry names must match (names without regard to case, the
    address as an IP or inside a network such as ``10.0.0.0/24``); a part it
    leaves out matches anything.
    """
    want_app = entry.get("application")
    if want_app and want_app.casefold() != application.strip().casefold():
        return False
    want_fac = entry.get("facility")
    if want_fac and want_fac.casefold() != facility.strip().casefold():
        return False
    want_addr = entry.get("address")
    if want_addr:
        if not address:
            return False
        try:
            return ipaddress.ip_address(address.split("%")[0]) in ipaddress.ip_network(
                want_addr, strict=False
            )
        except ValueError:
            return False
    return True


def check_sender_entry(entry: Mapping[str, object]) -> str | None:
    """Why an ``hl7_senders`` entry is unusable, or None."""
    allowed = {"application", "facility", "address"}
    extra = set(entry) - allowed
    if extra:
        return f"unknown keys {sorted(extra)}; allowed: application, facility, address"
    if not any(entry.get(k) for k in allowed):
        return "must name at least one of application, facility, address"
    for key in allowed:
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            return f"{key} must be a string of at most 64 characters"
    address = entry.get("address")
    if isinstance(address, str) and address:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            return f"address {address!r} is not an IP address or network (e.g. 10.0.0.0/24)"
    return None


def record(
    session: Session,
    door: Door,
    name: str,
    address: str,
    *,
    facility: str = "",
    refused: bool,
    calls: int = 1,
) -> None:
    """Note a call from someone not registered (insert or bump its row)."""
    name, facility, address = name.strip()[:64], facility.strip()[:64], address[:64]
    now = utcnow()
    changed = session.execute(
        update(UnknownPeer)
        .where(
            col(UnknownPeer.door) == door,
            col(UnknownPeer.name) == name,
            col(UnknownPeer.facility) == facility,
            col(UnknownPeer.address) == address,
        )
        .values(last_seen=now, count=col(UnknownPeer.count) + calls, refused=refused)
    )
    if changed.rowcount:  # type: ignore[attr-defined]
        return
    if (session.scalar(select(func.count()).select_from(UnknownPeer)) or 0) >= MAX_ROWS:
        return
    session.add(
        UnknownPeer(
            door=door,
            name=name,
            facility=facility,
            address=address,
            first_seen=now,
            last_seen=now,
            count=calls,
            refused=refused,
        )
    )


def seen(session: Session, door: Door, *, exclude: Iterable[str] = ()) -> list[UnknownPeer]:
    """Unknown callers of a door, most recent first (minus names since registered)."""
    skip = {n.casefold() for n in exclude}
    rows = session.scalars(
        select(UnknownPeer)
        .where(col(UnknownPeer.door) == door)
        .order_by(col(UnknownPeer.last_seen).desc())
    )
    return [r for r in rows if r.name.casefold() not in skip]


class Sightings:
    """A throttled ``record`` for the doors: at most one write per caller per ``every`` s.

    Thread-safe (pynetdicom calls from one thread per association). A failed
    write is logged and dropped: noting a caller must never fail the call.
    """

    def __init__(
        self,
        session: Callable[[], AbstractContextManager[Session]],
        every: float = WRITE_EVERY_S,
    ) -> None:
        self._session = session
        self.every = every
        self._lock = threading.Lock()
        # caller -> (last write, calls since, what the door did then)
        self._last: dict[tuple[str, str, str, str], tuple[float, int, bool]] = {}

    def see(
        self, door: Door, name: str, address: str, *, facility: str = "", refused: bool
    ) -> None:
        key = (door, name, facility, address)
        now = time.monotonic()
        with self._lock:
            last, pending, was_refused = self._last.get(key, (-1e18, 0, refused))
            # A changed decision (first run closing, a setting changed) is written at once.
            if now - last < self.every and was_refused == refused:
                self._last[key] = (last, pending + 1, refused)
                return
            if len(self._last) > 4 * MAX_ROWS:
                self._last.clear()
            self._last[key] = (now, 0, refused)
        try:
            with self._session() as s:
                record(
                    s, door, name, address, facility=facility, refused=refused, calls=pending + 1
                )
        except Exception:
            log.warning("could not note an unknown caller", exc_info=True)
