"""Coalesce many small store calls made in one loop iteration into one call.

When the kernel fires 10,000 jobs at once, 10,000 claims arrive within a tick. Sent one by
one they cost 10,000 thread hand-offs (and GIL round trips) on SQLite or 10,000 round
trips on MySQL; batched they cost a few. Items submitted before the loop runs its next
callbacks go out together, keyed by a group (items of different groups never share a call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")  # result per item


class Batcher(Generic[I, R]):
    def __init__(self, send: Callable[[Sequence[I]], Awaitable[Sequence[R]]], *, max_batch: int = 1000) -> None:
        self._send = send
        self._max_batch = max_batch
        self._pending: dict[Hashable, list[tuple[I, asyncio.Future[R]]]] = {}
        self._is_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: I, group: Hashable = None) -> asyncio.Future[R]:
        """The item's result, to await (a plain future: no coroutine per item on the hot path)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.setdefault(group, []).append((item, fut))
        if not self._is_scheduled:
            self._is_scheduled = True
            loop.call_soon(self._flush)
        return fut

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most timeout_s) until everything submitted so far was sent and answered."""
        await asyncio.sleep(0)  # a scheduled flush starts its deliveries
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout_s))
        await asyncio.sleep(0)  # the answers' callbacks run

    def _flush(self) -> None:
        self._is_scheduled = False
        pending, self._pending = self._pending, {}
        for entries in pending.values():
            for start in range(0, len(entries), self._max_batch):
                task = asyncio.ensure_future(self._deliver(entries[start:start + self._max_batch]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entries: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results: Sequence[Any] = await self._send([item for item, _ in entries])
        except BaseException as exc:  # every caller of this batch sees the failure
            for _, fut in entries:
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        for (_, fut), result in zip(entries, results, strict=True):
            if not fut.done():
                fut.set_result(result)
