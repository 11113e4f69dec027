"""The kernel: one timer heap and one sleeper task that turns schedules into fires.

Fire times are wall-clock instants (aware UTC) from pure triggers. The sleeper never sleeps
longer than `max_sleep_s` (1 s), so a stepped wall clock (NTP, suspend) is noticed within a
second; a backlog of due times is handed over together so the runner can coalesce. While
this instance is not the leader, due fires go to a short standby buffer instead; on
becoming leader they are replayed (the run lock makes that idempotent), so a leader's death
never loses a fire. Imports no store, no component and not the app.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from piko.core.backfill import previous_fire
from piko.protocols import Clock, Trigger

_TICK = timedelta(microseconds=1)
_NEVER = datetime.max.replace(tzinfo=timezone.utc)
_MEMO = 1024  # recent distinct fire times kept to share equal ones
log = logging.getLogger("piko.kernel")

FireCallback = Callable[[str, list[datetime], bool], None]  # job_id, due times (oldest first), overflow


class _Slot(NamedTuple):
    """One job in the kernel: its row in the schedule table and, while it has a next fire, its
    heap item. One tuple per schedule, ordered by (due, seq), so the heap compares them in C and
    never reaches job_id; a heap item is live while the table holds that very tuple, any other
    is stale and skipped when popped (rescheduling replaces the tuple). Jitter is rare, so it
    is kept aside (Kernel._jitter_s) for the jobs that have it."""

    due: datetime  # scheduled_at plus this fire's jitter; _NEVER (off the heap) without a next fire
    seq: int  # push order: equal due times fire first in, first out
    job_id: str
    trigger: Trigger
    scheduled_at: datetime | None  # the trigger's fire time; None once it has no more


_new = tuple.__new__  # builds a _Slot without the Python-level __new__ NamedTuple adds (a hot path)


class Kernel:
    def __init__(self, clock: Clock, on_fire: FireCallback, *, max_sleep_s: float = 1.0,
                 max_backlog: int = 1000, jump_threshold_s: float = 1.0, standby_window_s: float = 120.0,
                 is_leader: Callable[[], bool] = lambda: True, on_clock_jump: Callable[[float], None] | None = None,
                 rng: random.Random | None = None, burst_slice: int = 256,
                 on_trigger_error: Callable[[str, Exception], None] | None = None,
                 wait_for_room: Callable[[], Awaitable[None]] | None = None,
                 on_standby_fire: Callable[[str], None] | None = None) -> None:
        self._clock = clock
        self._burst_slice = burst_slice
        self._on_trigger_error = on_trigger_error
        self._wait_for_room = wait_for_room  # the runner's back-pressure between slices of a burst
        self._on_standby_fire = on_standby_fire  # a fire due while not leader: a worker's hint to poll now
        self._on_fire = on_fire
        self._max_sleep_s = max_sleep_s
        self._max_backlog = max_backlog
        self._jump_threshold_s = jump_threshold_s
        self._standby_window = timedelta(seconds=standby_window_s)
        self.is_leader = is_leader
        self._on_clock_jump = on_clock_jump
        self._rng = rng or random.Random()
        self._slots: dict[str, _Slot] = {}
        self._jitter_s: dict[str, float] = {}  # only the jobs with jitter
        self._instants: dict[datetime, datetime] = {}  # recent fire times, to share equal ones
        self._heap: list[_Slot] = []
        self._seq = itertools.count()
        self._standby: deque[tuple[str, datetime]] = deque()
        self._requeued: dict[str, set[datetime]] = {}  # fires whose run could not be recorded, per job
        self._requeue_window = timedelta(seconds=max(standby_window_s, 3600.0))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._offset: float | None = None  # wall - monotonic, to notice clock steps
        self._next_replay = 0.0
        self.fires_dispatched = 0

    # -- schedule table --------------------------------------------------------------
    def schedule(self, job_id: str, trigger: Trigger, *, jitter_s: float = 0.0,
                 after: datetime | None = None) -> datetime | None:
        """(Re)place job_id's schedule; the first fire is strictly after `after` (default now)."""
        if jitter_s and jitter_s > 0:
            self._jitter_s[job_id] = jitter_s
        else:
            self._jitter_s.pop(job_id, None)
        scheduled_at = self._next_of(job_id, trigger, after or self._clock.now())
        self._place(job_id, trigger, scheduled_at)
        return scheduled_at

    def _next_of(self, job_id: str, trigger: Trigger, after: datetime) -> datetime | None:
        """The trigger's next fire; a trigger that raises stops only its own job, loudly."""
        try:
            return trigger.next_fire_time(after)
        except Exception as exc:
            log.error("job %s: its schedule %r failed to compute the next fire after %s, so it stops firing: "
                      "%s: %s", job_id, trigger, after.isoformat(), type(exc).__name__, exc)
            if self._on_trigger_error is not None:
                self._on_trigger_error(job_id, exc)
            return None

    def unschedule(self, job_id: str) -> bool:
        self._jitter_s.pop(job_id, None)
        return self._slots.pop(job_id, None) is not None  # its heap item dies as stale

    def next_fire_at(self, job_id: str) -> datetime | None:
        slot = self._slots.get(job_id)
        return slot.scheduled_at if slot else None

    def scheduled_jobs(self) -> list[str]:
        return list(self._slots)

    def _place(self, job_id: str, trigger: Trigger, scheduled_at: datetime | None) -> None:
        """Put the job's new slot in the table and, when it has a next fire, on the heap."""
        if scheduled_at is None:
            self._slots[job_id] = _Slot(_NEVER, 0, job_id, trigger, None)
            return
        due = scheduled_at = self._one_of(scheduled_at)
        jitter_s = self._jitter_s.get(job_id) if self._jitter_s else None
        if jitter_s:
            due = scheduled_at + timedelta(seconds=self._rng.uniform(0.0, jitter_s))
        slot = self._slots[job_id] = _new(_Slot, (due, next(self._seq), job_id, trigger, scheduled_at))
        was_first = not self._heap or due < self._heap[0].due
        heapq.heappush(self._heap, slot)
        if was_first:
            self._wake.set()

    def _one_of(self, at: datetime) -> datetime:
        """Equal fire times as one object: a cron table fires many jobs at the same minute, and each
        slot keeps its next fire time. Shared only when every field matches (the zone and fold too:
        the job sees it as its scheduled_time); the memo is dropped when it grows past _MEMO."""
        seen = self._instants.get(at)
        if seen is not None and seen.tzinfo is at.tzinfo and seen.fold == at.fold:
            return seen
        if len(self._instants) >= _MEMO:
            self._instants.clear()
        self._instants[at] = at
        return at

    # -- leadership --------------------------------------------------------------------
    def leadership_changed(self, is_leader: bool) -> None:
        """Called by the leader component; on gaining leadership, replay recent standby fires.

        Fires held back for any reason (seen while standing by, or requeued because they could
        not be recorded) go out together, one batch per job, so the runner coalesces them once.
        """
        if not is_leader:
            return
        cutoff = self._clock.now() - self._standby_window
        while self._standby:
            job_id, at = self._standby.popleft()
            if at >= cutoff:
                self._requeued.setdefault(job_id, set()).add(at)
        self._replay_requeued()

    def requeue(self, job_id: str, at: datetime) -> None:
        """A fire the runner could not record (store down, term lost): offer it again later.

        Replayed about once a second while leader, or with the job's next fire if that comes
        first; the runner then runs it, or records it MISSED when it is too late. Kept for
        max(standby window, 1 h), then dropped with an error.
        """
        self._requeued.setdefault(job_id, set()).add(at)

    def _replay_requeued(self) -> None:
        if not self.is_leader():  # the new leader replays what it saw while standing by
            self._drop_requeued_before(self._clock.now() - self._standby_window, quietly=True)
            return
        self._drop_requeued_before(self._clock.now() - self._requeue_window, quietly=False)
        pending, self._requeued = self._requeued, {}
        for job_id, times in pending.items():
            if job_id in self._slots:
                self._dispatch(job_id, sorted(times), False)

    def _drop_requeued_before(self, cutoff: datetime, *, quietly: bool) -> None:
        for job_id in list(self._requeued):
            times = self._requeued[job_id]
            old = {at for at in times if at < cutoff}
            if old and not quietly:
                log.error("job %s: %d fire(s) up to %s could not be recorded for over %s; giving up on them",
                          job_id, len(old), max(old).isoformat(), self._requeue_window)
            times -= old
            if not times:
                del self._requeued[job_id]

    # -- the loop ------------------------------------------------------------------------
    async def __aenter__(self) -> Kernel:
        self._task = asyncio.create_task(self.run_loop(), name="piko-kernel")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_loop(self) -> None:
        while True:
            now = self._clock.now()
            self._notice_clock_step(now)
            if self.fire_due(now, limit=self._burst_slice) >= self._burst_slice:
                # A burst: let this slice's fires start (their claims go to the store) before the next
                # slice is handed over, and let the lease, HTTP and reconcile tasks run in between.
                await (self._wait_for_room() if self._wait_for_room is not None else asyncio.sleep(0))
                continue
            if self._requeued and self._clock.monotonic() >= self._next_replay:
                self._next_replay = self._clock.monotonic() + self._max_sleep_s
                self._replay_requeued()
            delay = self._max_sleep_s
            if self._heap:
                delay = min(delay, max(0.0, (self._heap[0].due - now).total_seconds()))
            self._wake.clear()
            await self._clock.wait(self._wake, delay)

    def fire_due(self, now: datetime, limit: int | None = None) -> int:
        """Dispatch the entries due at `now` (at most `limit` jobs); return how many jobs fired."""
        fired = 0
        while self._heap and self._heap[0].due <= now and (limit is None or fired < limit):
            slot = heapq.heappop(self._heap)
            job_id, trigger, scheduled_at = slot.job_id, slot.trigger, slot.scheduled_at
            if self._slots.get(job_id) is not slot or scheduled_at is None:
                continue
            due = [scheduled_at]
            nxt = self._next_of(job_id, trigger, scheduled_at)
            while nxt is not None and nxt <= now and len(due) < self._max_backlog:
                due.append(nxt)
                nxt = self._next_of(job_id, trigger, nxt)
            overflow = nxt is not None and nxt <= now
            if overflow:  # an oversized backlog: the oldest ones and the newest, which may still be on time
                try:
                    newest = previous_fire(trigger, now + _TICK)
                except Exception:  # _next_of below reports a broken trigger
                    newest = None
                if newest is not None and newest > due[-1]:
                    due[-1] = newest
                log.warning("job %s: more than %d fire times were due at once; the oldest %d and the newest (%s) "
                            "are recorded, the ones after %s and before it are not", job_id, len(due),
                            len(due) - 1, due[-1].isoformat(), due[-2].isoformat() if len(due) > 1 else "-")
                nxt = self._next_of(job_id, trigger, now)
            self._place(job_id, trigger, nxt)
            self._dispatch(job_id, due, overflow)
            fired += 1
        return fired

    def _dispatch(self, job_id: str, due: list[datetime], overflow: bool) -> None:
        held = self._requeued.pop(job_id, None) if self._requeued else None
        if held:  # earlier fires of this job waiting to be offered again: one batch, one coalescing
            due = sorted(held.union(due))
        if not self.is_leader():
            if self._on_standby_fire is not None:
                self._on_standby_fire(job_id)
            self._standby.extend((job_id, at) for at in due)
            cutoff = self._clock.now() - self._standby_window
            while self._standby and self._standby[0][1] < cutoff:
                self._standby.popleft()
            return
        self.fires_dispatched += len(due)
        try:
            self._on_fire(job_id, due, overflow)
        except Exception:  # a broken callback must not stop the schedule
            log.exception("dispatching fire of job %s failed", job_id)

    def _notice_clock_step(self, now: datetime) -> None:
        offset = now.timestamp() - self._clock.monotonic()
        if self._offset is not None:
            step = offset - self._offset
            if abs(step) > self._jump_threshold_s:
                log.warning("wall clock stepped by %+.3fs; schedules follow the new time", step)
                if self._on_clock_jump is not None:
                    self._on_clock_jump(step)
                if step < 0:
                    self._reschedule_all(now)
        self._offset = offset

    def _reschedule_all(self, now: datetime) -> None:
        """After a backward step, fire times are recomputed from the new now."""
        for slot in list(self._slots.values()):  # new tuples: the old heap items go stale
            self._place(slot.job_id, slot.trigger, self._next_of(slot.job_id, slot.trigger, now))
