"""shared/sse.py: the incremental SSE parser and the frame writer, through their public calls only."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from shared.sse import DONE, EventTooLarge, SSEParser, frame

Event = tuple[str, bytes]

# Every feature at once: named and unnamed events, a comment, an ignored `id`, `data:` without its
# space, a multi-line event, two spaces (only the first is the separator), empty data, blank
# separators without an event, and multibyte UTF-8 in both an event name and a payload.
STREAM_LINES = [
    b": keep-alive",
    b"",
    b"event: message_start",
    b'data: {"type":"message_start"}',
    b"",
    b"data:no-space",
    b"id: 7",
    b"",
    b"data: first line",
    b"data: second line",
    b"data:",
    b"data: fourth line",
    b"",
    b"",
    b"",
    b"data:  two spaces",
    b"",
    b"event: caf\xc3\xa9",
    b"data: \xe2\x82\xac 5",
    b"",
    b"data:",
    b"",
    b"data: [DONE]",
    b"",
]
EXPECTED: list[Event] = [
    ("message_start", b'{"type":"message_start"}'),
    ("", b"no-space"),
    ("", b"first line\nsecond line\n\nfourth line"),
    ("", b" two spaces"),
    ("caf\u00e9", b"\xe2\x82\xac 5"),
    ("", b""),
    ("", b"[DONE]"),
]


def stream(newline: bytes) -> bytes:
    return b"".join(line + newline for line in STREAM_LINES)


def parse(pieces: Iterable[bytes]) -> list[Event]:
    parser = SSEParser()
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed_bytes(piece))
    events.extend(parser.flush())
    return events


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_whole_stream_in_one_read(newline: bytes) -> None:
    assert parse([stream(newline)]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_stream_split_in_two_reads_at_every_byte_position(newline: bytes) -> None:
    data = stream(newline)
    for cut in range(len(data) + 1):
        assert parse([data[:cut], data[cut:]]) == EXPECTED, f"split at byte {cut}: {data[:cut]!r}"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_stream_split_in_three_reads_at_every_pair_of_positions(newline: bytes) -> None:
    data = stream(newline)
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            pieces = [data[:first], data[first:second], data[second:]]
            assert parse(pieces) == EXPECTED, f"split at bytes {first} and {second}"


def test_a_stream_fed_one_byte_at_a_time() -> None:
    data = stream(b"\r\n")
    assert parse(data[i : i + 1] for i in range(len(data))) == EXPECTED


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    parser = SSEParser()
    assert list(parser.feed_bytes(b"data: a\n")) == []
    assert list(parser.feed_bytes(b"\ndata: b\n\nda")) == [("", b"a"), ("", b"b")]
    assert list(parser.feed_bytes(b"ta: c\r\n")) == []
    assert list(parser.feed_bytes(b"\r\n")) == [("", b"c")]
    assert list(parser.flush()) == []


def test_line_feeding_accepts_lines_with_or_without_their_ending() -> None:
    parser = SSEParser()
    events: list[Event] = []
    for line in [b"event: e\r\n", b"data: x\n", b"data: y", b"\r\n"]:
        events.extend(parser.feed(line))
    assert events == [("e", b"x\ny")]


def test_an_event_name_does_not_outlive_its_event() -> None:
    # A named event, then an unnamed one; and a name with no data before a blank line is dropped.
    assert parse([b"event: a\ndata: 1\n\ndata: 2\n\n"]) == [("a", b"1"), ("", b"2")]
    assert parse([b"event: lost\n\ndata: 3\n\n"]) == [("", b"3")]


def test_comments_and_blank_lines_alone_yield_nothing() -> None:
    assert parse([b": ping\n\n:\n\n\n\n\r\n: data: not data\n\n"]) == []


def test_a_data_field_with_no_colon_is_an_empty_value() -> None:
    # WHATWG: a line without a colon is a field name with an empty value.
    assert parse([b"data\n\n"]) == [("", b"")]
    assert parse([b"data\ndata: x\n\n"]) == [("", b"\nx")]


def test_fields_other_than_data_and_event_are_ignored() -> None:
    assert parse([b"id: 1\nretry: 10\nfoo: bar\ndata: x\n\n"]) == [("", b"x")]


@pytest.mark.parametrize(
    "tail",
    [b"data: last", b"data: last\n", b"data: last\r\n", b"event: end\ndata: last"],
    ids=["no-newline", "LF-no-blank", "CRLF-no-blank", "named"],
)
def test_flush_yields_a_last_event_without_its_closing_blank_line(tail: bytes) -> None:
    parser = SSEParser()
    assert list(parser.feed_bytes(b"data: first\n\n" + tail)) == [("", b"first")]
    name = "end" if tail.startswith(b"event") else ""
    assert list(parser.flush()) == [(name, b"last")]
    assert list(parser.flush()) == []  # flushed once only


def test_flush_of_a_half_line_that_is_not_data_yields_nothing() -> None:
    parser = SSEParser()
    assert list(parser.feed_bytes(b"data: a\n\n: keep-al")) == [("", b"a")]
    assert list(parser.flush()) == []


def test_a_parser_keeps_working_after_a_flush() -> None:
    parser = SSEParser()
    assert list(parser.feed_bytes(b"data: a")) == []
    assert list(parser.flush()) == [("", b"a")]
    assert list(parser.feed_bytes(b"data: b\n\n")) == [("", b"b")]


def test_frame_and_done_are_what_openai_sends_and_parse_back() -> None:
    payload = b'{"id":"c1","choices":[]}'
    assert frame(payload) == b'data: {"id":"c1","choices":[]}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert parse([frame(payload) + frame(b"x: y") + DONE]) == [("", payload), ("", b"x: y"), ("", b"[DONE]")]


# ---- bounds: a hostile stream cannot exhaust the worker ----------------------------------------


def test_a_line_longer_than_the_limit_raises_however_it_is_split() -> None:
    for pieces in ([b"data: " + b"x" * 200], [b"data: "] + [b"x"] * 200):
        parser = SSEParser(max_line_bytes=100)
        with pytest.raises(EventTooLarge):
            for piece in pieces:
                list(parser.feed_bytes(piece))


def test_an_event_of_many_lines_longer_than_the_limit_raises() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(EventTooLarge):
        list(parser.feed_bytes(b"data: " + b"x" * 60 + b"\n" + b"data: " + b"y" * 60 + b"\n"))


def test_lines_and_events_within_the_limit_pass_and_the_count_restarts_per_line() -> None:
    parser = SSEParser(max_line_bytes=100)
    events = []
    for _ in range(50):  # far more than the limit in all, never in one line or event
        events += list(parser.feed_bytes(b"data: " + b"z" * 40))
        events += list(parser.feed_bytes(b"\n\n"))
    assert events == [("", b"z" * 40)] * 50
