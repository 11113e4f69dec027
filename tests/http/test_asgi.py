"""The ASGI adapter serves the same routes as the built-in server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from piko.http.asgi import OpsAsgiApp
from piko.observability.metrics import MetricsRegistry
from tests.http.support import FakeOpsState, async_test, fetch, make_routes, serve, wait_until


async def call(app: OpsAsgiApp, method: str, path: str, body: bytes = b"",
               raw_path: bytes | None = None) -> tuple[int, dict, bytes]:
    sent = await call_messages(app, method, path, body, raw_path)
    start, *bodies = sent
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m["body"] for m in bodies)


async def call_messages(app: OpsAsgiApp, method: str, path: str, body: bytes = b"",
                        raw_path: bytes | None = None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    if raw_path is not None:
        scope["raw_path"] = raw_path
    await app(scope, receive, send)
    return sent


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


@async_test
async def test_asgi_sends_a_large_metrics_body_in_pieces_with_the_full_length() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("g", "many", ("i",))
    for i in range(20_000):
        gauge.labels(i=f"{i:040d}").set(i)
    app = OpsAsgiApp(make_routes(registry=registry))
    messages = await call_messages(app, "GET", "/metrics")
    assert len(messages) > 3  # start + several body pieces
    status, headers, body = await call(app, "GET", "/metrics")
    assert body == registry.render().encode() and headers["content-length"] == str(len(body))
    status, headers, body = await call(app, "HEAD", "/metrics")
    assert body == b"" and headers["content-length"] == str(len(registry.render().encode()))


@async_test
async def test_asgi_decodes_raw_path_by_the_same_rules_as_the_server() -> None:
    app = OpsAsgiApp(make_routes())
    assert (await call(app, "GET", "/healthz", raw_path=b"/%68ealthz"))[0] == 200
    assert (await call(app, "GET", "/%zz", raw_path=b"/%zz"))[0] == 400
    assert (await call(app, "GET", "/x://y/healthz", raw_path=b"/x://y/healthz"))[0] == 404
    assert (await call(app, "GET", "/healthz"))[0] == 200  # no raw_path: scope["path"] as given


def block_the_loop(seconds: float) -> None:
    """What a blocking job does. The lag monitor ticks every 0.5 s, so one tick falls due
    inside 0.6 s of blocking and runs at least 0.1 s late."""
    time.sleep(seconds)


async def _lifespan(app: OpsAsgiApp) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None], list[str]]:
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan"}, incoming.get, send))
    await incoming.put({"type": "lifespan.startup"})
    await wait_until(lambda: bool(sent))
    return incoming, task, sent


@async_test
async def test_asgi_lifespan_runs_a_loop_lag_monitor_for_healthz() -> None:
    routes = make_routes(FakeOpsState(lag_s=0.0))  # the app's own monitor is not running
    app = OpsAsgiApp(routes)
    incoming, task, sent = await _lifespan(app)
    assert sent == ["lifespan.startup.complete"]
    block_the_loop(0.6)
    await asyncio.sleep(0.01)
    status, _, body = await call(app, "GET", "/healthz")
    assert status == 200 and json.loads(body)["loop_lag_s"] >= 0.09
    await incoming.put({"type": "lifespan.shutdown"})
    await task
    assert routes.lag_source is None  # stopped with the app
    assert json.loads((await call(app, "GET", "/healthz"))[2])["loop_lag_s"] == 0.0


@async_test
async def test_asgi_lag_monitor_stops_when_startup_fails() -> None:
    async def start() -> None:
        raise RuntimeError("store unreachable")

    routes = make_routes()
    incoming, task, sent = await _lifespan(OpsAsgiApp(routes, on_startup=start))
    await task
    assert sent == ["lifespan.startup.failed"] and routes.lag_source is None


async def _uvicorn(app: OpsAsgiApp) -> tuple[Any, asyncio.Task[None], int]:
    uvicorn = pytest.importorskip("uvicorn")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, timeout=10.0)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


@async_test
async def test_uvicorn_and_the_built_in_server_agree_on_encoded_paths() -> None:
    routes = make_routes()
    server, task, port = await _uvicorn(OpsAsgiApp(routes))
    try:
        async with serve(routes) as srv:
            for path, status in [("/%68ealthz", 200), ("/%zz", 400), ("/%00", 400), ("/x://y/healthz", 404),
                                 ("/healthz%3Fx", 404)]:
                assert (await fetch(port, path)).status == status, ("uvicorn", path)
                assert (await fetch(srv.port, path)).status == status, ("built-in", path)
    finally:
        server.should_exit = True
        await task


@async_test
async def test_healthz_under_uvicorn_reports_the_loop_lag() -> None:
    server, task, port = await _uvicorn(OpsAsgiApp(make_routes(FakeOpsState(lag_s=0.0))))
    try:
        block_the_loop(0.6)
        reply = await fetch(port, "/healthz")
        assert reply.status == 200 and json.loads(reply.body)["loop_lag_s"] >= 0.09
    finally:
        server.should_exit = True
        await task
