"""The one place that reads the clocks: wall time (aware UTC) and monotonic time.

Everything that needs "now" takes a Clock, so tests pass a FakeClock and move time by hand
instead of sleeping. `wait(event, timeout)` is the only way time-driven loops sleep: the
fake clock resolves it when advanced past its deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event | None, timeout: float) -> bool:
        """Sleep up to `timeout` seconds or until `event` is set; True if the event was set."""
        if event is None:
            await asyncio.sleep(max(0.0, timeout))
            return False
        if event.is_set():
            return True
        try:
            if _timeout is not None:  # 3.11+: no task per wait (wait_for makes one), which hot loops feel
                async with _timeout(max(0.0, timeout)):
                    await event.wait()
            else:
                await asyncio.wait_for(event.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return False
        return True


class FakeClock:
    """A clock that only moves when told to; for tests of time-driven code."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, when: datetime) -> None:
        """Step the wall clock (like an NTP step) without moving monotonic time."""
        self._now = when

    def advance(self, seconds: float | timedelta) -> None:
        """Move both clocks forward and wake every sleeper whose deadline passed."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        self._now += timedelta(seconds=step)
        self._mono += step
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def wait(self, event: asyncio.Event | None, timeout: float) -> bool:
        if event is not None and event.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)
            return event is not None and event.is_set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, timeout), next(self._seq), fut))
        waiters: list[asyncio.Future[Any]] = [fut]
        ev_task = None
        if event is not None:
            ev_task = asyncio.ensure_future(event.wait())
            waiters.append(ev_task)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if ev_task is not None and not ev_task.done():
                ev_task.cancel()
            if not fut.done():
                fut.cancel()
        return event is not None and event.is_set()
