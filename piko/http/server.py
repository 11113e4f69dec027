"""The ops HTTP server: wire.py's parser and formatter under an asyncio shell.

One asyncio.Protocol per connection feeds the sans-IO parser; one task per connection
answers its requests in order (keep-alive, pipelining). Nothing a client sends may crash
the server or stall the loop: requests are bounded (header_limit; a POST body, body_limit),
slow or silent clients are timed out (header_timeout_s from a request's first byte, blank
lines included, or from the connection's start, for the head and body together;
idle_timeout_s between requests), writes respect flow
control, and at max_connections a new connection first takes the place of the connection
that has idled longest between requests (a server may close an idle keep-alive connection
at any time, RFC 9112 9.3); only when none idles does it get a 503 and is closed at once,
so clients holding keep-alive connections open cannot starve a liveness probe.
A body in pieces (/metrics) is written piece by piece, never joined.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import logging
from types import TracebackType

from piko.clock import SystemClock
from piko.errors import ConfigError
from piko.http.routes import Call, OpsRoutes, Response, text_response
from piko.http.wire import (
    DEFAULT_BODY_LIMIT,
    DEFAULT_HEADER_LIMIT,
    ProtocolError,
    Request,
    RequestParser,
    error_body,
    format_response_head,
)

log = logging.getLogger("piko.http")
_WALL = SystemClock()  # only for the Date header

WRITE_SLICE = 256 * 1024
READ_PAUSE_AT = 64 * 1024  # stop reading a pipelining client that is this far ahead
# After the last response the write side is shut and input is read and dropped for a while
# before closing: closing with unread input would send a RST that can destroy the response.
LINGER_S = 1.0
_BUSY = format_response_head(503, (("Content-Type", "text/plain; charset=utf-8"),),
                             len(b"503 Service Unavailable: too many connections\n"),
                             is_keep_alive=False) + b"503 Service Unavailable: too many connections\n"


class HttpServer:
    """`async with HttpServer(routes, host, port) as srv:` serves until the block ends."""

    def __init__(
        self,
        routes: OpsRoutes,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        max_connections: int = 256,
        header_limit: int = DEFAULT_HEADER_LIMIT,
        body_limit: int = DEFAULT_BODY_LIMIT,
        header_timeout_s: float = 10.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.header_limit = header_limit
        self.body_limit = body_limit
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._rejected: set[_Connection] = set()  # answered 503, lingering before the close
        self._date = ("", -1)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def __aenter__(self) -> HttpServer:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._new_connection, self.host, self.port)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(
                f"cannot serve HTTP on {_url_host(self.host)}:{self.port}: {why}"
                " (set http_port or --http HOST:PORT)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ops HTTP server listening on http://%s:%s", _url_host(self.host), self.port)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in [*self._connections, *self._rejected]:
            connection.abort()
        await self._server.wait_closed()
        self._server = None

    def http_date(self, now: float) -> str:
        second = int(now)
        if self._date[1] != second:
            self._date = (email.utils.formatdate(now, usegmt=True), second)
        return self._date[0]

    def _new_connection(self) -> asyncio.Protocol:
        return _Connection(self)

    def _opened(self, connection: _Connection) -> bool:
        if len(self._connections) >= self.max_connections and not self._evict_idlest():
            self._rejected.add(connection)
            return False
        self._connections.add(connection)
        return True

    def _evict_idlest(self) -> bool:
        idle = [c for c in self._connections if c.idle_since is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        self._connections.discard(victim)
        self._rejected.add(victim)  # lingers there until it is closed
        victim.end_idle()
        return True

    def _closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        self._rejected.discard(connection)


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = RequestParser(server.header_limit, server.body_limit)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None  # the peer's address, for the routes that check who asks
        self.task: asyncio.Task[None] | None = None
        # When the request being read started: the connection's start for the first one, else
        # its first byte (a blank line counts); None between requests, while only idling.
        self.request_started_at: float | None = None
        self.has_request_bytes = False
        self.is_eof = False
        self.is_reading_paused = False
        self.is_lingering = False
        self.idle_since: float | None = None  # set while waiting, between requests, for the next
        self.is_evicted = False  # closed while idle to make room: serve nothing more
        self._linger_timer: asyncio.TimerHandle | None = None
        self._wakeup: asyncio.Future[bool] | None = None
        self._writable: asyncio.Future[None] | None = None

    # -- protocol callbacks (from the loop) ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if not self.server._opened(self):
            transport.write(_BUSY)
            self.close_gracefully()
            return
        transport.set_write_buffer_limits(high=WRITE_SLICE)
        self.request_started_at = self.loop.time()  # a silent client gets header_timeout_s
        self.task = self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.is_lingering:
            return
        if self.request_started_at is None:
            self.request_started_at = self.loop.time()
        self.has_request_bytes = True
        self.parser.feed(data)
        if self.parser.buffered > READ_PAUSE_AT and self.transport is not None:
            self.transport.pause_reading()
            self.is_reading_paused = True
        self._wake(True)

    def eof_received(self) -> bool:
        self.is_eof = True
        self._wake(True)
        # while answering, keep the write side open; when lingering, the close can happen now
        return not self.is_lingering

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_eof = True
        self._wake(True)
        self.resume_writing()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.server._closed(self)

    def close_gracefully(self) -> None:
        """Flush, shut the write side, drop further input, close on the peer's EOF or after LINGER_S."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.is_lingering:
            return
        if self.is_eof or not transport.can_write_eof():
            transport.close()
            return
        self.is_lingering = True
        transport.write_eof()
        if self.is_reading_paused:
            transport.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        # close() would wait for the buffer to drain: a peer that stopped reading never lets it
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def end_idle(self) -> None:
        """Close this connection, idle between requests, to make room for a new one."""
        self.is_evicted = True
        self._wake(False)

    def _wake(self, has_data: bool) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(has_data)

    # -- the request loop -------------------------------------------------------------------

    async def _serve(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while not transport.is_closing():
                request = await self._next_request()
                if request is None:
                    break
                if not await self._answer(request):
                    break
        except ProtocolError as exc:
            self._write(text_response(exc.status, error_body(exc.status, exc.reason).decode()),
                        is_keep_alive=False, has_body=True)
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception:
            log.exception("ops HTTP connection failed")
            transport.abort()
        finally:
            self.close_gracefully()

    async def _next_request(self) -> Request | None:
        """The next request, or None when the peer left or idled out; ProtocolError(408) when slow."""
        while not self.is_evicted:
            request = self.parser.next_request()
            if request is not None:
                is_pipelined = self.parser.buffered > 0  # the next request's clock starts now
                self.request_started_at = self.loop.time() if is_pipelined else None
                self.has_request_bytes = is_pipelined
                return request
            if self.is_reading_paused and self.transport is not None:
                self.transport.resume_reading()
                self.is_reading_paused = False
            if self.is_eof:
                return None
            if not await self._wait_for_data():
                if self.has_request_bytes:
                    raise ProtocolError(408, "the request headers did not arrive in time")
                return None
        return None

    async def _wait_for_data(self) -> bool:
        server = self.server
        if self.request_started_at is not None:
            deadline = self.request_started_at + server.header_timeout_s
        else:
            self.idle_since = self.loop.time()
            deadline = self.idle_since + server.idle_timeout_s
        self._wakeup = self.loop.create_future()
        timer = self.loop.call_at(deadline, self._wake, False)
        try:
            return await self._wakeup
        finally:
            timer.cancel()
            self._wakeup = None
            self.idle_since = None

    async def _answer(self, request: Request) -> bool:
        """Answer one request; True if the connection stays open for the next."""
        if request.has_body and request.method in ("GET", "HEAD"):
            response = text_response(413, "413 Content Too Large: requests carry no body\n")
        else:
            try:
                call = Call(request.method, request.path, request.query, request.headers, request.body, self.client)
                response = await self.server.routes.handle(request.method, request.path, call)
            except Exception:
                log.exception("ops endpoint %s %s failed", request.method, request.path)
                response = text_response(500, "500 Internal Server Error\n")
        is_keep_alive = request.is_keep_alive and not request.has_body
        await self._write_async(response, is_keep_alive=is_keep_alive, has_body=request.method != "HEAD")
        return is_keep_alive

    def _write(self, response: Response, *, is_keep_alive: bool, has_body: bool) -> None:
        assert self.transport is not None
        self.transport.write(self._head(response, is_keep_alive) + (response.body if has_body else b""))

    async def _write_async(self, response: Response, *, is_keep_alive: bool, has_body: bool) -> None:
        transport = self.transport
        assert transport is not None
        head = self._head(response, is_keep_alive)
        chunks = response.chunks if has_body else ()
        if len(chunks) <= 1 and response.content_length <= WRITE_SLICE:
            transport.write(head + b"".join(chunks))  # one segment for the small answers
        else:
            transport.write(head)
            for chunk in chunks:
                view = memoryview(chunk)
                for start in range(0, len(chunk), WRITE_SLICE):
                    transport.write(view[start : start + WRITE_SLICE])
                    await self._drain(is_between_slices=True)
        await self._drain()

    async def _drain(self, *, is_between_slices: bool = False) -> None:
        # A reader that stops reading is cut off after idle_timeout_s instead of pinning memory.
        if self._writable is not None:
            await asyncio.wait_for(asyncio.shield(self._writable), self.server.idle_timeout_s)
        elif is_between_slices:
            # A fast reader (loopback) never fills the buffer: without this turn a 20 MB body
            # would go out in one loop step.
            await asyncio.sleep(0)
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the peer went away")

    def _head(self, response: Response, is_keep_alive: bool) -> bytes:
        return format_response_head(response.status, response.headers, response.content_length,
                                    is_keep_alive=is_keep_alive, date=self.server.http_date(_WALL.now().timestamp()))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address in a URL or HOST:PORT
