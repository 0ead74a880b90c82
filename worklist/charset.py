"""Character sets of worklist answers, chosen per calling device.

Modern devices read UTF-8 (ISO_IR 192, the default); older ones only Latin-1
(ISO_IR 100) or plain ASCII. For those, letters they cannot show are
transliterated ("Łukasz" -> "Lukasz", in ASCII "Müller" -> "Mueller") rather
than sent as bytes the device would misread.
"""

from __future__ import annotations

from hub.names import to_ascii

UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
ASCII = "ASCII"
DEFAULT = UTF8
SUPPORTED = (UTF8, LATIN1, ASCII)


def normalise(name: str | None) -> str:
    """The configured name as one of ``SUPPORTED``; anything unknown means the default."""
    if not name:
        return DEFAULT
    value = name.strip().upper().replace("_", " ").replace("ISO IR", "ISO_IR")
    if value in ("ASCII", "ISO_IR 6", "ISO 646"):
        return ASCII
    if value in (UTF8, LATIN1):
        return value
    return DEFAULT


def specific_character_set(charset: str) -> str | None:
    """The (0008,0005) value answers carry; None for ASCII, the DICOM default."""
    return None if charset == ASCII else charset


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return "".join(c if ord(c) < 256 else to_ascii(c) for c in text).encode("latin-1")


def encode_text(text: str, charset: str) -> bytes:
    """Bytes of a person name or description in the device's character set."""
    if charset == UTF8:
        return text.encode("utf-8")
    if charset == LATIN1:
        return _latin1(text)
    return to_ascii(text).encode("ascii")
