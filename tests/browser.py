"""A headless Chromium for tests, driven with the standard library only.

`require_chromium()` finds the binary (PIKO_TEST_CHROMIUM, else chromium / chromium-browser /
google-chrome on PATH) or skips the test saying why; under CI=true a missing browser fails the
run instead, so CI never turns green without the browser tests. `dump_dom(url)` renders a page
with Chromium's own command line. `Browser` starts Chromium with a DevTools port and speaks the
DevTools protocol over its websocket (a minimal RFC 6455 client below: masked text frames out,
any frames in) for what a test does in a page: navigate, evaluate, click, screenshot.
Everything is asyncio, so the app under test keeps running on the same loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-sync", "--disable-component-update", "--mute-audio", "--hide-scrollbars")


def find_chromium() -> str | None:
    chosen = os.environ.get("PIKO_TEST_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def require_chromium() -> str:
    path = find_chromium()
    if path is None:
        chosen = os.environ.get("PIKO_TEST_CHROMIUM")
        message = (f"browser tests need Chromium: PIKO_TEST_CHROMIUM={chosen} is not an executable" if chosen else
                   "browser tests need Chromium: apt-get install -y chromium (scripts/test.sh installs it when run "
                   "as root), or set PIKO_TEST_CHROMIUM to a Chrome/Chromium binary")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing browser fails the run)", pytrace=False)
        pytest.skip(message)
    return path


async def dump_dom(chromium: str, url: str, timeout_s: float = 20.0) -> str:
    """The DOM of `url` after it loaded and its scripts ran, serialized by Chromium itself."""
    with tempfile.TemporaryDirectory(prefix="piko-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return out.decode("utf-8", "replace")


class Browser:
    """`async with Browser(chromium) as b:` one page of a headless Chromium, over DevTools."""

    def __init__(self, chromium: str, *, width: int = 1280, height: int = 900) -> None:
        self.chromium = chromium
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="piko-chromium-")
        self._proc: asyncio.subprocess.Process | None = None
        self._ws: WebSocket | None = None
        self._next_id = 0

    async def __aenter__(self) -> Browser:
        self._proc = await asyncio.create_subprocess_exec(
            self.chromium, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-port=0",
            f"--window-size={self.width},{self.height}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            port = await self._devtools_port()
            page = await _page_target(port)
            self._ws = await WebSocket.connect(page)
            await self.call("Page.enable")
            await self.call("Emulation.setDeviceMetricsOverride",
                            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _devtools_port(self, timeout_s: float = 15.0) -> int:
        """Chromium writes the port it chose to DevToolsActivePort in its profile."""
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                raise RuntimeError(f"chromium exited with status {self._proc.returncode} before it listened")
            lines = marker.read_text().splitlines() if marker.exists() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            await asyncio.sleep(0.05)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort within {timeout_s:g} s")

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 15.0) -> Any:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        assert self._ws is not None
        self._next_id += 1
        ask_id = self._next_id
        await self._ws.send_text(json.dumps({"id": ask_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(await asyncio.wait_for(self._ws.receive_text(), max(0.01, deadline - time.monotonic())))
            if message.get("id") == ask_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited); raises on an exception."""
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True, "userGesture": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]!r} threw: {result['exceptionDetails'].get('text')}: "
                               f"{result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10.0) -> Any:
        """Evaluate until the value is truthy (a page may be reloading meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:  # the page is between documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} did not become true within {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def click(self, selector: str) -> None:
        """A real click on the element: the page's own listeners handle it."""
        found = await self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                                    f"if (!e) return false; e.scrollIntoView(); e.click(); return true; }})()")
        assert found, f"nothing in the page matches {selector!r}"

    async def screenshot(self, path: str | Path) -> None:
        height = await self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        data = await self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": max(self.height, int(height)), "scale": 1}})
        await asyncio.to_thread(Path(path).write_bytes, base64.b64decode(data["data"]))


async def _page_target(port: int) -> str:
    """The websocket URL of the browser's first page (GET /json/list)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())  # the URLs it names use it
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])  # it keeps the connection open
        targets = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    finally:
        writer.close()
    return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")


class WebSocket:
    """Just enough RFC 6455 for DevTools: text frames out (masked), whole messages in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> WebSocket:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no websocket upgrade: {head[:200]!r}")
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        await self._send(0x1, text.encode())

    async def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await self.writer.drain()

    async def receive_text(self) -> str:
        pieces: list[bytes] = []
        while True:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            mask = await self.reader.readexactly(4) if second & 0x80 else b""
            payload = await self.reader.readexactly(size)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode == 0x9:
                await self._send(0xA, payload)  # ping -> pong
                continue
            if opcode in (0x0, 0x1, 0x2):
                pieces.append(payload)
                if first & 0x80:
                    return b"".join(pieces).decode("utf-8")

    async def close(self) -> None:
        try:
            await self._send(0x8, b"")
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()
