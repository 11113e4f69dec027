"""The ops endpoints as one route table, shared by the asyncio server and the ASGI adapter.

(method, path) -> Response; no framework, no sockets. /healthz answers while the loop
runs; /readyz asks the app (and through it the store) with a short timeout so a hung store
reads as "not ready" instead of a hung probe; /leader answers 200 only on the leader;
/metrics renders the registry in small pieces, yielding to the loop at least every
YIELD_EVERY_S, and keeps the body in pieces (never one 20 MB join); concurrent scrapes
share one render. The status page and its /api/ (console.py) plug in as `console`, so the
built-in server and the ASGI adapter serve them alike; without one those paths are 404.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from piko.observability.metrics import CONTENT_TYPE, MetricsRegistry
from piko.protocols import OpsState

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
ALLOWED_METHODS = ("GET", "HEAD")
YIELD_EVERY_S = 0.002  # the longest stretch a metrics render may hold the loop
PIECE_CHARS = 256 * 1024  # rendered text is encoded and kept in pieces of about this size
# What a readiness check that never answered is called when no answer named the checks yet:
# the app's one check besides "started" is the store ping.
DEFAULT_CHECK_NAMES = ("store",)


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]  # the body in pieces, sent in order; Content-Length is their sum

    @property
    def content_length(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    @property
    def body(self) -> bytes:
        """The whole body joined: for small responses and tests, not for writing /metrics."""
        return b"".join(self.chunks)


@dataclass(frozen=True)
class Call:
    """One request as the routes see it, from either server."""

    method: str
    path: str  # percent-decoded
    query: str = ""  # raw, without the '?'
    headers: tuple[tuple[str, str], ...] = ()  # names lower-cased
    body: bytes = b""
    client: str | None = None  # the peer's address, without the port; None when unknown

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


class LagSource(Protocol):
    lag_s: float


class MoreRoutes(Protocol):
    """Routes beyond the ops endpoints (the status page): the paths they serve, and the answers."""

    def serves(self, path: str) -> bool: ...
    async def handle(self, call: Call) -> Response: ...


def json_response(status: int, payload: Mapping[str, object]) -> Response:
    body = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
    return Response(status, (("Content-Type", JSON), ("Cache-Control", "no-store")), (body,))


def text_response(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, (("Content-Type", TEXT), *headers), (text.encode(),))


class OpsRoutes:
    """GET/HEAD /healthz, /readyz, /leader, /metrics; 404 elsewhere, 405 for other methods.

    `lag_source`, when set (the ASGI lifespan sets its own LoopLagMonitor), is what /healthz
    reports; otherwise the app state's loop_lag_s.
    """

    def __init__(self, state: OpsState, registry: MetricsRegistry, *, readiness_timeout_s: float = 2.0,
                 console: MoreRoutes | None = None) -> None:
        self.state = state
        self.console = console
        self.registry = registry
        self.readiness_timeout_s = readiness_timeout_s
        self.lag_source: LagSource | None = None
        self._table = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/leader": self.leader,
            "/metrics": self.metrics,
        }
        self._render: asyncio.Future[tuple[bytes, ...]] | None = None
        self._readiness: asyncio.Future[dict[str, str | None]] | None = None
        self._check_names: tuple[str, ...] = DEFAULT_CHECK_NAMES

    async def handle(self, method: str, path: str, call: Call | None = None) -> Response:
        """Answer `method path`; `call` carries the rest of the request (the console's routes read it)."""
        endpoint = self._table.get(path)
        if endpoint is None:
            if self.console is not None and self.console.serves(path):
                return await self.console.handle(call or Call(method, path))
            return text_response(404, f"404 Not Found: no endpoint at {path[:200]}\n")
        if method not in ALLOWED_METHODS:
            return text_response(405, f"405 Method Not Allowed: {path} answers GET and HEAD\n",
                                 (("Allow", "GET, HEAD"),))
        return await endpoint()

    async def healthz(self) -> Response:
        source = self.lag_source
        lag_s = source.lag_s if source is not None else self.state.loop_lag_s()
        return json_response(200, {"status": "ok", "loop_lag_s": round(lag_s, 6)})

    async def readyz(self) -> Response:
        role = self.state.role()
        if not self.state.is_started():
            checks: dict[str, str | None] = {"started": "not started yet"}
        else:
            checks = {"started": None, **await self._shared_readiness()}
        failing = {name: reason for name, reason in checks.items() if reason is not None}
        payload = {
            "status": "not ready" if failing else "ready",
            "role": role,
            "checks": {name: reason or "ok" for name, reason in checks.items()},
        }
        return json_response(503 if failing else 200, payload)

    async def leader(self) -> Response:
        role = self.state.role()
        return json_response(200 if role == "leader" else 503, {"role": role})

    async def metrics(self) -> Response:
        if self._render is None or self._render.done():
            self._render = asyncio.ensure_future(self._render_metrics())
        chunks = await asyncio.shield(self._render)
        return Response(200, (("Content-Type", CONTENT_TYPE),), chunks)

    async def _render_metrics(self) -> tuple[bytes, ...]:
        pieces: list[bytes] = []
        pending: list[str] = []
        pending_chars = 0
        yielded_at = time.perf_counter()
        for text in self.registry.render_chunks():
            pending.append(text)
            pending_chars += len(text)
            if pending_chars >= PIECE_CHARS:
                pieces.append(_encode(pending))
                pending, pending_chars = [], 0
            if time.perf_counter() - yielded_at > YIELD_EVERY_S:
                await asyncio.sleep(0)
                yielded_at = time.perf_counter()
        if pending:
            pieces.append(_encode(pending))
        return tuple(pieces)

    async def _shared_readiness(self) -> dict[str, str | None]:
        # Probes from several kubelets (or a flood) share one in-flight check of the store.
        if self._readiness is None or self._readiness.done():
            self._readiness = asyncio.ensure_future(self._readiness_checks())
        return await asyncio.shield(self._readiness)

    async def _readiness_checks(self) -> dict[str, str | None]:
        # The state answers all checks in one call, so a hang or an unexpected exception cannot
        # be pinned on one check: it is reported under every check the state last named.
        try:
            checks = await asyncio.wait_for(self.state.readiness_checks(), self.readiness_timeout_s)
        except asyncio.TimeoutError:
            return self._all_failing(f"no answer within {self.readiness_timeout_s:g} s")
        except Exception as exc:  # a failing check is a reason to report, not a crash
            return self._all_failing(f"{type(exc).__name__}: {exc}")
        self._check_names = tuple(name for name in checks if name != "started") or DEFAULT_CHECK_NAMES
        return checks

    def _all_failing(self, reason: str) -> dict[str, str | None]:
        return {name: reason for name in self._check_names}


def _encode(texts: list[str]) -> bytes:
    # exposition.py already made every string UTF-8-safe; backslashreplace is the last guard,
    # so one bad string can never turn the whole scrape into a 500.
    return "".join(texts).encode("utf-8", "backslashreplace")
