"""Cluster execution's queue on MySQL: placing runs, workers' claims, cancel requests.

Async steps on a cursor inside one transaction (store.py runs them through the pool). A worker
reads candidates FOR UPDATE SKIP LOCKED, so workers claiming at once take different rows and
none waits; then it locks the gate rows of their jobs, in job order (no deadlock), counts their
running runs, and starts what core/placement.py admits, each UPDATE guarded by the status it
expects. The leader places new runs under the same gates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from piko.core import placement
from piko.core.placement import JobLimits
from piko.core.types import QueueClaim, RunClaim, RunStatus
from piko.errors import StoreError
from piko.store import sql
from piko.store.codec import from_db, to_naive_utc
from piko.store.mysql import dialect as my
from piko.store.mysql.leases import check_fence
from piko.store.mysql.runs import insert_many, slots

LOOK_AHEAD = 16  # candidates read beyond the free slots: room to pass over runs of jobs at their limit


async def lock_gates(cur: Any, job_ids: Sequence[str]) -> None:
    """Lock these jobs' gate rows in job order (creating the missing ones first, once per job)."""
    if not job_ids:
        return
    await cur.execute(my.with_marks(my.FIND_GATES, len(job_ids)), tuple(job_ids))
    have = {r[0] for r in await cur.fetchall()}
    missing = [j for j in job_ids if j not in have]
    if missing:
        await cur.execute(my.ADD_GATES + ", ".join(["(%s)"] * len(missing)), missing)
    await cur.execute(my.with_marks(my.LOCK_GATES, len(job_ids)), tuple(job_ids))
    await cur.fetchall()


async def counts(cur: Any, job_ids: Sequence[str], *, is_current: bool = True) -> tuple[Counter[str], Counter[str]]:
    """(pending + running, running) per job: a current read after its gate is locked (or, for a
    queued placement's SKIPPED rule, which needs no exact count, the snapshot: fewer locks)."""
    live: Counter[str] = Counter()
    running: Counter[str] = Counter()
    if job_ids:
        statement = my.COUNT_LIVE if is_current else sql.COUNT_LIVE
        await cur.execute(my.with_marks(statement, len(job_ids)), tuple(job_ids))
        for job_id, status, n in await cur.fetchall():
            live[job_id] += int(n)
            if status == RunStatus.RUNNING.value:
                running[job_id] += int(n)
    return live, running


async def place_runs(cur: Any, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]:
    fences = {c.fence for c in claims}
    if len(fences) > 1:
        raise StoreError("place_runs: every claim of one batch must carry the same fence")
    fence = next(iter(fences), None)
    await check_fence(cur, fence)
    token = fence.token if fence else None
    keep = await slots(cur, claims, token)
    kept = [c for c, k in zip(claims, keep, strict=True) if k]
    # a run may start here only under its job's gate; a queued or skipped one needs only the counts
    gated = sorted({c.job_id for c in kept if c.status is RunStatus.RUNNING and c.max_instances is not None})
    await lock_gates(cur, gated)
    live, running = await counts(cur, sorted({c.job_id for c in kept if c.max_instances is not None}),
                                 is_current=bool(gated))
    statuses = placement.place(kept, live, running)
    placed = [placement.as_placed(c, status) for c, status in zip(kept, statuses, strict=True)]
    ids = iter(zip(await insert_many(cur, placed, token), statuses, strict=True))
    return [next(ids) if k else (None, c.status) for c, k in zip(claims, keep, strict=True)]


async def claim_queued(cur: Any, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
                       limits_for: Callable[[str], JobLimits | None], now: datetime) -> QueueClaim:
    await cur.execute(my.with_marks(my.SELECT_QUEUED, len(queues)), (*queues, capacity + LOOK_AHEAD))
    candidates = [sql.run_record(r, from_db) for r in await cur.fetchall()]
    if not candidates:
        return QueueClaim([], [])
    jobs = sorted({r.job_id for r in candidates})
    await lock_gates(cur, jobs)
    _, running = await counts(cur, jobs)
    start, missed = placement.admit(candidates, running, limits_for, now, capacity)
    at = to_naive_utc(now)
    if start:
        await cur.execute(my.with_marks(sql.START_QUEUED, len(start)),
                          (instance_id, claim_token, at, *(r.run_id for r in start)))
        if cur.rowcount != len(start):  # the rows are locked by us: this cannot happen, so say so loudly
            raise StoreError(f"claim_queued: started {cur.rowcount} of {len(start)} locked queued runs")
    for run, why in missed:
        await cur.execute(my.MISS_QUEUED, (instance_id, at, at, why, run.run_id))
    return QueueClaim(
        [replace(r, status=RunStatus.RUNNING, instance_id=instance_id, claim_token=claim_token, started_at=now)
         for r in start],
        [replace(r, status=RunStatus.MISSED, instance_id=instance_id, started_at=now, finished_at=now,
                 duration_s=0.0, error_type="Misfire", error_message=why) for r, why in missed])


async def request_cancel(cur: Any, column: str, value: object, by: str, now: datetime) -> tuple[int, int]:
    await cur.execute(my.q(sql.CANCEL_QUEUED.format(who=column)),
                      (to_naive_utc(now), f"cancelled by {by} before it started", by, value))
    cancelled = int(cur.rowcount)
    await cur.execute(my.q(sql.FLAG_RUNNING.format(who=column)), (by, value))
    return cancelled, int(cur.rowcount)
