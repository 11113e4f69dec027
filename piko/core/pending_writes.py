"""Store writes that must land: run ends and after-run bookkeeping, kept until the store takes them.

A run that happened must be recorded however long the store is away. A write that fails for
a store reason (StoreError, OSError) is kept in memory, in order, and retried with capped
exponential backoff until the store answers; run ends go out together, in batches. Once
anything waits, new bookkeeping writes queue behind it, so a watermark never moves out of
order. The queue is bounded (`max_pending`): past it the oldest entry is given up, logged
and counted, never silently. `close(budget_s)` tries once more within the shutdown budget
and logs each write that could not be made. Imports no store implementation and not the app.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from piko.core.backoff import backoff
from piko.core.types import RunFinish
from piko.errors import LeaseLost, StoreError
from piko.protocols import Clock

log = logging.getLogger("piko.runner")
RETRYABLE = (StoreError, OSError, asyncio.TimeoutError)
BATCH = 500
_JITTER = (1.0, 0.5)  # jitter only shortens a wait, by up to half: never past cap_s


@dataclass(frozen=True)
class _Write:
    what: str  # for logs: which job, which run, what the write does
    write: Callable[[], Awaitable[object]]


class PendingWrites:
    """`on_size(n)` hears the number of waiting writes after each change, `on_lost(n)` how many were
    given up (queue full, or still unwritten at close)."""

    def __init__(self, send_finishes: Callable[[Sequence[RunFinish]], Awaitable[object]], clock: Clock, *,
                 max_pending: int = 100_000, base_s: float = 0.2, cap_s: float = 5.0,
                 on_size: Callable[[int], None] | None = None, on_lost: Callable[[int], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self._send_finishes = send_finishes
        self._clock = clock
        self._max = max(1, max_pending)
        self._base_s, self._cap_s = base_s, cap_s
        self._on_size, self._on_lost = on_size, on_lost
        self._rng = rng or random.Random()
        # run_id -> (finish, job_id, scheduled_at)
        self._finishes: OrderedDict[int, tuple[RunFinish, str, datetime]] = OrderedDict()
        self._writes: deque[_Write] = deque()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # consecutive failed tries: the backoff step

    def __len__(self) -> int:
        return len(self._finishes) + len(self._writes)

    @property
    def has_writes(self) -> bool:
        """Bookkeeping writes are waiting: a new one must queue behind them, not overtake them."""
        return bool(self._writes)

    def holds(self, job_id: str, scheduled_at: datetime) -> bool:
        """A run of this scheduled time ended here and its end waits for the store."""
        return any(j == job_id and at == scheduled_at for _, j, at in self._finishes.values())

    # -- adding ----------------------------------------------------------------------------
    def add_finish(self, finish: RunFinish, job_id: str, scheduled_at: datetime, error: BaseException) -> None:
        if not self._finishes and not self._writes:
            log.warning("the store did not take the end of run %s (job %s, %s): keeping it and retrying "
                        "until it does: %s", finish.run_id, job_id, finish.status.value, error)
        self._finishes[finish.run_id] = (finish, job_id, scheduled_at)
        self._added()

    def add_write(self, what: str, write: Callable[[], Awaitable[object]], error: BaseException | None) -> None:
        if error is not None and not self._finishes and not self._writes:
            log.warning("the store did not take %s: keeping it and retrying until it does: %s", what, error)
        self._writes.append(_Write(what, write))
        self._added()

    def _added(self) -> None:
        while len(self) > self._max:  # the oldest is given up, loudly
            if self._finishes:
                finish, job_id, _ = self._finishes.popitem(last=False)[1]
                what = f"the end of run {finish.run_id} (job {job_id}, {finish.status.value})"
            else:
                what = self._writes.popleft().what
            log.error("more than %d writes wait for the store: giving up %s", self._max, what)
            self._lost(1)
        self._sized()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry_loop(), name="piko-pending-writes")

    # -- retrying --------------------------------------------------------------------------
    async def _retry_loop(self) -> None:
        while len(self):
            await self._clock.wait(None, backoff(self._failures + 1, self._base_s, self._cap_s,
                                                 draw=self._rng.random(), jitter=_JITTER))
            await self._try_once()

    async def _try_once(self) -> bool:
        """One pass over everything waiting, in order; True if all of it was written."""
        try:
            while self._finishes:
                chunk = list(self._finishes.items())[:BATCH]
                await self._send_finishes([entry[0] for _, entry in chunk])
                for run_id, _ in chunk:
                    self._finishes.pop(run_id, None)
                self._sized()
            while self._writes:
                entry = self._writes[0]
                try:
                    await entry.write()
                except LeaseLost as exc:  # no longer ours to write
                    log.warning("not writing %s: %s", entry.what, exc)
                except RETRYABLE:
                    raise
                except Exception:
                    log.exception("writing %s failed; not retried", entry.what)
                self._writes.popleft()
                self._sized()
        except RETRYABLE as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 20 == 0:
                log.warning("%d write(s) still wait for the store (try %d): %s", len(self), self._failures, exc)
            return False
        if self._failures:
            log.info("the store took the writes that waited for it (after %d failed tries)", self._failures)
        self._failures = 0
        return True

    async def close(self, budget_s: float) -> None:
        """Flush within `budget_s` (at least one try), then log whatever could not be written."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if not len(self):
            return
        loop = asyncio.get_running_loop()  # the shutdown budget is real time, whatever the clock
        deadline = loop.time() + max(0.0, budget_s)
        while len(self):
            remaining = deadline - loop.time()
            try:
                if await asyncio.wait_for(self._try_once(), timeout=max(remaining, 1.0)):
                    return
            except asyncio.TimeoutError:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, backoff(self._failures, self._base_s, self._cap_s)))
        self._give_up_all()

    def _give_up_all(self) -> None:
        lost = len(self)
        for finish, job_id, _ in self._finishes.values():
            log.error("exiting with the end of run %s unrecorded (job %s, %s%s): the store did not take it; "
                      "the row stays RUNNING until the orphan sweep marks it ABANDONED", finish.run_id, job_id,
                      finish.status.value, f": {finish.error_type}" if finish.error_type else "")
        for entry in self._writes:
            log.error("exiting with %s not written: the store did not take it", entry.what)
        self._finishes.clear()
        self._writes.clear()
        self._sized()
        self._lost(lost)

    def _sized(self) -> None:
        if self._on_size is not None:
            self._on_size(len(self))

    def _lost(self, n: int) -> None:
        if self._on_lost is not None:
            self._on_lost(n)
