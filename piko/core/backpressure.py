"""Back-pressure between the kernel and the store: how many fires wait on a store call.

A fire waiting for its claim or its end record holds a task and a pending store call; bounding
them keeps a burst of 10,000 from living in memory at once (the cyclic GC would rescan them
all, over and over) and paces dispatch to what the store records. A fire inside its handler
does not count: long jobs never hold dispatch up. Manual runs are not fires: not counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

MAX_ON_STORE = 1024  # fires waiting on the store before the kernel pauses a burst


class DispatchRoom:
    def __init__(self, limit: int = MAX_ON_STORE) -> None:
        self._limit = limit
        self.fire_tasks: set[asyncio.Task[Any]] = set()  # every task handling a fire
        self._on_store: set[asyncio.Task[Any]] = set()  # fire tasks waiting for a claim or an end record
        self.claiming = 0  # fires claimed early (no task yet) whose claim has not answered
        self._room = asyncio.Event()
        self._room.set()

    def add_fire(self, task: asyncio.Task[Any], *, is_on_store: bool) -> None:
        self.fire_tasks.add(task)
        if is_on_store:
            self.enter_store(task)
        task.add_done_callback(self._fire_done)

    def claim_sent(self, delta: int) -> None:
        self.claiming += delta
        self._update()

    def enter_store(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and task in self.fire_tasks:
            self._on_store.add(task)
            self._update()

    def leave_store(self, task: asyncio.Task[Any] | None) -> None:
        self._on_store.discard(task)  # type: ignore[arg-type]
        self._update()

    async def wait_for_room(self) -> None:
        """For the kernel, between slices of a burst: wait while too many fires wait on the store."""
        if len(self._on_store) + self.claiming >= self._limit:
            await self._room.wait()
        else:
            await asyncio.sleep(0)

    def _update(self) -> None:
        waiting = len(self._on_store) + self.claiming
        if waiting >= self._limit:
            self._room.clear()
        elif waiting <= self._limit // 2:
            self._room.set()

    def _fire_done(self, task: asyncio.Task[Any]) -> None:
        self.fire_tasks.discard(task)
        self.leave_store(task)
