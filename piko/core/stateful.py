"""Stateful jobs: data windows, the watermark, and catching up on missed windows.

A stateful run's window is [previous fire, its fire) on the job's own schedule. The
watermark (`last_data_time`) moves only on success, by compare-and-set:
- CATCH_UP: only contiguously (from the window's start to its end), so a failed window
  holds it back until that window is retried and succeeds; missed windows (downtime, a
  failure) are run in order, oldest first, at most `max_windows` per pass, the rest reported.
  A scheduled fire whose window is ahead of the watermark does not run out of order: it is
  recorded SKIPPED (WindowWaits) and the catch-up runs it in its turn.
- SKIP: to the newest successful end; after downtime only the latest window runs and the
  skipped ones are reported.
Windows are run with the run lock at their end time, so catching up is idempotent. A window
still RUNNING elsewhere holds the later ones back; the catch-up looks again every `recheck_s`
(the heartbeat interval), so once the orphan sweep marks a dead instance's run ABANDONED it
is re-run within about orphan_after_s + 2 x heartbeat_interval_s of that instance's last beat.
A window this process itself still runs, or whose end waits for the store, is never re-run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from piko.core import backfill
from piko.core.registry import JobSpec
from piko.core.types import BackfillPolicy, DataInterval, RunStatus
from piko.errors import PikoError, WindowWaits
from piko.protocols import Clock, Store, Trigger

log = logging.getLogger("piko.stateful")
_BUSY = object()  # a window that is running elsewhere
_TICK = timedelta(microseconds=1)
_RERUN = {RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED, RunStatus.ABANDONED, RunStatus.MISSED,
          RunStatus.SKIPPED}


class Watermarks:
    def __init__(self, store: Store, clock: Clock, trigger_for: Callable[[str], Trigger | None],
                 fence: Callable[[], Any], max_windows: int, recheck_s: float = 2.0,
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self._store = store
        self._is_leader = is_leader  # catching up is the leader's: a standby or a worker never does
        self._clock = clock
        self._trigger_for = trigger_for
        self._fence = fence
        self._max_windows = max_windows
        self._recheck_s = recheck_s
        self._catching_up: dict[str, asyncio.Task[int]] = {}

    async def window_for(self, spec: JobSpec, at: datetime, kind: str = "manual") -> DataInterval:
        """The window of a run at `at`: [previous fire, at) when `at` is a fire time of the schedule.

        A manual run "now" (not a fire time) gets the latest complete window instead, the one
        ending at the most recent fire: windows stay aligned, so the watermark can move past it.
        A scheduled fire of a CATCH_UP job whose watermark is behind its window raises
        WindowWaits: windows run in order, so the catch-up runs it after the earlier ones.
        """
        window = await self._window_at(spec, at)
        if kind == "schedule" and spec.backfill_policy is BackfillPolicy.CATCH_UP:
            mark = await self._store.get_watermark(spec.job_id)
            if mark is not None and mark < window.start:
                raise WindowWaits(f"window [{window.start.isoformat()}, {window.end.isoformat()}) waits for the "
                                  f"earlier ones from {mark.isoformat()} (CATCH_UP runs windows in order)", window)
        return window

    async def _window_at(self, spec: JobSpec, at: datetime) -> DataInterval:
        trigger = self._trigger_for(spec.job_id)
        prev = backfill.previous_fire(trigger, at) if trigger is not None else None
        if trigger is not None and prev is not None:
            if trigger.next_fire_time(prev) != at:  # not a fire time
                before = backfill.previous_fire(trigger, prev)
                if before is not None:
                    return DataInterval(before, prev)
            return backfill.window_for(trigger, at, None)
        # no earlier fire (a date job, or the first fire): the window starts at the watermark
        return backfill.window_for(None, at, await self._store.get_watermark(spec.job_id))

    async def advance(self, spec: JobSpec, window: DataInterval) -> bool:
        """Move the watermark after a successful window; True if it moved."""
        current = await self._store.get_watermark(spec.job_id)
        if spec.backfill_policy is BackfillPolicy.CATCH_UP:
            if current is not None and current != window.start:
                return False  # not contiguous: an earlier window is missing
        elif current is not None and window.end <= current:
            return False
        return await self._store.cas_watermark(spec.job_id, current, window.end, self._fence())

    async def after_run(self, spec: JobSpec, window: DataInterval | None, status: RunStatus) -> None:
        """After a scheduled run: move the watermark on success; catch up when it lags behind."""
        if window is None:
            return
        if status is RunStatus.SUCCESS:
            await self.advance(spec, window)
        if spec.backfill_policy is BackfillPolicy.CATCH_UP:
            mark = await self._store.get_watermark(spec.job_id)
            trigger = self._trigger_for(spec.job_id)
            after_mark = trigger.next_fire_time(mark) if trigger is not None and mark is not None else None
            # after a success, windows that came due meanwhile (their fires waited); after a failure,
            # only older windows: the failed one is retried at the next fire, not at once
            limit = self._clock.now() if status is RunStatus.SUCCESS else window.start
            if after_mark is not None and after_mark <= limit:
                self.start_catch_up(spec)

    def start_catch_up(self, spec: JobSpec) -> None:
        if self._run is None or spec.job_id in self._catching_up or not self._is_leader():
            return
        # "now" is taken here, not after the store answers: fires after this instant are the kernel's,
        # so a catch-up never races the scheduled fire of the window that is just ending.
        task = asyncio.create_task(self.catch_up(spec, until=self._clock.now()), name=f"piko-catch-up-{spec.job_id}")
        self._catching_up[spec.job_id] = task
        job_id = spec.job_id
        task.add_done_callback(lambda _t: self._catching_up.pop(job_id, None))

    _run: Callable[..., Any] | None = None
    _holds: Callable[[str, datetime], bool] = staticmethod(lambda job_id, at: False)  # type: ignore[assignment]

    _record: Callable[..., Awaitable[Any]] | None = None

    def bind_runner(self, run: Callable[..., Any], holds: Callable[[str, datetime], bool] | None = None,
                    record: Callable[..., Awaitable[Any]] | None = None) -> None:
        """`run(job_id, scheduled_time, *, kind, data_interval, take_lock)` -> RunOutcome; `holds(job_id,
        at)`: a run of that time is in progress in this process, or its end waits for the store;
        `record(job_id, at, status, error_type, reason, window)`: a row born final (SKIPPED)."""
        self._run = run
        self._record = record
        if holds is not None:
            self._holds = holds

    async def catch_up(self, spec: JobSpec, until: datetime | None = None) -> int:
        """Run the windows between the watermark and `until` (default now); return how many ran."""
        ran, is_done = 0, False
        while not is_done:  # windows that came due during a pass (their fires waited) run next
            passed, is_done, busy_at = await self._catch_up_pass(spec, until or self._clock.now())
            ran += passed
            if busy_at is not None:  # held back by a run elsewhere: look again until it ended or was abandoned
                await self._wait_while_running(spec.job_id, busy_at)
                until, is_done = None, False
                continue
            until, is_done = None, is_done or passed == 0
        return ran

    async def _wait_while_running(self, job_id: str, at: datetime) -> None:
        while True:
            await self._clock.wait(None, self._recheck_s)
            if self._holds(job_id, at):
                continue
            try:
                if await self._store.latest_status(job_id, at) is not RunStatus.RUNNING:
                    return
            except PikoError as exc:
                log.debug("job %s: checking the window ending %s failed: %s", job_id, at.isoformat(), exc)

    async def _catch_up_pass(self, spec: JobSpec, until: datetime) -> tuple[int, bool, datetime | None]:
        """(windows run, whether to stop: a window failed or catching up cannot go on, and the end of
        a window running elsewhere that holds the rest back)."""
        trigger = self._trigger_for(spec.job_id)
        mark = await self._store.get_watermark(spec.job_id)
        if trigger is None or mark is None or self._run is None:
            return 0, True, None
        windows, extra = backfill.windows_between(trigger, mark, until, self._max_windows)
        if spec.backfill_policy is BackfillPolicy.SKIP and (len(windows) > 1 or extra):
            latest = windows[-1]
            if extra:  # past backfill_max_windows: windows[-1] is not the latest, the one ending at the last fire is
                last = backfill.previous_fire(trigger, until + _TICK)
                if last is not None and last > latest.end:
                    latest = DataInterval(backfill.previous_fire(trigger, last) or latest.end, last)
            log.warning("job %s (backfill SKIP): %d missed window(s) [%s, %s) not run; running the latest only",
                        spec.job_id, len(windows) + extra - 1, mark.isoformat(), latest.start.isoformat())
            await self._record_skipped(spec, [w for w in windows if w.end < latest.end], latest, extra)
            windows = [latest]
        elif extra:
            log.warning("job %s: %d more missed window(s) beyond backfill_max_windows=%d; they run on later passes",
                        spec.job_id, extra, self._max_windows)
        ran = 0
        for window in windows:
            try:
                outcome = await self._run_window(spec, window)
            except PikoError as exc:
                log.warning("job %s: catching up stopped: %s", spec.job_id, exc)
                return ran, True, None
            if outcome is _BUSY:
                return ran, True, window.end  # running elsewhere (a long run): later windows wait for it
            ran += outcome is not None
            if outcome is not None and outcome.status is not RunStatus.SUCCESS:
                return ran, True, None  # retried on the next pass; the watermark stays
        return ran, spec.backfill_policy is not BackfillPolicy.CATCH_UP, None

    async def _record_skipped(self, spec: JobSpec, skipped: list[DataInterval], latest: DataInterval,
                              extra: int) -> None:
        """A SKIP job's windows that do not run are recorded SKIPPED (shown by `piko runs`, re-runnable
        with `piko backfill --rerun-failed`); past backfill_max_windows only the log line counts them."""
        if self._record is None or not skipped:
            return
        reason = (f"backfill SKIP: the newest window [{latest.start.isoformat()}, {latest.end.isoformat()}) "
                  f"runs instead" + (f"; {extra} older window(s) beyond backfill_max_windows not recorded"
                                     if extra else ""))
        await asyncio.gather(*(self._record(spec.job_id, w.end, RunStatus.SKIPPED, "BackfillSkip", reason,
                                            DataInterval(w.start, w.end)) for w in skipped))

    async def _run_window(self, spec: JobSpec, window: DataInterval) -> Any:
        assert self._run is not None
        outcome = await self._run(spec.job_id, window.end, kind="backfill", data_interval=window, take_lock=True)
        if outcome.run_id is not None:
            return outcome
        status = await self._store.latest_status(spec.job_id, window.end)
        if status is RunStatus.SUCCESS:
            await self.advance(spec, window)  # done earlier (e.g. by the regular fire)
            return None
        if status in _RERUN and not self._holds(spec.job_id, window.end):  # ABANDONED while we still run it
            return await self._run(spec.job_id, window.end, kind="backfill", data_interval=window, take_lock=False)
        return _BUSY  # RUNNING elsewhere: leave it

    async def close(self) -> None:
        tasks = list(self._catching_up.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
