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
from piko.store.mysql import dialect as my
from piko.store.mysql.leases import check_fence


async def claim(cur: Any, claim: RunClaim, token: int | None) -> int | None:
    """Lock row (or re-run check) and run row; None when the lock is taken or a re-run may not go."""
    if not await claim_slot(cur, claim, token):
        return None
    return await insert_run(cur, claim, token)


async def claim_slot(cur: Any, claim: RunClaim, token: int | None) -> bool:
    """Take the time's lock row, or pass a re-run's check (sees this transaction's own rows)."""
    if claim.take_lock:
        await cur.execute(my.TAKE_LOCK, (claim.job_id, to_naive_utc(claim.scheduled_at), claim.instance_id, token,
                                         to_naive_utc(claim.started_at)))
        return bool(cur.rowcount == 1)
    return not claim.rerun_if or await _may_rerun(cur, claim)


async def insert_run(cur: Any, claim: RunClaim, token: int | None) -> int:
    """One run row; a re-run's row takes the claim token of an ABANDONED run before it away."""
    await cur.execute(my.INSERT_RUN, sql.run_params(claim, to_naive_utc, token))
    run_id = int(cur.lastrowid)
    if claim.rerun_if:
        await cur.execute(my.STRIP_ABANDONED_TOKEN, (claim.job_id, to_naive_utc(claim.scheduled_at), run_id))
    return run_id


async def claim_many(cur: Any, claims: Sequence[RunClaim]) -> list[int | None]:
    """Every claim of a batch under one fence check."""
    fences = {c.fence for c in claims}
    if len(fences) > 1:
        raise StoreError("claim_runs: every claim of one batch must carry the same fence")
    fence: Fence | None = next(iter(fences), None)
    await check_fence(cur, fence)
    token = fence.token if fence else None
    return [await claim(cur, c, token) for c in claims]


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
    """Write the ends (one statement each: what executemany would send); the run ids whose row had
    moved on (already ended, or handed to another attempt: its claim token is gone)."""
    refused = []
    for f in finishes:
        await cur.execute(my.FINISH_RUN_MEASURED, (f.status.value, to_naive_utc(f.finished_at), f.duration_s,
                                                   to_naive_utc(f.finished_at), f.error_type, f.error_message,
                                                   f.error_traceback, f.run_id, f.claim_token))
        if cur.rowcount != 1:
            refused.append(f.run_id)
    return refused


async def sweep(cur: Any, stale_before: datetime, now: datetime, dead: Sequence[str]) -> int:
    """Forget dead and silent instances, then mark their RUNNING rows ABANDONED; how many."""
    for instance_id in dead:
        await cur.execute(my.FORGET_INSTANCE, (instance_id,))
    silent_us = max(0, int((now - stale_before) / timedelta(microseconds=1)))  # measured on the server
    await cur.execute(my.FORGET_STALE_INSTANCES, (silent_us,))
    await cur.execute(my.ABANDON_ORPHANS)
    return int(cur.rowcount)
