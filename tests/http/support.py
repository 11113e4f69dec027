"""Test helpers for the ops HTTP server: a fake OpsState, a raw socket client, async runner."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from piko.http.routes import OpsRoutes
from piko.http.server import HttpServer
from piko.observability.metrics import MetricsRegistry


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 20))

    return wrapper


@dataclass
class FakeOpsState:
    started: bool = True
    current_role: str = "leader"
    lag_s: float = 0.0012
    checks: dict[str, str | None] = field(default_factory=lambda: {"store": None})
    check_delay_s: float = 0.0
    check_calls: int = 0

    def is_started(self) -> bool:
        return self.started

    def role(self) -> str:
        return self.current_role

    def loop_lag_s(self) -> float:
        return self.lag_s

    async def readiness_checks(self) -> dict[str, str | None]:
        self.check_calls += 1
        if self.check_delay_s:
            await asyncio.sleep(self.check_delay_s)
        return dict(self.checks)


def make_routes(state: FakeOpsState | None = None, registry: MetricsRegistry | None = None,
                **kwargs: Any) -> OpsRoutes:
    return OpsRoutes(state or FakeOpsState(), registry or MetricsRegistry(), **kwargs)


def serve(routes: OpsRoutes | None = None, **kwargs: Any) -> HttpServer:
    return HttpServer(routes or make_routes(), "127.0.0.1", 0, **kwargs)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(path: str, *, method: str = "GET", version: str = "1.1", extra: str = "", host: str = "test") -> bytes:
    host = f"Host: {host}\r\n" if version == "1.1" else ""
    return f"{method} {path} HTTP/{version}\r\n{host}{extra}\r\n".encode()


class RawClient:
    """A bare TCP client: send raw bytes, read framed responses or the close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, *, is_head: bool = False, timeout: float = 5.0) -> Reply:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if is_head else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return Reply(status, headers, body)

    async def request(self, path: str, **kwargs: Any) -> Reply:
        await self.send(get(path, **kwargs))
        return await self.reply(is_head=kwargs.get("method") == "HEAD")

    async def is_closed_by_peer(self, timeout: float = 2.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionError:
            return True
        except asyncio.TimeoutError:
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def fetch(port: int, path: str, **kwargs: Any) -> Reply:
    client = await RawClient.connect(port)
    try:
        return await client.request(path, **kwargs)
    finally:
        await client.close()
