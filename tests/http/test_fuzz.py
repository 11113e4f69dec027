"""1,000 malformed requests from a seeded fuzzer over real sockets: the server keeps
answering, leaks no connection, logs no crash, and a loop ticker keeps firing on time."""

from __future__ import annotations

import asyncio
import logging
import random
import re

import pytest

from tests.http.support import async_test, fetch, serve, wait_until

VALID = b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n"
STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ")
EXPECTED = {200, 400, 404, 405, 408, 411, 413, 414, 431, 505}


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 3000))


def _terminated_garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 300)) + b"\r\n\r\n"


def _huge_line(rng: random.Random) -> bytes:
    return b"GET /" + b"a" * rng.randint(8_000, 200_000) + b" HTTP/1.1\r\n\r\n"


def _huge_header(rng: random.Random) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: f\r\nX-Big: " + b"b" * rng.randint(8_000, 50_000) + b"\r\n\r\n"


def _many_headers(rng: random.Random) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: f\r\n" + b"X-A: 1\r\n" * rng.randint(500, 3000) + b"\r\n"


def _bad_method(rng: random.Random) -> bytes:
    method = bytes(rng.choice(b"()<>@,;:\\\"/[]?={} \t\x00\x7fAZ") for _ in range(rng.randint(1, 20)))
    return method + b" / HTTP/1.1\r\nHost: f\r\n\r\n"


def _nul_bytes(rng: random.Random) -> bytes:
    data = bytearray(VALID)
    for _ in range(rng.randint(1, 5)):
        data[rng.randrange(len(data))] = 0
    return bytes(data)


def _bit_flips(rng: random.Random) -> bytes:
    data = bytearray(VALID * rng.randint(1, 3))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _odd_versions(rng: random.Random) -> bytes:
    version = rng.choice([b"HTTP/0.9", b"HTTP/2", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1x", b"", b"HTTP/9.9"])
    return b"GET / " + version + b"\r\nHost: f\r\n\r\n"


def _bodies(rng: random.Random) -> bytes:
    header = rng.choice([b"Content-Length: 99999999999999999999", b"Content-Length: -1",
                         b"Transfer-Encoding: chunked", b"Content-Length: 1\r\nContent-Length: 2"])
    return b"GET /metrics HTTP/1.1\r\nHost: f\r\n" + header + b"\r\n\r\n" + rng.randbytes(10)


def _post_bodies(rng: random.Random) -> bytes:
    header = rng.choice([b"Content-Length: 99999999999999999999", b"Content-Length: -1", b"Content-Length: 70000",
                         b"Transfer-Encoding: chunked", b"Content-Length: %d" % rng.randint(0, 40)])
    path = rng.choice([b"/api/jobs/x/pause", b"/api/runs/1/cancel", b"/healthz", b"/"])
    return b"POST " + path + b" HTTP/1.1\r\nHost: f\r\n" + header + b"\r\n\r\n" + rng.randbytes(rng.randint(0, 30))


def _valid_then_garbage(rng: random.Random) -> bytes:
    return VALID + rng.randbytes(rng.randint(1, 500))


KINDS = [_random_bytes, _terminated_garbage, _huge_line, _huge_header, _many_headers, _bad_method,
         _nul_bytes, _bit_flips, _odd_versions, _bodies, _post_bodies, _valid_then_garbage]


async def _attack(port: int, payload: bytes, send_eof: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        try:
            writer.write(payload)
            if send_eof:
                writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass
        try:
            received = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            pass
    finally:
        writer.transport.abort()
    return received


async def _fuzz(port: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        payload = rng.choice(KINDS)(rng)
        jobs.append((payload, i % 50 != 0))  # every 50th never ends: the header timeout closes it
    limit = asyncio.Semaphore(32)

    async def one(payload: bytes, send_eof: bool) -> bytes:
        async with limit:
            return await _attack(port, payload, send_eof)

    return await asyncio.gather(*(one(p, e) for p, e in jobs))


class Ticker:
    """What the scheduler looks like to the loop: a call_later chain every `period_s`."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.lateness_s: list[float] = []
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._arm(loop, loop.time() + self.period_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self._handle = loop.call_at(due, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.lateness_s.append(loop.time() - due)
        self._arm(loop, loop.time() + self.period_s)


@pytest.mark.slow
@async_test
async def test_a_thousand_malformed_requests_do_not_crash_or_stall_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="piko.http")
    ticker = Ticker(0.01)
    async with serve(header_timeout_s=0.3, idle_timeout_s=1.0, max_connections=64) as srv:
        ticker.start()
        # The fuzzer runs on its own loop in a thread, so only the server shares this loop.
        results = await asyncio.to_thread(asyncio.run, _fuzz(srv.port, 1000, 5))
        ticker.stop()
        assert len(results) == 1000
        for received in results:
            if received:
                matched = STATUS_LINE.match(received)
                assert matched is not None, received[:100]
                assert int(matched.group(1)) in EXPECTED
        assert sum(1 for r in results if r.startswith(b"HTTP/1.1 4")) > 500
        assert (await fetch(srv.port, "/healthz")).status == 200
        await wait_until(lambda: srv.connection_count == 0, timeout=3.0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lateness = sorted(ticker.lateness_s)
    assert len(lateness) > 20
    p99 = lateness[int(len(lateness) * 0.99) - 1]
    print(f"ticker: {len(lateness)} ticks, p99 lateness {p99 * 1000:.1f} ms, max {lateness[-1] * 1000:.1f} ms")
    # not stalled: the loop kept its 10 ms ticks going (a stuck handler would hold it for seconds);
    # how late it ran is a figure for the benchmarks, not a pass mark on a shared 2-core machine
    assert lateness[-1] < 1.0
