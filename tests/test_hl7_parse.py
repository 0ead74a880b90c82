"""ER7 parsing: lenient reading, strict rejection, charsets, escapes; fuzzed input never crashes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7 import ack
from adapters.hl7.parse import (
    Encoding,
    ParseError,
    decode,
    escape,
    parse,
    parse_strict,
    peek_header,
    unescape,
)
from adapters.hl7.prepare import prepare
from adapters.hl7.profile import load_profiles
from hub.mappings import default_mappings_dir
from tests.mllp_client import SAMPLES, sample

PROFILES = load_profiles(default_mappings_dir() / "hl7")
# Few symbols, so that short random headers often hit separators and segment breaks.
_HEADERISH = st.lists(st.sampled_from(list(b"MSH|^~\\&\r\nA1 \x00\x1c\xc3\xa9")), max_size=40).map(
    bytes
)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.hl7")), ids=lambda p: p.name)
def test_every_sample_parses(path) -> None:  # type: ignore[no-untyped-def]
    text, _ = decode(path.read_bytes(), "8859/1" if "animal_first" in path.name else "")
    msg = parse(text)
    assert msg.control_id and msg.message_code in ("ORM", "OMI", "ADT")
    assert msg.first("PID") is not None


@pytest.mark.parametrize("name", ["orm_o01_nw_v251_utf8.hl7", "adt_a08.hl7", "omi_o23_nw_ipc.hl7"])
def test_samples_are_real_hl7_for_hl7apy(name: str) -> None:
    msg = parse_strict(sample(name).decode())
    assert msg.msh.msh_10.to_er7()  # type: ignore[attr-defined]


def test_charsets_from_msh18() -> None:
    latin = sample("orm_o01_v23_latin1.hl7")
    text, charset = decode(latin)
    assert charset == "8859/1" and "Schröder" in text
    utf8 = sample("orm_o01_nw_v251_utf8.hl7")
    assert "Müller" in decode(utf8)[0]
    # no MSH-18: UTF-8 when it is UTF-8, else Latin-1
    bare = "MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.5\rPID|1||X||Müller^Rex\r"
    assert "Müller" in decode(bare.encode("utf-8"))[0]
    assert "Müller" in decode(bare.encode("latin-1"))[0]
    # declared UTF-8 but it is not: refused rather than guessed
    with pytest.raises(ParseError) as err:
        decode(utf8.replace("Müller".encode(), "Müller".encode("latin-1")))
    assert err.value.location == "MSH-18"


def test_lenient_line_ends_blank_lines_and_nuls() -> None:
    text = "MSH|^~\\&|A|B|C|D|1||ADT^A08|9|P|2.5\r\n\r\nPID|1||X||O^A\nPV1|1\x00\x00"
    msg = parse(text)
    assert [s.name for s in msg.segments] == ["MSH", "PID", "PV1"]
    assert msg.value(msg.first("PID"), 5, 2) == "A"  # type: ignore[arg-type]


def test_custom_encoding_characters_and_escapes() -> None:
    msg = parse(sample("orm_o01_custom_encoding.hl7").decode())
    assert msg.encoding == Encoding("#", "!", "~", "\\", "&")
    assert msg.type == "ORM^O01" and msg.version == "2.5"
    pid = msg.first("PID")
    assert pid is not None and msg.value(pid, 5, 1) == "Côté"
    enc = Encoding()
    assert unescape(r"A\F\B\S\C\T\D\R\E\E\F\.br\G\X41\\H\x\N\y", enc) == "A|B^C&D~E\\F\nGAxy"
    assert unescape("open \\F", enc) == "open \\F"


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("PID|1||X", "MSH"),
        ("MSHA^~\\&|x", "MSH-1"),
        ("MSH|^^\\&|A|B|C|D|1||ADT^A08|1|P|2.5", "MSH-2"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A08||P|2.5", "MSH-10"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|", "MSH-12"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.5\rpid|1", "pid^2"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.5\rMSH|^~\\&|A", "MSH^2"),
    ],
)
def test_strict_where_meaning_would_be_lost(text: str, location: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(text)
    assert err.value.location == location


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_parse_of_any_text_raises_only_parse_error(text: str) -> None:
    for candidate in (text, "MSH|^~\\&|" + text, "MSH" + text):
        try:
            msg = parse(candidate)
        except ParseError:
            continue
        for seg in msg.segments:
            for n in range(1, len(seg.fields) + 1):
                msg.value(seg, n, 1)
                msg.components(seg, n)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_decode_of_any_bytes_raises_only_parse_error(data: bytes) -> None:
    for candidate in (data, b"MSH|^~\\&|A|B|C|D|1||ORM^O01|1|P|2.5|||||" + data):
        with contextlib.suppress(ParseError):
            decode(candidate)


@given(st.text(max_size=80).filter(lambda t: "\r" not in t and "\n" not in t))
def test_escape_roundtrip(value: str) -> None:
    enc = Encoding()
    escaped = escape(value, enc)
    assert not any(c in escaped for c in "|^&~")
    assert unescape(escaped, enc) == value


@pytest.mark.parametrize(
    ("data", "location"),
    [(b"MSH\r^~\\&\rA\r", "MSH-1"), (b"MSH^~^A^B\r", "MSH-2")],
)
def test_headers_that_once_raised_index_error_are_parse_errors(data: bytes, location: str) -> None:
    peek_header(data)
    text, _ = decode(data)
    with pytest.raises(ParseError) as err:
        parse(text)
    assert err.value.location == location


def _assert_answerable(data: bytes) -> None:
    """Whatever a frame holds: a Prepared (never an exception) that an ACK can be built for."""
    with contextlib.suppress(ParseError):
        peek_header(data)
    prepared = prepare(data, PROFILES)
    if prepared.msg is None:
        assert prepared.error is not None and prepared.error.code
    code = "AA" if prepared.error is None else "AR"
    text = ack.build(code, prepared.addressing, prepared.error)
    ack.encode(text, prepared.charset or prepared.addressing.charset)
    assert text.startswith("MSH|^~\\&|") and f"\rMSA|{code}|" in text


@given(st.one_of(st.binary(max_size=400), _HEADERISH, _HEADERISH.map(lambda b: b"MSH" + b)))
@settings(max_examples=1000)
def test_any_bytes_in_a_frame_are_answerable(data: bytes) -> None:
    _assert_answerable(data)
    _assert_answerable(b"MSH|^~\\&|A|B|C|D|1||ORM^O01|X1|P|2.5|||||" + data)
