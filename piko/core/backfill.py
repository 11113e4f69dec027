"""Data windows for stateful jobs (pure): which [start, end) windows a run or a backfill covers.

Windows follow the job's own schedule: the window of a fire at T ends at T and starts at
the previous fire time (or at the watermark, when one is stored). All searches are bounded.
A run that did not succeed runs again as its time's next attempt (rerun_of: `piko backfill
--rerun-failed` and the status page's re-run claim it alike).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from piko.core.lifecycle import RERUNNABLE
from piko.core.types import DataInterval, RunRecord
from piko.protocols import Trigger

_MAX_LOOKBACK = timedelta(days=800)


def previous_fire(trigger: Trigger, at: datetime) -> datetime | None:
    """The last fire time strictly before `at`, or None if none within ~2 years."""
    step = timedelta(seconds=1)
    while step <= _MAX_LOOKBACK:
        probe = trigger.next_fire_time(at - step - timedelta(microseconds=1))
        if probe is not None and probe < at:
            last = probe
            while True:
                nxt = trigger.next_fire_time(last)
                if nxt is None or nxt >= at:
                    return last
                last = nxt
        step *= 4
    return None


def window_for(trigger: Trigger | None, at: datetime, watermark: datetime | None) -> DataInterval:
    """The data window of the run scheduled at `at`."""
    if watermark is not None and watermark < at:
        return DataInterval(watermark, at)
    start = previous_fire(trigger, at) if trigger is not None else None
    return DataInterval(start or at, at)


def windows_between(trigger: Trigger, start: datetime, end: datetime, limit: int) -> tuple[list[DataInterval], int]:
    """Every window whose end lies in (start, end], oldest first, at most `limit`; and how many more."""
    out: list[DataInterval] = []
    extra = 0
    prev = start
    nxt = trigger.next_fire_time(start)
    while nxt is not None and nxt <= end:
        if len(out) < limit:
            out.append(DataInterval(prev, nxt))
        else:
            extra += 1
            if extra >= 1_000_000:
                break
        prev, nxt = nxt, trigger.next_fire_time(nxt)
    return out, extra


def aligned_windows(trigger: Trigger, start: datetime, end: datetime, limit: int) -> tuple[list[DataInterval], int]:
    """The windows a backfill of [start, end] runs: on the schedule's grid, at most `limit`; and how
    many more. A `start` between two fires begins at the fire before it: a first window starting
    at `start` would be a stub that marks its whole end time done."""
    first = previous_fire(trigger, start + timedelta(microseconds=1))
    return windows_between(trigger, first or start, end, limit)


def no_window_reason(trigger: Trigger, start: datetime) -> str:
    """Why no window ends after `start` (for a message): the schedule starts later, is over, or
    has no fire in the range."""
    nxt = trigger.next_fire_time(start)
    before = previous_fire(trigger, start + timedelta(microseconds=1))
    if nxt is None:
        last = f" (its last fire was at {before.isoformat()})" if before is not None else ""
        return f"the schedule has no fire after {start.isoformat()}{last}"
    if before is None:
        return f"the schedule's first fire is at {nxt.isoformat()}"
    return f"the schedule's next fire after {start.isoformat()} is at {nxt.isoformat()}"


def rerun_of(prev: RunRecord) -> dict[str, Any]:
    """The claim options of a re-run of `prev` (a RERUNNABLE run): the next attempt of its time,
    claimed without taking the run lock again (the time holds it) and only while `prev` is still
    the newest run of that time, so two re-runs racing run it once."""
    return {"take_lock": False, "rerun_if": RERUNNABLE, "attempt": prev.attempt + 1}
