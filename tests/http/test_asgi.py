"""The ASGI adapter serves the same routes as the built-in server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from piko.http.asgi import OpsAsgiApp
from tests.http.support import FakeOpsState, async_test, make_routes, wait_until


async def call(app: OpsAsgiApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start, body_message = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body_message["body"]


@async_test
async def test_asgi_answers_like_the_server() -> None:
    routes = make_routes(FakeOpsState(current_role="standby"))
    app = OpsAsgiApp(routes)
    for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/leader"),
                         ("GET", "/metrics"), ("GET", "/x"), ("POST", "/healthz")]:
        status, headers, body = await call(app, method, path)
        expected = await routes.handle(method, path)
        assert (status, body) == (expected.status, expected.body)
        assert headers["content-length"] == str(len(body))


@async_test
async def test_asgi_head_has_length_but_no_body_and_get_with_body_is_413() -> None:
    app = OpsAsgiApp(make_routes())
    status, headers, body = await call(app, "HEAD", "/healthz")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert (await call(app, "GET", "/healthz", body=b"x"))[0] == 413


@async_test
async def test_asgi_lifespan_runs_the_hooks() -> None:
    events: list[str] = []

    async def start() -> None:
        events.append("start")

    async def stop() -> None:
        events.append("stop")

    app = OpsAsgiApp(make_routes(), on_startup=start, on_shutdown=stop)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert events == ["start", "stop"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@async_test
async def test_asgi_startup_failure_is_reported_to_the_server() -> None:
    async def start() -> None:
        raise RuntimeError("store unreachable")

    app = OpsAsgiApp(make_routes(), on_startup=start)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: store unreachable"}]


@async_test
async def test_uvicorn_serves_the_asgi_app() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    config = uvicorn.Config(OpsAsgiApp(make_routes()), host="127.0.0.1", port=0, log_level="error",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, timeout=10.0)
    port = server.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    server.should_exit = True
    await task
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["status"] == "ok"
