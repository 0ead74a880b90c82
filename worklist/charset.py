"""Character sets of worklist answers: the query's when the answer fits it, else the device's.

Modern devices read UTF-8 (ISO_IR 192, the default); older ones only Latin-1
(ISO_IR 100) or plain ASCII. A device says which it reads in its query's
SpecificCharacterSet (0008,0005); an answer whose every value can be written
in that set is written in it, so a legacy device sees its umlauts without
being registered. An answer that does not fit (a Polish owner for a Latin-1
query) goes out in the registered device's set, UTF-8 by default, labelled
as such: correct bytes the device may not show, rather than wrong ones.

In the registered Latin-1 or ASCII sets, letters the set lacks are
transliterated ("Łukasz" -> "Lukasz", in ASCII "Müller" -> "Mueller").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.names import to_ascii

UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
ASCII = "ASCII"
DEFAULT = UTF8
SUPPORTED = (UTF8, LATIN1, ASCII)

# Single-valued sets without code extensions a query may name (PS3.3 C.12.1.1.2),
# with the Python codec that writes them. ISO 2022 sets (escape sequences) are
# not answered in; such a query gets the device's set.
QUERY_CODECS: dict[str, str] = {
    UTF8: "utf-8",
    LATIN1: "latin-1",
    ASCII: "ascii",
    "ISO_IR 101": "iso8859_2",  # Latin-2: Central European
    "ISO_IR 109": "iso8859_3",
    "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5",  # Cyrillic
    "ISO_IR 127": "iso8859_6",  # Arabic
    "ISO_IR 126": "iso8859_7",  # Greek
    "ISO_IR 138": "iso8859_8",  # Hebrew
    "ISO_IR 148": "iso8859_9",  # Latin-5: Turkish
    "ISO_IR 203": "iso8859_15",  # Latin-9
    "ISO_IR 166": "tis_620",  # Thai
    "GB18030": "gb18030",
    "GBK": "gbk",
}


def normalise(name: str | None) -> str:
    """The configured name as one of ``SUPPORTED``; anything unknown means the default."""
    if not name:
        return DEFAULT
    value = _term(name)
    if value in (UTF8, LATIN1, ASCII):
        return value
    return DEFAULT


def _term(name: str) -> str:
    value = name.strip().upper().replace("_", " ").replace("ISO IR", "ISO_IR")
    return ASCII if value in ("ASCII", "ISO_IR 6", "ISO 646") else value


def of_query(value: Any) -> str | None:
    """The set a query's (0008,0005) names, if answers can be written in it; else None.

    Absent or empty means the query names none (the device's setting applies,
    as before); several values are ISO 2022 code extensions, not answered in.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 1:
            return None
        value = value[0]
    if value is None or not str(value).strip():
        return None
    term = _term(str(value))
    return term if term in QUERY_CODECS else None


def specific_character_set(charset: str) -> str | None:
    """The (0008,0005) value answers carry; None for ASCII, the DICOM default."""
    return None if charset == ASCII else charset


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return "".join(c if ord(c) < 256 else to_ascii(c) for c in text).encode("latin-1")


def encode_text(text: str, charset: str, *, strict: bool = False) -> bytes:
    """Bytes of a person name or description in ``charset``.

    ``strict`` raises UnicodeEncodeError for a letter the set lacks (the answer
    does not fit); otherwise such letters are transliterated.
    """
    if charset == UTF8:
        return text.encode("utf-8")
    if strict:
        return text.encode(QUERY_CODECS.get(charset, "ascii"))
    if charset == LATIN1:
        return _latin1(text)
    if charset in QUERY_CODECS and charset != ASCII:
        return text.encode(QUERY_CODECS[charset], "replace")
    return to_ascii(text).encode("ascii")
