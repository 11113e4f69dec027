"""Run records on MySQL: claims (lock + row), re-run claims, ends and the orphan sweep, as async
steps on a cursor inside the caller's transaction (store.py runs them through the pool).

A re-run locks its time's job_lock row FOR UPDATE first, so concurrent re-runs of one time
queue up and the second sees the first's row. The sweep's silence is measured on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from piko.core.types import Fence, RunClaim, RunFinish
from piko.errors import StoreError
from piko.store import sql
from piko.store.codec import to_naive_utc
from piko.store.mysql import batch
from piko.store.mysql import dialect as my
from piko.store.mysql.leases import check_fence


async def claim_many(cur: Any, claims: Sequence[RunClaim]) -> list[int | None]:
    """Every claim of a batch under one fence check: lock rows and run rows in few statements."""
    fences = {c.fence for c in claims}
    if len(fences) > 1:
        raise StoreError("claim_runs: every claim of one batch must carry the same fence")
    fence: Fence | None = next(iter(fences), None)
    await check_fence(cur, fence)
    token = fence.token if fence else None
    keep = await slots(cur, claims, token)
    kept = [c for c, k in zip(claims, keep, strict=True) if k]
    ids = iter(await insert_many(cur, kept, token))
    return [next(ids) if k else None for k in keep]


async def slots(cur: Any, claims: Sequence[RunClaim], token: int | None) -> list[bool]:
    """Which claims may write their row: lock rows taken together; re-runs checked one by one, after
    them, so a re-run sees the locks this transaction took."""
    locked = iter(await batch.take_locks(cur, [c for c in claims if c.take_lock], token))
    keep = [next(locked) if c.take_lock else True for c in claims]
    seen: set[tuple[str, Any]] = set()
    for n, c in enumerate(claims):
        slot = (c.job_id, c.scheduled_at)
        if keep[n] and c.rerun_if and not c.take_lock:
            keep[n] = slot not in seen and await _may_rerun(cur, c)
        if keep[n]:
            seen.add(slot)
    return keep


async def insert_many(cur: Any, claims: Sequence[RunClaim], token: int | None) -> list[int]:
    """The run rows (multi-row); a re-run's row takes the claim token of an ABANDONED run before it away."""
    ids = await batch.insert_runs(cur, claims, token)
    for claim, run_id in zip(claims, ids, strict=True):
        if claim.rerun_if:
            await cur.execute(my.STRIP_ABANDONED_TOKEN, (claim.job_id, to_naive_utc(claim.scheduled_at), run_id))
    return ids


async def _may_rerun(cur: Any, claim: RunClaim) -> bool:
    """Lock the slot's job_lock row (a second re-run of the time waits here until this transaction
    ends), then read its newest run as committed now; no lock row: no re-run."""
    at = to_naive_utc(claim.scheduled_at)
    await cur.execute(my.LOCK_SLOT, (claim.job_id, at))
    if await cur.fetchone() is None:
        return False
    await cur.execute(my.NEWEST_RUN_STATE, (claim.job_id, at))
    return sql.may_rerun(claim, await cur.fetchone())


async def finish_runs(cur: Any, finishes: Sequence[RunFinish]) -> list[int]:
    """Write the ends in few statements; the run ids whose row had moved on (see batch.finish_runs)."""
    return await batch.finish_runs(cur, finishes)


async def sweep(cur: Any, stale_before: datetime, now: datetime, dead: Sequence[str]) -> int:
    """Forget dead and silent instances, then mark their RUNNING rows ABANDONED; how many."""
    for instance_id in dead:
        await cur.execute(my.FORGET_INSTANCE, (instance_id,))
    silent_us = max(0, int((now - stale_before) / timedelta(microseconds=1)))  # measured on the server
    await cur.execute(my.FORGET_STALE_INSTANCES, (silent_us,))
    await cur.execute(my.ABANDON_ORPHANS)
    return int(cur.rowcount)
