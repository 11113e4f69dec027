"""The header clock and the blank-line limit over real sockets: a client cannot hold a
connection open by trickling empty lines."""

from __future__ import annotations

import asyncio
import time

from piko.http.wire import MAX_BLANK_LINES
from tests.http.support import RawClient, async_test, get, serve


async def _trickle_crlf_until_closed(client: RawClient, every_s: float, limit_s: float) -> float:
    """Send CRLF every `every_s` until the server closes; seconds until then (or limit_s)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            await client.send(b"\r\n")
        except ConnectionError:
            break
        if await client.is_closed_by_peer(timeout=every_s):
            break
    return time.monotonic() - started


@async_test
async def test_blank_lines_do_not_restart_the_header_clock() -> None:
    async with serve(header_timeout_s=0.3, idle_timeout_s=5.0) as srv:
        client = await RawClient.connect(srv.port)
        elapsed = await _trickle_crlf_until_closed(client, every_s=0.05, limit_s=3.0)
        assert elapsed < 1.0, f"still open after {elapsed:.1f} s of blank lines"
        await client.close()


@async_test
async def test_blank_lines_after_a_response_get_the_header_timeout_not_the_idle_one() -> None:
    async with serve(header_timeout_s=0.3, idle_timeout_s=5.0) as srv:
        client = await RawClient.connect(srv.port)
        assert (await client.request("/healthz")).status == 200
        elapsed = await _trickle_crlf_until_closed(client, every_s=0.05, limit_s=3.0)
        assert elapsed < 1.0, f"still open after {elapsed:.1f} s of blank lines"
        await client.close()


@async_test
async def test_a_few_blank_lines_before_a_request_are_fine_a_flood_is_400() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        assert (await client.request("/healthz")).status == 200
        await client.send(b"\r\n" * MAX_BLANK_LINES + get("/healthz"))
        assert (await client.reply()).status == 200
        await client.send(b"\r\n" * (MAX_BLANK_LINES + 1))
        reply = await client.reply()
        assert reply.status == 400 and reply.headers["connection"] == "close"
        assert await client.is_closed_by_peer()


@async_test
async def test_a_request_sent_in_slow_pieces_within_the_timeout_is_answered() -> None:
    async with serve(header_timeout_s=0.5) as srv:
        client = await RawClient.connect(srv.port)
        for piece in (b"\r\n", b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            await client.send(piece)
            await asyncio.sleep(0.05)
        assert (await client.reply()).status == 200
        await client.close()
