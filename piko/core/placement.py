"""Cluster execution's decisions, pure: where a new run goes, and which queued runs a worker takes.

A store calls these inside the transaction that holds the job's gate (so counts cannot change
under it) and carries the answer out. Rules:
- A new scheduled fire of a job that already has `max_instances` runs pending or running in the
  whole cluster is recorded SKIPPED (as in leader mode, but counted cluster-wide).
- A run starts (RUNNING) only while fewer than `max_instances` runs of its job are running;
  otherwise it is queued (PENDING) and a worker starts it when a slot frees. Every way into
  RUNNING passes here, so the limit holds under any race.
- A worker takes at most its free capacity, oldest first; a queued run claimed later than its
  misfire grace is recorded MISSED instead of run (a scheduled first attempt only: retries, re-runs
  and manual runs wait as long as it takes); runs of jobs this worker has no code for
  are left for a worker that has.
Imports only piko.core.types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from piko.core.types import RunClaim, RunRecord, RunStatus


@dataclass(frozen=True)
class JobLimits:
    """What a worker knows of a job: its cluster-wide max_instances and misfire grace (None = no limit)."""

    max_instances: int
    misfire_grace: timedelta | None


def place(claims: Sequence[RunClaim], live: Counter[str], running: Counter[str]) -> list[RunStatus]:
    """The status each claim's row is written with: RUNNING, PENDING or SKIPPED.

    `live` and `running` count the job's PENDING + RUNNING and RUNNING rows before this batch;
    both are updated as the batch is placed (two fires of one job in one batch count each other).
    A claim without max_instances is written as it asks.
    """
    out = []
    for claim in claims:
        limit = claim.max_instances
        job = claim.job_id
        if limit is None:
            status = claim.status
        elif claim.kind == "schedule" and claim.attempt == 1 and live[job] >= limit:
            status = RunStatus.SKIPPED
        elif claim.status is RunStatus.RUNNING and running[job] < limit:
            status = RunStatus.RUNNING
        else:
            status = RunStatus.PENDING
        if status in (RunStatus.RUNNING, RunStatus.PENDING):
            live[job] += 1
        if status is RunStatus.RUNNING:
            running[job] += 1
        out.append(status)
    return out


def as_placed(claim: RunClaim, status: RunStatus) -> RunClaim:
    """The claim as its row is written: SKIPPED says why; only a RUNNING row keeps a claim token."""
    if status is RunStatus.SKIPPED:
        return replace(claim, status=status, claim_token=None, error_type="MaxInstances",
                       error_message=f"max_instances={claim.max_instances} reached: runs of this job already "
                                     f"pending or running in the cluster")
    return replace(claim, status=status, claim_token=claim.claim_token if status is RunStatus.RUNNING else None)


def admit(candidates: Sequence[RunRecord], running: Counter[str], limits_for: Callable[[str], JobLimits | None],
          now: datetime, capacity: int) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """(runs to start here, runs to record MISSED with why), from queued candidates oldest first."""
    start: list[RunRecord] = []
    missed: list[tuple[RunRecord, str]] = []
    for run in candidates:
        limits = limits_for(run.job_id)
        if limits is None:
            continue  # no code for it here: another worker's
        late = now - run.scheduled_at
        is_on_time_only = run.kind == "schedule" and run.attempt == 1
        if is_on_time_only and limits.misfire_grace is not None and late > limits.misfire_grace:
            missed.append((run, f"claimed {late.total_seconds():.3f}s after its time, beyond misfire_grace_time "
                                f"{limits.misfire_grace.total_seconds():.3f}s (no worker was free)"))
            continue
        if len(start) >= capacity or running[run.job_id] >= limits.max_instances:
            continue
        running[run.job_id] += 1
        start.append(run)
    return start, missed
