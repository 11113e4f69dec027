"""Instance heartbeats and the orphan sweep.

Each process writes a heartbeat row every `heartbeat_interval_s`. RUNNING rows whose instance
has been silent for `orphan_after_s`, or whose process is known dead (same host, pid gone),
are marked ABANDONED, on start and on every beat, so a `kill -9` never leaves a run
RUNNING forever. The beat says what this instance serves (role, queues, capacity, runs going)
and the sweep keeps a view of the live instances, so cluster execution knows who takes which
queue; `after_sweep` hooks run after each sweep (the leader re-queues abandoned runs there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from piko.core.types import InstanceInfo
from piko.errors import StoreError
from piko.protocols import Clock, InstanceStore

log = logging.getLogger("piko.instances")


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between kill() and read()
        return False
    except OSError:
        return True


def is_dead_local_instance(instance_id: str) -> bool:
    """An instance id of ours ("host:pid:rand") whose process on this host is gone."""
    host, _, rest = instance_id.partition(":")
    pid_text = rest.partition(":")[0]
    return host == socket.gethostname() and pid_text.isdigit() and not pid_is_alive(int(pid_text))


def new_instance(clock: Clock) -> InstanceInfo:
    host = socket.gethostname()
    pid = os.getpid()
    return InstanceInfo(f"{host}:{pid}:{os.urandom(3).hex()}", host, pid, clock.now())


class InstanceKeeper:
    def __init__(self, store: InstanceStore, clock: Clock, info: InstanceInfo, *, heartbeat_s: float,
                 orphan_after_s: float, describe: Callable[[InstanceInfo], InstanceInfo] | None = None,
                 after_sweep: Callable[[], Awaitable[None]] | None = None) -> None:
        self._store = store
        self._clock = clock
        self.info = info
        self._heartbeat_s = heartbeat_s
        self._orphan_after = timedelta(seconds=orphan_after_s)
        self._describe = describe  # the beat's row: what this instance serves now
        self._after_sweep = after_sweep
        self.live: list[InstanceInfo] = []  # instances with a fresh heartbeat, as of the last sweep
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def consumers(self, queue: str) -> int:
        """Live instances whose worker takes runs of `queue` (this one included, if it does)."""
        return len(self.serving(queue))

    def serving(self, queue: str) -> list[str]:
        """Ids of the live instances whose worker serves `queue` (a broadcast fire's copies)."""
        return [i.instance_id for i in self.live if "worker" in i.role and queue in i.queues]

    def is_live(self, instance_id: str) -> bool:
        return any(i.instance_id == instance_id for i in self.live)

    async def __aenter__(self) -> InstanceKeeper:
        now = self._clock.now()
        await self.beat(now)
        await self.sweep(now)
        self._task = asyncio.create_task(self._beat_loop(), name="piko-heartbeat")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5.0)
            self._task.cancel()

    async def beat(self, now: datetime | None = None) -> None:
        info = self._describe(self.info) if self._describe is not None else self.info
        await self._store.heartbeat(info, now or self._clock.now())

    async def sweep(self, now: datetime | None = None) -> int:
        """Mark RUNNING rows of dead or silent instances ABANDONED; return how many.

        `now` is the time our own beat just recorded: measured from it, our own row is never
        stale, however long the store took to answer the beat (a loop stall, a slow disk)."""
        listed = await self._store.list_instances()
        dead = [i.instance_id for i in listed
                if i.host == self.info.host and i.instance_id != self.info.instance_id and not pid_is_alive(i.pid)]
        now = now or self._clock.now()
        count = await self._store.abandon_orphans(now - self._orphan_after, now, dead)
        stale_before = now - self._orphan_after
        self.live = [i for i in listed if i.instance_id not in dead
                     and (i.heartbeat_at is None or i.heartbeat_at >= stale_before or i.instance_id == self.info.instance_id)]
        if count:
            log.warning("marked %d run(s) of stopped instances as ABANDONED", count)
        if self._after_sweep is not None:
            await self._after_sweep()
        return count

    async def _beat_loop(self) -> None:
        while not await self._clock.wait(self._stop, self._heartbeat_s):
            try:
                now = self._clock.now()
                await self.beat(now)
                await self.sweep(now)
            except (StoreError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
