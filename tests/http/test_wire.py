"""The sans-IO HTTP/1.1 parser and formatter, without sockets or a loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piko.http.wire import MAX_BLANK_LINES, ProtocolError, RequestParser, format_response_head


def parse_all(data: bytes, header_limit: int = 8192) -> list:
    parser = RequestParser(header_limit)
    parser.feed(data)
    out = []
    while (request := parser.next_request()) is not None:
        out.append(request)
    return out


def test_a_simple_request_parses_to_method_path_and_headers() -> None:
    (request,) = parse_all(b"GET /metrics?name=x HTTP/1.1\r\nHost: a\r\nAccept:  text/plain \r\n\r\n")
    assert (request.method, request.path, request.target) == ("GET", "/metrics", "/metrics?name=x")
    assert request.header("accept") == "text/plain"
    assert request.is_keep_alive and not request.has_body


def test_incomplete_request_waits_for_more_bytes() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert parser.next_request() is None
    assert parser.buffered > 0
    parser.feed(b"\r\n")
    assert parser.next_request() is not None
    assert parser.buffered == 0


def test_pipelined_requests_come_out_in_order() -> None:
    data = b"".join(f"GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5))
    assert [r.path for r in parse_all(data)] == [f"/{i}" for i in range(5)]


def test_bare_lf_line_endings_and_leading_blank_lines_are_tolerated() -> None:
    (request,) = parse_all(b"\r\n\nGET /healthz HTTP/1.0\nX: y\n\n")
    assert request.path == "/healthz" and request.http_version == "1.0"


@pytest.mark.parametrize(
    ("version", "connection", "is_keep_alive"),
    [("1.1", "", True), ("1.1", "close", False), ("1.1", "Keep-Alive, Close", False),
     ("1.0", "", False), ("1.0", "keep-alive", True)],
)
def test_keep_alive_follows_version_and_connection_header(
    version: str, connection: str, is_keep_alive: bool
) -> None:
    header = f"Connection: {connection}\r\n" if connection else ""
    (request,) = parse_all(f"GET / HTTP/{version}\r\nHost: a\r\n{header}\r\n".encode())
    assert request.is_keep_alive is is_keep_alive


def test_absolute_form_target_yields_its_path() -> None:
    (request,) = parse_all(b"GET http://example.com:8000/readyz?x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert request.path == "/readyz"


def test_a_body_is_flagged_and_chunked_counts_as_a_body() -> None:
    assert parse_all(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")[0].has_body is False
    assert parse_all(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")[0].has_body is True
    assert parse_all(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")[0].has_body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \xd9\xa3\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 9000, 431),
        (b"GET /" + b"x" * 9000, 414),
        (b"GET /healthz HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),  # a bare CR (RFC 9112 2.2)
        (b"GET /healthz\rX HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  # RFC 9112 6.3
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),  # RFC 9112 3.2
        (b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", 400),
    ],
)
def test_malformed_input_raises_protocol_error_with_status(raw: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_all(raw)
    assert caught.value.status == status


@pytest.mark.parametrize("host", ["", "a", "example.com:8000", "[::1]:80", "10.0.0.1", "a-b.c_d~e:"])
def test_valid_hosts_are_accepted(host: str) -> None:
    (request,) = parse_all(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert request.header("host") == host


def test_a_head_trickled_byte_by_byte_is_scanned_once_not_once_per_byte() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"p" * 8000 + b"\r\n\r\n"
    parser = RequestParser()
    searched = 0
    original = parser._next_request

    for i in range(len(head)):
        parser.feed(head[i : i + 1])
        searched += parser.buffered - max(0, parser._scanned - 3)  # what this call will search
        request = original()
        assert (request is None) == (i < len(head) - 1)
    assert searched < 5 * len(head)  # a rescan per byte would be ~len(head)**2 / 2


def test_reason_phrases_are_rfc_9110s() -> None:
    assert format_response_head(413, (), 0, is_keep_alive=False).startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert format_response_head(414, (), 0, is_keep_alive=False).startswith(b"HTTP/1.1 414 URI Too Long\r\n")


def test_after_an_error_the_parser_stays_failed() -> None:
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_request()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_request()


def test_header_limit_counts_the_whole_head() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 60 + b"\r\n\r\n"
    assert parse_all(head, header_limit=len(head))
    with pytest.raises(ProtocolError):
        parse_all(head, header_limit=50)


def test_response_head_has_status_length_connection_and_date() -> None:
    head = format_response_head(404, [("Content-Type", "text/plain")], 12, is_keep_alive=False,
                                date="Mon, 01 Jan 2024 00:00:00 GMT")
    assert head == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                    b"Connection: close\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    try:
        parse_all(data, header_limit=512)
    except ProtocolError as exc:
        assert 400 <= exc.status < 600


paths = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/", max_size=30).map(lambda p: "/" + p)


@settings(max_examples=200, deadline=None)
@given(st.lists(paths, min_size=1, max_size=5), st.lists(st.integers(1, 50), max_size=20))
def test_any_split_of_the_stream_gives_the_same_requests(targets: list[str], cuts: list[int]) -> None:
    data = b"".join(f"HEAD {t} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for t in targets)
    parser = RequestParser()
    seen = []
    position = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[position : position + cut])
        position += cut
        while (request := parser.next_request()) is not None:
            seen.append(request.path)
    parser.feed(data[position:])
    while (request := parser.next_request()) is not None:
        seen.append(request.path)
    assert seen == targets


@pytest.mark.parametrize(
    ("target", "path"),
    [("/%68ealthz", "/healthz"), ("/a%2Fb", "/a/b"), ("/caf%C3%A9?x=%zz", "/café"), ("/plain", "/plain"),
     ("HTTP://h/%68ealthz", "/healthz"), ("https://h:1", "/")],
)
def test_the_path_is_percent_decoded(target: str, path: str) -> None:
    (request,) = parse_all(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert request.path == path and request.target == target


@pytest.mark.parametrize("target", ["/%zz", "/%4", "/a%", "/%00", "/x%ffy", "/%C3"])
def test_bad_escapes_and_nul_or_non_utf8_paths_are_400(target: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_all(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("target", "path"),
    [("/x://y/healthz", "/x://y/healthz"), ("/?next=http://h/healthz", "/"), ("ftp://h/healthz", "ftp://h/healthz")],
)
def test_only_an_http_scheme_makes_a_target_absolute_form(target: str, path: str) -> None:
    (request,) = parse_all(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert request.path == path


def test_a_few_leading_blank_lines_are_skipped_but_not_endlessly() -> None:
    assert parse_all(b"\r\n" * MAX_BLANK_LINES + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    parser = RequestParser()
    for _ in range(MAX_BLANK_LINES):  # fed one at a time, as a trickling client sends them
        parser.feed(b"\r\n")
        assert parser.next_request() is None
    parser.feed(b"\n")
    with pytest.raises(ProtocolError) as caught:
        parser.next_request()
    assert caught.value.status == 400


def test_blank_lines_are_counted_per_request() -> None:
    one = b"\r\n" * MAX_BLANK_LINES + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert len(parse_all(one * 3)) == 3


def test_a_post_body_is_read_whole_even_when_it_arrives_in_pieces() -> None:
    parser = RequestParser()
    parser.feed(b"POST /api/jobs/a/run HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n{\"by\"")
    assert parser.next_request() is None  # the head is in, the body is not
    parser.feed(b": \"x\"}GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    post, get = parser.next_request(), parser.next_request()
    assert post is not None and (post.method, post.path, post.body) == ("POST", "/api/jobs/a/run", b'{"by": "x"}')
    assert post.has_body and get is not None and get.path == "/healthz" and get.body == b""


def test_a_post_without_a_body_needs_no_content_length() -> None:
    (request,) = parse_all(b"POST /api/jobs/a/pause HTTP/1.1\r\nHost: a\r\n\r\n")
    assert request.body == b"" and not request.has_body and request.is_keep_alive


def test_a_get_body_is_flagged_but_never_read() -> None:
    parser = RequestParser(body_limit=4)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
    request = parser.next_request()
    assert request is not None and request.has_body and request.body == b""


@pytest.mark.parametrize(
    ("head", "status"),
    [(b"Content-Length: 65537", 413), (b"Content-Length: 99999999999999999999", 413),
     (b"Transfer-Encoding: chunked", 411), (b"Content-Length: -1", 400), (b"Content-Length: 1e3", 400),
     (b"Content-Length: 3\r\nContent-Length: 4", 400)],
    ids=["over-the-limit", "huge", "chunked", "negative", "not-a-number", "two-lengths"],
)
def test_a_post_body_of_unknown_or_too_large_size_is_refused(head: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_all(b"POST /api/jobs/a/run HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n\r\n")
    assert caught.value.status == status


def test_the_body_limit_is_a_parameter() -> None:
    assert parse_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd")[0].body == b"abcd"
    with pytest.raises(ProtocolError, match="exceeds 3 bytes"):
        parser = RequestParser(body_limit=3)
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd")
        parser.next_request()


def test_the_query_string_comes_without_the_question_mark_or_a_fragment() -> None:
    (request,) = parse_all(b"GET /api/runs?status=FAILED&job=a%20b#top HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (request.path, request.query) == ("/api/runs", "status=FAILED&job=a%20b")
    assert parse_all(b"GET /api/runs HTTP/1.1\r\nHost: a\r\n\r\n")[0].query == ""
