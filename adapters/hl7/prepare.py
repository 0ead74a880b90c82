"""Received bytes -> ``Prepared``: decoded, parsed and tied to a sender's profile, or not.

Pure CPU with no database, so it runs on the event loop as frames arrive;
the writer then only applies. Nothing here raises: a message that cannot be
read carries its ``error``, and is logged and answered like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from adapters.hl7.ack import Addressing, Hl7Error
from adapters.hl7.mllp import Broken
from adapters.hl7.parse import Hl7Message, ParseError, decode, parse, peek_header
from adapters.hl7.profile import Profiles, SenderMatch
from hub.models import utcnow
from hub.services import peers

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_POSITION = re.compile(r"([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?")


@dataclass
class Prepared:
    """A received message, decoded and parsed (or not), ready for the writer."""

    raw: str
    addressing: Addressing
    sender: str = ""
    facility: str = ""
    control_id: str = ""
    type: str = ""
    version: str = ""
    charset: str = ""
    msg: Hl7Message | None = None
    match: SenderMatch | None = None
    error: Hl7Error | None = None
    received_at: datetime = field(default_factory=utcnow)
    address: str = ""  # the peer's IP address ("" when not from a socket)
    # The source whose ``hl7_senders`` entry this sender matches; None: no entry does.
    allowed_by: str | None = None
    refused: bool = False  # not allowed in: answered AR, never applied


@dataclass(frozen=True)
class Senders:
    """Every source's ``hl7_senders`` (the allow-list) and whether anyone else gets in.

    Built from the sources every few seconds by the door, so checking a message
    costs no query. ``open`` is ``peers.admits`` for a sender no entry matches.
    """

    entries: tuple[tuple[str, Mapping[str, str]], ...] = ()  # (source, entry), most specific first
    profiles: Mapping[str, str] = field(default_factory=dict)  # source -> hl7_profile
    open: bool = True

    @classmethod
    def build(
        cls, sources: Iterable[tuple[str, str, list[dict[str, str]]]], setting: bool | None
    ) -> Senders:
        """From (name, hl7_profile, hl7_senders) rows and ``VETHUB_HL7_ALLOW_UNKNOWN_SENDERS``."""
        rows = list(sources)
        entries = [(name, entry) for name, _, listed in rows for entry in listed or []]
        # An entry naming more parts is the more specific one; ties go by source name.
        entries.sort(key=lambda e: (-sum(1 for v in e[1].values() if v), e[0]))
        return cls(
            entries=tuple(entries),
            profiles={name: profile for name, profile, _ in rows},
            open=peers.admits(setting, known=False, anything_registered=bool(entries)),
        )

    def source_for(self, application: str, facility: str, address: str) -> str | None:
        for source, entry in self.entries:
            if peers.sender_matches(entry, application, facility, address or None):
                return source
        return None


def prepare(
    payload: bytes,
    profiles: Profiles,
    registered: Mapping[str, str] | None = None,
    *,
    address: str = "",
    senders: Senders | None = None,
) -> Prepared:
    """Decode (per MSH-18) and parse one framed message; ``senders``: check the allow-list."""
    prepared = _from_header(payload, "", profiles, registered)
    prepared.address = address
    default_charset = prepared.match.profile.charset if prepared.match else ""
    try:
        text, _ = decode(payload, default_charset)
    except ParseError as exc:
        prepared.raw = storable(payload.decode("latin-1"))
        prepared.error = Hl7Error(exc.code, str(exc), _erl(exc.location))
        return admit(prepared, profiles, senders)
    prepared.raw = storable(text)
    return admit(_parse_into(prepared, text, profiles, registered), profiles, senders)


def prepare_text(
    text: str, profiles: Profiles, registered: Mapping[str, str] | None = None
) -> Prepared:
    """A stored message run again (reprocess): the text is already decoded."""
    prepared = _from_header(text.encode("utf-8", "replace"), storable(text), profiles, registered)
    return _parse_into(prepared, text, profiles, registered)


def prepare_broken(
    broken: Broken,
    profiles: Profiles,
    registered: Mapping[str, str] | None = None,
    *,
    address: str = "",
    senders: Senders | None = None,
) -> Prepared:
    """A frame that never ended properly: kept (its head) and answered, never applied."""
    raw = storable(broken.head.decode("latin-1"))
    prepared = _from_header(broken.head, raw, profiles, registered)
    prepared.address = address
    prepared.error = Hl7Error(100, f"{broken.reason} ({broken.size} bytes); not processed")
    return admit(prepared, profiles, senders)


def admit(prepared: Prepared, profiles: Profiles, senders: Senders | None) -> Prepared:
    """The allow-list: a sender an entry names is that source's; anyone else only when open.

    A matched sender is read with its source's profile (a profile file naming
    the same sender for the same source still wins). A refused message keeps
    its log row and gets AR with the reason, whatever else was wrong with it.
    """
    if senders is None:
        return prepared
    source = senders.source_for(prepared.sender, prepared.facility, prepared.address)
    prepared.allowed_by = source
    if source is not None:
        if prepared.match is None or prepared.match.source != source:
            profile = profiles.named(senders.profiles.get(source, ""), prepared.version)
            prepared.match = SenderMatch(profile, source)
        return prepared
    if not senders.open:
        prepared.refused = True
        prepared.match = None  # nobody's message: logged without a source or profile
        who = "/".join(p for p in (prepared.sender, prepared.facility) if p) or "(no MSH-3/MSH-4)"
        prepared.error = Hl7Error(
            207,
            f"sender {who} at {prepared.address or 'an unknown address'} is not allowed; "
            "register it in a source's hl7_senders",
        )
    return prepared


def clean(text: str, n: int) -> str:
    """A sender's value fit for a log column: no control characters, at most ``n`` long."""
    return _CTRL.sub("", text).replace("\x00", "")[:n]


def storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; nothing else is changed."""
    return text.replace("\x00", "\ufffd")


def _from_header(
    head: bytes, raw: str, profiles: Profiles, registered: Mapping[str, str] | None
) -> Prepared:
    """What the MSH bytes alone tell (all a broken or undecodable message offers)."""
    header = peek_header(head)
    if header is None:
        return Prepared(raw=raw, addressing=Addressing())

    def first(n: int) -> str:
        return clean(header.first_component(n), 64)

    trigger = header.get(9).split(header.get(2)[:1] or "^")
    control_id = clean(header.get(10), 64)
    version = first(12)[:8]
    charset = first(18)[:32]
    prepared = Prepared(
        raw=raw,
        addressing=Addressing(
            sending_application=first(3),
            sending_facility=first(4),
            receiving_application=first(5),
            receiving_facility=first(6),
            control_id=control_id,
            trigger=clean(trigger[1], 8) if len(trigger) > 1 else "",
            processing_id=first(11)[:3] or "P",
            version=version or "2.5",
            charset=charset,
        ),
        sender=first(3),
        facility=first(4),
        control_id=control_id,
        type=clean("^".join(trigger[:2]), 16),
        version=version,
        charset=charset,
    )
    prepared.match = profiles.match(prepared.sender, prepared.facility, registered, version)
    return prepared


def _parse_into(
    prepared: Prepared, text: str, profiles: Profiles, registered: Mapping[str, str] | None
) -> Prepared:
    try:
        msg = parse(text)
    except ParseError as exc:
        prepared.error = Hl7Error(exc.code, str(exc), _erl(exc.location))
        return prepared
    prepared.msg = msg
    prepared.sender = clean(msg.sending_application, 64)
    prepared.facility = clean(msg.sending_facility, 64)
    prepared.control_id = clean(msg.control_id, 64)
    prepared.type = clean(msg.type, 16)
    prepared.version = clean(msg.version, 8)
    prepared.charset = clean(msg.charset, 32)
    prepared.match = profiles.match(
        prepared.sender, prepared.facility, registered, prepared.version
    )
    return prepared


def _erl(location: str) -> str:
    """``PID-5.2`` / ``MSH-18`` / ``PID^2`` -> ERL ``PID^1^5^1^2``."""
    m = _POSITION.fullmatch(location)
    if m:
        seg, fld, comp = m.groups()
        return "^".join([seg, "1", fld, "1", *([comp] if comp else [])])
    return location[:64]
