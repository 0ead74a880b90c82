"""MLLP framing: partial reads, back-to-back frames, garbage, oversized and unterminated frames."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7.mllp import END, START, Broken, Frame, FrameDecoder, frame

payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list:
    events, last = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        events += decoder.feed(data[last:cut])
        last = cut
    return events + decoder.feed(data[last:]) + decoder.close()


@given(st.lists(payloads, max_size=8), st.lists(st.integers(0, 10_000), max_size=20))
def test_frames_survive_any_split(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(b"\r\n" + frame(m) for m in messages)  # noise between frames too
    events = feed_in_chunks(FrameDecoder(), stream, cuts)
    assert events == [Frame(m) for m in messages]


@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=10))
@settings(max_examples=300)
def test_random_bytes_never_raise_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=256)
    for event in feed_in_chunks(decoder, data, cuts):
        if isinstance(event, Frame):
            assert len(event.payload) <= 256 and b"\x0b" not in event.payload
        else:
            assert isinstance(event, Broken) and len(event.head) <= 4096


def test_oversized_frame_is_reported_with_its_head_and_the_next_frame_survives() -> None:
    decoder = FrameDecoder(max_frame=1000)
    head = b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|BIG1|P|2.5\r"
    big = START + head + b"X" * 10_000_000 + END
    events = []
    for i in range(0, len(big), 65536):
        events += decoder.feed(big[i : i + 65536])
    events += decoder.feed(frame(b"MSH|small"))
    assert len(events) == 2
    assert isinstance(events[0], Broken) and events[0].head.startswith(head)
    assert events[0].size == len(big) - 3 and "larger" in events[0].reason
    assert events[1] == Frame(b"MSH|small")


def test_missing_trailer_then_new_frame() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(START + b"MSH|first" + START + b"MSH|second" + END)
    assert isinstance(events[0], Broken) and events[0].head == b"MSH|first"
    assert events[1] == Frame(b"MSH|second")


def test_fs_without_cr_ends_a_frame_at_once_even_across_reads() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(START + b"MSH|a\x1c") == [Frame(b"MSH|a")]
    assert decoder.feed(START + b"MSH|b\x1c\r") == [Frame(b"MSH|b")]
    assert decoder.discarded == 0


def test_cr_after_a_chunk_ending_in_fs_is_the_trailer_not_noise() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(START + b"MSH|a\x1c") == [Frame(b"MSH|a")]
    assert decoder.feed(b"\r") == [] and not decoder.in_frame
    assert decoder.feed(START + b"MSH|b" + END) == [Frame(b"MSH|b")]
    assert decoder.close() == [] and decoder.discarded == 0


def test_stream_end_inside_a_frame_is_broken() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"junk" + START + b"MSH|partial") == []
    [event] = decoder.close()
    assert isinstance(event, Broken) and event.head == b"MSH|partial"
    assert decoder.discarded == 4
    assert END == b"\x1c\r"
