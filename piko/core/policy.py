"""Pure decisions about fires: which scheduled times run, which are recorded as missed.

Misfire: a fire later than `misfire_grace` (None = no limit) is not run but recorded
MISSED with how late it was. Coalesce: when several fire times of one job are due at once
(the loop was blocked, the clock stepped, the host slept), only the newest runs; the older
ones are recorded MISSED as coalesced. Nothing is dropped without a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from piko.core.backoff import backoff
from piko.core.types import RunStatus


@dataclass(frozen=True)
class FireDecision:
    scheduled_at: datetime
    status: RunStatus  # RUNNING = run it; MISSED = record a miss
    reason: str | None = None


def grace_of(misfire_grace_s: float | None) -> timedelta | None:
    return None if misfire_grace_s is None else timedelta(seconds=misfire_grace_s)


def busy_reason(max_instances: int, running: int, in_handler: int) -> str:
    """Why a fire is SKIPPED: max_instances fires of the job are still in progress."""
    if running > in_handler:
        return (f"max_instances={max_instances} reached: {running} earlier fire(s) still in progress, "
                f"{in_handler} in the handler, the rest waiting for their run record (the store is slow "
                f"or unavailable) or for a retry")
    return f"max_instances={max_instances} reached: {running} run(s) still going"


def _late_text(late: timedelta) -> str:
    return f"{late.total_seconds():.3f}s"


def decide_fires(
    scheduled: list[datetime], now: datetime, grace: timedelta | None, coalesce: bool
) -> list[FireDecision]:
    """Decide each due fire time (oldest first) of one job."""
    if not scheduled:
        return []
    if len(scheduled) == 1 and (grace is None or now - scheduled[0] <= grace):
        return [FireDecision(scheduled[0], RunStatus.RUNNING)]  # the common case, on the hot path
    out: list[FireDecision] = []
    ordered = sorted(scheduled)
    newest = ordered[-1]
    for at in ordered:
        late = now - at
        if coalesce and at != newest:
            out.append(FireDecision(at, RunStatus.MISSED, f"coalesced: a newer fire ({newest.isoformat()}) runs instead"))
        elif grace is not None and late > grace:
            out.append(FireDecision(at, RunStatus.MISSED,
                                    f"late by {_late_text(late)}, beyond misfire_grace_time {_late_text(grace)}"))
        else:
            out.append(FireDecision(at, RunStatus.RUNNING))
    return out


def retry_delay(attempt: int, base_s: float, cap_s: float, jitter_fraction: float) -> float:
    """Capped exponential backoff before attempt `attempt + 1`; jitter_fraction in [0, 1) only
    shortens it, by up to half, so a run never waits longer than retry_backoff_max."""
    return backoff(attempt, base_s, cap_s, draw=jitter_fraction, jitter=(1.0, 0.5))
