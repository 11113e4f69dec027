"""The ops endpoints as a plain ASGI 3 callable, for `uvicorn app:api_app`.

Serves the same OpsRoutes as the built-in server, so both answer identically: the path is
decoded from raw_path by wire.py's rules (bad escapes are 400 on both), a POST body is read
up to the same limit (413 past it), the client address comes from the scope, and a body in
pieces is sent piece by piece. The lifespan protocol starts a LoopLagMonitor for /healthz
(the built-in server's monitor is not running when uvicorn serves) and runs optional
start/stop hooks (the app passes its own start and stop). No ASGI framework is imported;
uvicorn is not a dependency of piko.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from piko.http.routes import Call, OpsRoutes, Response, text_response
from piko.http.wire import DEFAULT_BODY_LIMIT, ProtocolError, error_body, path_of
from piko.observability.process import LoopLagMonitor

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class OpsAsgiApp:
    def __init__(self, routes: OpsRoutes, *, on_startup: Hook | None = None,
                 on_shutdown: Hook | None = None, body_limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.routes = routes
        self.body_limit = body_limit
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self._lag_monitor: LoopLagMonitor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        body = await _read_body(receive, self.body_limit)
        if body is None:
            response = text_response(413, f"413 Content Too Large: the request body exceeds {self.body_limit} bytes\n")
        elif body and method in ("GET", "HEAD"):
            response = text_response(413, "413 Content Too Large: requests carry no body\n")
        else:
            try:
                path = _path(scope)
            except ProtocolError as exc:
                response = text_response(exc.status, error_body(exc.status, exc.reason).decode())
            else:
                response = await self.routes.handle(method, path, _call(scope, method, path, body))
        await _send_response(response, send, has_body=method != "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self._start_lag_monitor()
                    if not await self._run_hook(self.on_startup, "startup", send):
                        return
                elif message["type"] == "lifespan.shutdown":
                    await self._run_hook(self.on_shutdown, "shutdown", send)
                    return
        finally:
            await self._stop_lag_monitor()

    async def _start_lag_monitor(self) -> None:
        if self._lag_monitor is None:
            self._lag_monitor = await LoopLagMonitor().__aenter__()
            self.routes.lag_source = self._lag_monitor

    async def _stop_lag_monitor(self) -> None:
        monitor, self._lag_monitor = self._lag_monitor, None
        if monitor is not None:
            if self.routes.lag_source is monitor:
                self.routes.lag_source = None
            await monitor.__aexit__(None, None, None)

    @staticmethod
    async def _run_hook(hook: Hook | None, phase: str, send: Send) -> bool:
        try:
            if hook is not None:
                await hook()
        except Exception as exc:  # the server reports it and exits; the message says why
            await send({"type": f"lifespan.{phase}.failed", "message": f"{type(exc).__name__}: {exc}"})
            return False
        await send({"type": f"lifespan.{phase}.complete"})
        return True


def _path(scope: Scope) -> str:
    """The path by wire.py's rules from raw_path when the server gives it, else scope["path"]."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return path_of(raw.decode("latin-1"))
    return str(scope["path"])


async def _send_response(response: Response, send: Send, *, has_body: bool) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(response.content_length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    chunks = response.chunks if has_body and response.chunks else (b"",)
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk, "more_body": i < last})


def _call(scope: Scope, method: str, path: str, body: bytes) -> Call:
    headers = tuple((bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
                    for k, v in scope.get("headers", ()))
    client = scope.get("client")
    return Call(method, path, bytes(scope.get("query_string", b"")).decode("latin-1"), headers, body,
                str(client[0]) if client else None)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body (the server frames it), read to its end; None once it exceeds `limit`."""
    pieces: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        piece = bytes(message.get("body") or b"")
        size += len(piece)
        if size > limit:
            return None
        pieces.append(piece)
        if not message.get("more_body", False):
            break
    return b"".join(pieces)
