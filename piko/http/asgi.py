"""The ops endpoints as a plain ASGI 3 callable, for `uvicorn app:api_app`.

Serves the same OpsRoutes as the built-in server, so both answer identically. The
lifespan protocol runs optional start/stop hooks (the app passes its own start and
stop). No ASGI framework is imported; uvicorn is not a dependency of piko.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from piko.http.routes import OpsRoutes, text_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class OpsAsgiApp:
    def __init__(self, routes: OpsRoutes, *, on_startup: Hook | None = None,
                 on_shutdown: Hook | None = None) -> None:
        self.routes = routes
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown

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
        if await _has_body(receive) and method in ("GET", "HEAD"):
            response = text_response(413, "413 Content Too Large: requests carry no body\n")
        else:
            response = await self.routes.handle(method, scope["path"])
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not await self._run_hook(self.on_startup, "startup", send):
                    return
            elif message["type"] == "lifespan.shutdown":
                await self._run_hook(self.on_shutdown, "shutdown", send)
                return

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


async def _has_body(receive: Receive) -> bool:
    """Read the request body to its end (the server frames it); True if it was not empty."""
    has_body = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return has_body
        has_body = has_body or bool(message.get("body"))
        if not message.get("more_body", False):
            return has_body
