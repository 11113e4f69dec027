"""The memory store's queue role (cluster execution): place runs, let workers claim them, cancel.

Decisions come from core/placement.py, as in the SQL stores; each method is one step on the
loop, so it needs no lock to be atomic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from piko.core import placement
from piko.core.lifecycle import CLAIMABLE, LIVE
from piko.core.placement import JobLimits
from piko.core.types import Fence, QueueClaim, RunClaim, RunStatus
from piko.errors import StoreError
from piko.protocols import Clock
from piko.store import sql
from piko.store.memory.tables import Tables


class MemoryQueue:
    """Mixed into MemoryStore, whose tables, clock and fence check it uses."""

    t: Tables
    clock: Clock
    _check_fence: Callable[[Fence | None], None]

    def _counts(self, job_ids: set[str]) -> tuple[Counter[str], Counter[str]]:
        live: Counter[str] = Counter()
        running: Counter[str] = Counter()
        for run in self.t.runs.values():
            if run.job_id in job_ids and run.status in LIVE:
                live[run.job_id] += 1
                running[run.job_id] += run.status is RunStatus.RUNNING
        return live, running

    async def place_runs(self, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]:
        fences = {c.fence for c in claims}
        if len(fences) > 1:
            raise StoreError("place_runs: every claim of one batch must carry the same fence")
        fence = next(iter(fences), None)
        self._check_fence(fence)
        live, running = self._counts({c.job_id for c in claims})
        out: list[tuple[int | None, RunStatus]] = []
        for claim in claims:  # one by one: a claim sees the rows of the batch's earlier ones
            if not self.t.lock_or_check(claim):
                out.append((None, claim.status))
                continue
            (status,) = placement.place([claim], live, running)
            out.append((self.t.insert(placement.as_placed(claim, status), fence.token if fence else None), status))
        return out

    async def claim_queued(self, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
                           limits_for: Callable[[str], JobLimits | None], now: datetime, share: int = 1) -> QueueClaim:
        candidates = [r for r in self.t.runs.values() if r.status in CLAIMABLE and r.queue in queues]
        capacity = sql.fair_take(capacity, min(len(candidates), sql.QUEUED_PEEK), share)
        _, running = self._counts({r.job_id for r in candidates})
        start, missed = placement.admit(candidates, running, limits_for, now, capacity)
        for run in start:
            self.t.runs[run.run_id] = replace(run, status=RunStatus.RUNNING, instance_id=instance_id,
                                              claim_token=claim_token, started_at=now)
        for run, why in missed:
            self.t.runs[run.run_id] = replace(run, status=RunStatus.MISSED, instance_id=instance_id, started_at=now,
                                              finished_at=now, duration_s=0.0, error_type="Misfire", error_message=why)
        return QueueClaim([self.t.runs[r.run_id] for r in start], [self.t.runs[r.run_id] for r, _ in missed])

    async def request_cancel(self, *, by: str, now: datetime, run_id: int | None = None,
                             job_id: str | None = None) -> tuple[int, int]:
        cancelled, flagged = 0, 0
        for run in list(self.t.runs.values()):
            if (run_id is not None and run.run_id != run_id) or (job_id is not None and run.job_id != job_id):
                continue
            if run.status is RunStatus.PENDING:
                self.t.runs[run.run_id] = replace(run, status=RunStatus.CANCELLED, finished_at=now, duration_s=0.0,
                                                  error_type="Cancelled", cancelled_by=by,
                                                  error_message=f"cancelled by {by} before it started")
                cancelled += 1
            elif run.status is RunStatus.RUNNING and not run.cancel_requested:
                self.t.runs[run.run_id] = replace(run, cancel_requested=True, cancelled_by=by)
                flagged += 1
        return cancelled, flagged

    async def cancel_requests(self, instance_id: str) -> list[tuple[int, str]]:
        return [(r.run_id, r.cancelled_by or "") for r in self.t.runs.values()
                if r.status is RunStatus.RUNNING and r.instance_id == instance_id and r.cancel_requested]

    async def queue_depths(self) -> dict[str, int]:
        return dict(Counter(r.queue for r in self.t.runs.values() if r.status is RunStatus.PENDING))
