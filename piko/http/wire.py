"""HTTP/1.1 on the wire, sans-IO: bytes in, Request values out; responses out as bytes.

Like h11, this module never touches a socket, a loop or a clock: the asyncio shell
(server.py) feeds it what arrived and writes what it returns, so every parsing rule is
tested without a network. It speaks the small subset the ops endpoints need: HTTP/1.0 and
1.1, keep-alive, pipelining, and a POST body of at most body_limit bytes framed by
Content-Length (other methods' bodies are flagged, never read). Anything else is a
ProtocolError carrying the status to answer with, after which the connection is closed. Request.path is
percent-decoded, as uvicorn decodes scope["path"], so both servers route alike.
Imports nothing but the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

DEFAULT_HEADER_LIMIT = 8192
DEFAULT_BODY_LIMIT = 64 * 1024  # an ops action's body is a small JSON object
BODY_METHODS = ("POST",)  # the methods whose body is read (the others' bodies are refused by the server)
# RFC 9112 2.2 asks servers to ignore at least one empty line before a request line; a few
# are allowed (old clients sent CRLF after a body), an endless stream of them is an attack.
MAX_BLANK_LINES = 8

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")  # visible ASCII, no spaces or controls
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 9112 3.2 / RFC 3986 3.2.2: uri-host [":" port]; an empty value is allowed
_HOST = re.compile(r"\A(?:\[[0-9A-Za-z:.]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?\Z")
_ABSOLUTE_FORM = re.compile(r"\Ahttps?://", re.IGNORECASE)


class ProtocolError(Exception):
    """The peer broke the protocol; answer `status` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent
    path: str  # the target's path, percent-decoded, without query string or scheme://authority
    http_version: str  # "1.0" | "1.1"
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    is_keep_alive: bool
    has_body: bool  # the request announced a body; the connection is closed after the answer
    body: bytes = b""  # a POST's body, read whole (at most body_limit bytes)

    @property
    def query(self) -> str:
        """The query string, without the '?' (empty when there is none)."""
        return query_of(self.target)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class RequestParser:
    """Feed bytes with `feed`; take complete requests with `next_request` until it returns None."""

    def __init__(self, header_limit: int = DEFAULT_HEADER_LIMIT, body_limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.header_limit = header_limit
        self.body_limit = body_limit
        self._buffer = bytearray()
        self._waiting: tuple[Request, int] | None = None  # a POST's head, and the body length it announced
        self._blank_lines = 0  # skipped before the current request line
        self._scanned = 0  # bytes of the buffer already searched for the end of the headers
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed: nonzero means a request is under way."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_request(self) -> Request | None:
        """The next complete request, None if more bytes are needed; raises ProtocolError."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_request()
        except ProtocolError as exc:
            self._failed = exc
            self._buffer.clear()
            raise

    def _next_request(self) -> Request | None:
        if self._waiting is not None:
            return self._take_body(*self._waiting)
        buffer = self._buffer
        while buffer[:2] == b"\r\n" or buffer[:1] == b"\n":
            del buffer[: 2 if buffer[:1] == b"\r" else 1]
            self._blank_lines += 1
            if self._blank_lines > MAX_BLANK_LINES:
                raise ProtocolError(400, f"more than {MAX_BLANK_LINES} blank lines before the request line")
        # A client trickling bytes must not make each arrival rescan the whole head: the search
        # resumes 3 bytes before where the last one ended (the longest terminator is 4 bytes).
        end = _HEADER_END.search(buffer, max(0, self._scanned - 3), self.header_limit + 4)
        if end is None:
            self._scanned = len(buffer)
            self._check_incomplete(buffer)
            return None
        self._scanned = 0
        if end.start() > self.header_limit:
            raise ProtocolError(431, f"request headers exceed {self.header_limit} bytes")
        head = bytes(buffer[: end.start()])
        del buffer[: end.end()]
        self._blank_lines = 0
        request = parse_head(head)
        if request.method not in BODY_METHODS or not request.has_body:
            return request
        length = body_length(request.headers)
        if length > self.body_limit:
            raise ProtocolError(413, f"the request body ({length} bytes) exceeds {self.body_limit} bytes")
        return self._take_body(request, length)

    def _take_body(self, request: Request, length: int) -> Request | None:
        """The request with its body once all of it arrived; None (and it waits here) until then."""
        if len(self._buffer) < length:
            self._waiting = (request, length)
            return None
        self._waiting = None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return replace(request, body=body)

    def _check_incomplete(self, buffer: bytearray) -> None:  # the head is still arriving
        if len(buffer) <= self.header_limit:
            return
        if buffer.find(b"\n", 0, self.header_limit) < 0:
            raise ProtocolError(414, f"request line exceeds {self.header_limit} bytes")
        raise ProtocolError(431, f"request headers exceed {self.header_limit} bytes")


def parse_head(head: bytes) -> Request:
    """A request line and header lines (without the blank line) -> Request."""
    # Each LF ends a line, and one CR before it belongs to the line ending. The last line's
    # ending is part of the blank-line match that cut `head`, so a CR left on it is bare.
    *ended, last = head.split(b"\n")
    lines = [line[:-1] if line[-1:] == b"\r" else line for line in ended] + [last]
    method, target, version = _parse_request_line(lines[0])
    headers = tuple(_parse_header_line(line) for line in lines[1:])
    has_body = _has_body(headers)
    if version == "1.1":
        hosts = [v for k, v in headers if k == "host"]
        if len(hosts) != 1:
            raise ProtocolError(400, "an HTTP/1.1 request needs exactly one Host header")
    if any(k == "host" and not _HOST.match(v) for k, v in headers):
        raise ProtocolError(400, "the Host header is not a valid host[:port]")
    return Request(
        method=method,
        target=target,
        path=path_of(target),
        http_version=version,
        headers=headers,
        is_keep_alive=_is_keep_alive(version, headers),
        has_body=has_body,
    )


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    if b"\r" in line:  # RFC 9112 2.2: a bare CR is invalid
        raise ProtocolError(400, "the request line holds a bare CR")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "the request line must be 'METHOD target HTTP/1.x'")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise ProtocolError(400, "the method is not a valid token")
    if not _TARGET.match(target):
        raise ProtocolError(400, "the request target holds spaces, controls or non-ASCII bytes")
    matched = _VERSION.match(version)
    if matched is None:
        raise ProtocolError(400, "the protocol must be HTTP/1.0 or HTTP/1.1")
    if matched.group(1) != b"1" or matched.group(2) not in (b"0", b"1"):
        raise ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    return method.decode("ascii"), target.decode("ascii"), version[5:].decode("ascii")


def _parse_header_line(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError(400, "obsolete header line folding is not accepted")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise ProtocolError(400, "a header line must be 'Name: value' with a token name")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise ProtocolError(400, "a header value holds control characters")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _has_body(headers: tuple[tuple[str, str], ...]) -> bool:
    lengths = {v for k, v in headers if k == "content-length"}
    codings = [c.strip().lower() for k, v in headers if k == "transfer-encoding" for c in v.split(",")]
    if codings:
        if lengths:
            raise ProtocolError(400, "Content-Length and Transfer-Encoding together")
        if codings[-1] != "chunked":  # RFC 9112 6.3: the body length cannot be known
            raise ProtocolError(400, "a Transfer-Encoding must end in chunked")
        return True
    if not lengths:
        return False
    if len(lengths) > 1 or not next(iter(lengths)).isdigit() or not next(iter(lengths)).isascii():
        raise ProtocolError(400, "Content-Length must be one decimal number")
    return int(next(iter(lengths))) > 0


def body_length(headers: tuple[tuple[str, str], ...]) -> int:
    """The Content-Length of a request whose head passed parse_head; 411 for a chunked body."""
    length = next((v for k, v in headers if k == "content-length"), None)
    if length is None:
        raise ProtocolError(411, "a request body needs a Content-Length (chunked bodies are not accepted)")
    return int(length)


def _is_keep_alive(version: str, headers: tuple[tuple[str, str], ...]) -> bool:
    tokens = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
    if "close" in tokens:
        return False
    return version == "1.1" or "keep-alive" in tokens


def path_of(target: str) -> str:
    """The decoded path of a request target (origin-form, or absolute-form http(s)://host/path).

    Raises ProtocolError(400) for a bad percent-escape, or one that decodes to NUL or to
    bytes that are not UTF-8: such a path names no endpoint and must not reach a log as text.
    """
    if _ABSOLUTE_FORM.match(target):  # only a scheme makes it absolute-form: /x://y/ is a path
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    raw = target.partition("?")[0].partition("#")[0]
    return decode_path(raw) if "%" in raw else raw


def query_of(target: str) -> str:
    """The query string of a request target, without the '?' and any fragment."""
    return target.partition("?")[2].partition("#")[0]


def decode_path(raw: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise ProtocolError(400, "the request path holds a '%' that is not followed by two hex digits")
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(400, "the request path decodes to bytes that are not UTF-8") from None
    if "\x00" in path:
        raise ProtocolError(400, "the request path decodes to a NUL byte")
    return path


# -- responses ----------------------------------------------------------------------------------


_RFC9110_PHRASES = {411: "Length Required", 413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
                    422: "Unprocessable Content"}  # renamed since http.HTTPStatus's (RFC 7231) names


def reason_phrase(status: int) -> str:
    if status in _RFC9110_PHRASES:
        return _RFC9110_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def format_response_head(
    status: int,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    content_length: int,
    *,
    is_keep_alive: bool,
    date: str | None = None,
) -> bytes:
    """Status line and headers, adding Content-Length, Connection and Date.

    For HEAD the caller passes the length the GET body would have and writes no body.
    """
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {content_length}")
    lines.append("Connection: keep-alive" if is_keep_alive else "Connection: close")
    if date is not None:
        lines.append(f"Date: {date}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_body(status: int, reason: str) -> bytes:
    return f"{status} {reason_phrase(status)}: {reason}\n".encode()
