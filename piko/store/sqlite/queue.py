"""Cluster execution's queue on SQLite: placing runs, workers' claims, cancel requests.

Run on the store's worker thread inside one write transaction (BEGIN IMMEDIATE: one writer at
a time, so counts cannot change between reading and writing; several processes on one host
take turns on the file lock). Decisions come from core/placement.py.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from piko.core import placement
from piko.core.placement import JobLimits
from piko.core.types import QueueClaim, RunClaim, RunStatus
from piko.errors import StoreError
from piko.store import sql
from piko.store.codec import from_db, to_text
from piko.store.sqlite.leases import check_fence
from piko.store.sqlite.runs import _check_reruns, insert_runs, memo, take_locks

LOOK_AHEAD = 4  # candidates read per free slot: room to pass over runs of jobs at their limit


def counts(conn: sqlite3.Connection, job_ids: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    """(pending + running, running) per job, among these jobs."""
    live: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for ids in sql.chunked(list(job_ids)):
        assert ids is not None
        for job_id, status, n in conn.execute(sql.COUNT_LIVE.format(marks=sql.marks(len(ids))), ids):
            live[job_id] += int(n)
            if status == RunStatus.RUNNING.value:
                running[job_id] += int(n)
    return live, running


def place_runs(conn: sqlite3.Connection, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]:
    """Place a batch in the write transaction (no other writer meanwhile): locks and rows in few statements."""
    fences = {c.fence for c in claims}
    if len(fences) > 1:
        raise StoreError("place_runs: every claim of one batch must carry the same fence")
    fence = next(iter(fences), None)
    check_fence(conn, fence)
    token = fence.token if fence else None
    ts = memo(to_text)
    locked = iter(take_locks(conn, [c for c in claims if c.take_lock], ts, token))
    keep = _check_reruns(conn, claims, [next(locked) if c.take_lock else True for c in claims], ts)
    kept = [c for c, k in zip(claims, keep, strict=True) if k]
    live, running = counts(conn, sorted({c.job_id for c in kept if c.max_instances is not None}))
    statuses = placement.place(kept, live, running)
    placed = [placement.as_placed(c, status) for c, status in zip(kept, statuses, strict=True)]
    run_ids = insert_runs(conn, placed, ts, token)
    for claim, run_id in zip(placed, run_ids, strict=True):
        if claim.rerun_if:
            conn.execute(sql.STRIP_ABANDONED_TOKEN, (claim.job_id, ts(claim.scheduled_at), run_id))
    ids = iter(zip(run_ids, statuses, strict=True))
    return [next(ids) if k else (None, c.status) for c, k in zip(claims, keep, strict=True)]


def claim_queued(conn: sqlite3.Connection, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
                 limits_for: Callable[[str], JobLimits | None], now: datetime) -> QueueClaim:
    rows = conn.execute(sql.SELECT_QUEUED.format(marks=sql.marks(len(queues))),
                        (*queues, capacity * LOOK_AHEAD + 8)).fetchall()
    candidates = [sql.run_record(r, from_db) for r in rows]
    _, running = counts(conn, sorted({r.job_id for r in candidates}))
    start, missed = placement.admit(candidates, running, limits_for, now, capacity)
    at = to_text(now)
    if start:
        conn.execute(sql.START_QUEUED.format(marks=sql.marks(len(start))),
                     (instance_id, claim_token, at, *(r.run_id for r in start)))
    for run, why in missed:
        conn.execute(sql.MISS_QUEUED, (instance_id, at, at, why, run.run_id))
    return QueueClaim(
        [replace(r, status=RunStatus.RUNNING, instance_id=instance_id, claim_token=claim_token, started_at=now)
         for r in start],
        [replace(r, status=RunStatus.MISSED, instance_id=instance_id, started_at=now, finished_at=now,
                 duration_s=0.0, error_type="Misfire", error_message=why) for r, why in missed])


def request_cancel(conn: sqlite3.Connection, column: str, value: object, by: str, now: datetime) -> tuple[int, int]:
    cancelled = conn.execute(sql.CANCEL_QUEUED.format(who=column),
                             (to_text(now), f"cancelled by {by} before it started", by, value)).rowcount
    flagged = conn.execute(sql.FLAG_RUNNING.format(who=column), (by, value)).rowcount
    return int(cancelled), int(flagged)
