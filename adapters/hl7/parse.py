"""Reading HL7 v2 ER7 text: lenient where real senders deviate, strict where meaning would be lost.

Lenient: ``\\n`` or ``\\r\\n`` segment ends, any legal encoding characters,
Z-segments, segments and repetitions the standard does not expect, trailing
NULs and blank lines. Strict: an MSH that cannot be read, encoding
characters that collide, a character set we cannot decode, a segment whose
name is not a segment name, an HL7 version hl7apy does not know.

A full hl7apy parse costs ~7 ms per order message on this hardware, more
than the whole intake budget, so the hot path tokenises the ER7 text itself
(fields, repetitions, components, escapes) and uses hl7apy's reference
tables (versions, segment and message structure names) to judge what it
read; ``parse_strict`` runs the complete hl7apy parser when wanted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType

import hl7apy

# HL7 table 0211 names -> Python codecs. Single-byte sets only, plus UTF-8.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",  # not in table 0211, but sent by real systems
}
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_ESCAPE_NAMED = {
    "F": "field",
    "S": "component",
    "T": "subcomponent",
    "R": "repetition",
    "E": "escape",
}


class ParseError(Exception):
    """The message cannot be read; ``location`` is an HL7 position like ``MSH-18``."""

    def __init__(self, message: str, location: str = "", code: int = 102) -> None:
        super().__init__(message)
        self.location = location
        self.code = code  # HL7 table 0357


@dataclass(frozen=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


@dataclass
class Segment:
    name: str
    fields: list[str]  # fields[n] is field n (MSH: fields[1] is the field separator)
    index: int  # 1-based position in the message

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""


@dataclass
class Hl7Message:
    text: str
    encoding: Encoding
    segments: list[Segment]
    charset: str  # the MSH-18 value as sent ("" when absent)
    _by_name: dict[str, list[Segment]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for seg in self.segments:
            self._by_name.setdefault(seg.name, []).append(seg)

    # --- header -----------------------------------------------------------
    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def sending_application(self) -> str:
        return self.value(self.msh, 3, 1)

    @property
    def sending_facility(self) -> str:
        return self.value(self.msh, 4, 1)

    @property
    def control_id(self) -> str:
        return self.value(self.msh, 10)

    @property
    def message_code(self) -> str:
        return self.value(self.msh, 9, 1).upper()

    @property
    def trigger(self) -> str:
        return self.value(self.msh, 9, 2).upper()

    @property
    def structure(self) -> str:
        return self.value(self.msh, 9, 3).upper()

    @property
    def version(self) -> str:
        return self.value(self.msh, 12, 1)

    @property
    def type(self) -> str:
        """``ORM^O01`` style: code and trigger event."""
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code

    # --- access -----------------------------------------------------------
    def all(self, name: str) -> list[Segment]:
        return self._by_name.get(name, [])

    def first(self, name: str) -> Segment | None:
        segs = self._by_name.get(name)
        return segs[0] if segs else None

    def value(self, seg: Segment, fld: int, comp: int = 0, sub: int = 0, rep: int = 1) -> str:
        """One value, unescaped; ``comp=0`` means the whole repetition as text."""
        raw = seg.raw(fld)
        if not raw or (seg.name == "MSH" and fld <= 2):
            return raw
        e = self.encoding
        reps = raw.split(e.repetition)
        if rep > len(reps):
            return ""
        part = reps[rep - 1]
        if comp:
            comps = part.split(e.component)
            if comp > len(comps):
                return ""
            part = comps[comp - 1]
            if sub:
                subs = part.split(e.subcomponent)
                if sub > len(subs):
                    return ""
                part = subs[sub - 1]
        return unescape(part, e) if e.escape in part else part

    def components(self, seg: Segment, fld: int, rep: int = 1) -> list[str]:
        """All components of a field's repetition, unescaped."""
        raw = seg.raw(fld)
        e = self.encoding
        reps = raw.split(e.repetition)
        if rep > len(reps):
            return []
        return [unescape(c, e) if e.escape in c else c for c in reps[rep - 1].split(e.component)]

    def repetitions(self, seg: Segment, fld: int) -> int:
        raw = seg.raw(fld)
        return len(raw.split(self.encoding.repetition)) if raw else 0


def unescape(text: str, enc: Encoding) -> str:
    """Resolve ``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``, ``\\.br\\`` and ``\\Xhh\\``.

    Formatting escapes (``\\H\\``, ``\\N\\``) are dropped; an unknown or
    unterminated escape is kept as written rather than guessed at.
    """
    esc = enc.escape
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != esc:
            out.append(c)
            i += 1
            continue
        j = text.find(esc, i + 1)
        if j < 0:
            out.append(text[i:])
            break
        seq = text[i + 1 : j]
        named = _ESCAPE_NAMED.get(seq)
        if named:
            out.append(getattr(enc, named))
        elif seq in (".br", ".BR"):
            out.append("\n")
        elif seq in ("H", "N"):
            pass
        elif seq[:1] in ("X", "x") and len(seq) > 1 and len(seq) % 2 == 1:
            try:
                out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
            except ValueError:
                out.append(text[i : j + 1])
        else:
            out.append(text[i : j + 1])
        i = j + 1
    return "".join(out)


def escape(text: str, enc: Encoding = Encoding()) -> str:
    """Make a value safe to put in a field (the inverse of ``unescape``)."""
    e = enc.escape
    out = text.replace(e, f"{e}E{e}")
    for ch, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        out = out.replace(ch, f"{e}{code}{e}")
    return out.replace("\r\n", f"{e}.br{e}").replace("\r", f"{e}.br{e}").replace("\n", f"{e}.br{e}")


# --- header peeking (before decoding) ------------------------------------------


@dataclass(frozen=True)
class Header:
    """What can be read from the MSH bytes alone, also from a broken message."""

    field_sep: str
    fields: list[str]

    def get(self, n: int) -> str:
        # fields[0] is "MSH", fields[1] is MSH-2 (encoding characters): MSH-n is fields[n-1]
        return self.fields[n - 1] if 1 < n <= len(self.fields) else ""

    def first_component(self, n: int) -> str:
        enc = self.get(2)
        comp = enc[0] if enc else "^"
        return self.get(n).split(comp)[0]


def peek_header(raw: bytes) -> Header | None:
    """Split the MSH segment of raw bytes; None when there is no MSH to read."""
    start = raw.find(b"MSH")
    if start < 0 or start > 8 or len(raw) < start + 8:
        return None
    end = len(raw)
    for term in (b"\r", b"\n"):
        k = raw.find(term, start)
        if 0 <= k < end:
            end = k
    line = raw[start:end].decode("latin-1")
    if len(line) < 4:  # "MSH" ended by a segment break: no field separator to split on
        return None
    sep = line[3]
    if sep.isalnum() or sep in " \x00":
        return None
    return Header(sep, line.split(sep))


def codec_for(charset: str) -> str:
    name = charset.strip().upper()
    if not name:
        return ""
    codec = CHARSETS.get(name)
    if codec is None:
        raise ParseError(
            f"character set {charset!r} in MSH-18 is not supported "
            f"(use one of {', '.join(sorted(CHARSETS))})",
            "MSH-18",
            103,
        )
    return codec


def decode(raw: bytes, default_charset: str = "") -> tuple[str, str]:
    """Bytes -> text per MSH-18 (read from the ASCII header first). Returns (text, charset).

    Without MSH-18 (and no profile default) UTF-8 is tried, then Latin-1,
    the two sets practice systems actually send. With MSH-18 the bytes must
    decode as declared: ASCII that carries high bytes is read as UTF-8 or
    Latin-1 (a common mislabel), but UTF-8 that is not UTF-8 is refused,
    since guessing would change names.
    """
    raw = raw.strip(b"\x00")
    header = peek_header(raw)
    declared = header.first_component(18) if header else ""
    codec = codec_for(declared) or codec_for(default_charset)
    if codec and codec != "ascii":
        try:
            return raw.decode(codec), declared
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"the message is not valid {declared or default_charset} "
                f"(byte {exc.start} cannot be decoded)",
                "MSH-18",
                102,
            ) from None
    try:
        return raw.decode("utf-8"), declared
    except UnicodeDecodeError:
        return raw.decode("latin-1"), declared


# --- parsing ---------------------------------------------------------------------


def parse(text: str, *, strict_segments: bool = True) -> Hl7Message:
    """ER7 text -> ``Hl7Message``; raises ``ParseError`` naming the position at fault."""
    text = text.lstrip("\ufeff\x00 \t\r\n").rstrip("\x00")
    if not text.startswith("MSH") or len(text) < 8:
        raise ParseError("the message does not start with an MSH segment", "MSH", 100)
    enc = _encoding(text)
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    segments: list[Segment] = []
    for line in lines:
        line = line.rstrip("\x00")
        if not line.strip():
            continue
        name = line[:3]
        idx = len(segments) + 1
        if not _SEGMENT_ID.fullmatch(name) or (len(line) > 3 and line[3] != enc.field):
            if strict_segments:
                raise ParseError(
                    f"segment {idx} ({line[:12]!r}) is not a valid HL7 segment",
                    f"{name}^{idx}" if name.isalnum() else f"segment {idx}",
                    100,
                )
            continue
        if name == "MSH":
            if segments:
                raise ParseError(
                    f"segment {idx} is a second MSH: one frame must carry one message",
                    f"MSH^{idx}",
                    100,
                )
            fields = ["MSH", enc.field, *line[4:].split(enc.field)]
        else:
            fields = line.split(enc.field)
        segments.append(Segment(name, fields, idx))
    msg = Hl7Message(text=text, encoding=enc, segments=segments, charset="")
    msg.charset = msg.value(msg.msh, 18, 1)
    _check_header(msg)
    return msg


def _encoding(text: str) -> Encoding:
    sep = text[3]
    if sep.isalnum() or sep in " \r\n\x00":
        raise ParseError(f"MSH-1 field separator {sep!r} is not usable", "MSH-1", 102)
    enc_chars = text[4:].split(sep, 1)[0]
    if not 1 <= len(enc_chars) <= 5 or len(set(enc_chars)) != len(enc_chars):
        raise ParseError(
            f"MSH-2 encoding characters {enc_chars!r} are not 4 distinct characters",
            "MSH-2",
            102,
        )
    if any(c.isalnum() or c in " \r\n" or c == sep for c in enc_chars):
        raise ParseError(
            f"MSH-2 encoding characters {enc_chars!r} clash with the field separator or text",
            "MSH-2",
            102,
        )
    defaults = "^~\\&"
    chars = list(enc_chars[:4])
    for d in defaults:  # lenient: fill missing ones with unused defaults
        if len(chars) >= 4:
            break
        if d not in chars and d != sep:
            chars.append(d)
    if len(chars) < 4:
        # a default is taken by the field separator (``MSH^~^...``): nothing sane to guess
        raise ParseError(
            f"MSH-2 encoding characters {enc_chars!r} are incomplete and cannot be filled "
            f"in beside the field separator {sep!r}",
            "MSH-2",
            102,
        )
    return Encoding(sep, chars[0], chars[1], chars[2], chars[3])


def _check_header(msg: Hl7Message) -> None:
    if not msg.message_code:
        raise ParseError("MSH-9 message type is empty", "MSH-9", 101)
    if not msg.control_id:
        raise ParseError("MSH-10 message control id is empty", "MSH-10", 101)
    version = msg.version
    if not version:
        raise ParseError("MSH-12 version is empty", "MSH-12", 101)
    if reference(version) is None:
        raise ParseError(f"HL7 version {version!r} is not supported (2.3 to 2.8)", "MSH-12", 203)


@lru_cache(maxsize=32)
def reference(version: str) -> ModuleType | None:
    """hl7apy's reference library for a version (segment and message definitions)."""
    if version not in hl7apy.SUPPORTED_LIBRARIES or version in ("2.1", "2.2"):
        return None
    return hl7apy.load_library(version)


def known_segment(name: str, version: str) -> bool:
    """Whether hl7apy's tables define this segment for the version (Z-segments never)."""
    lib = reference(version)
    return bool(lib is not None and name in lib.SEGMENTS)


def known_structure(structure: str, version: str) -> bool:
    lib = reference(version)
    return bool(lib is not None and structure in lib.MESSAGES)


def parse_strict(text: str) -> object:
    """The full hl7apy parse (slow; for checking sample messages, not for intake)."""
    from hl7apy.parser import parse_message

    return parse_message(text.replace("\n", "\r"), find_groups=True)
