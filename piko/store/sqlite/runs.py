"""Run records on SQLite: claims (lock + row), re-run claims, ends, the orphan sweep; run on the
store's worker thread, inside its write transactions.

Many claims or finishes go out in a few statements: each sqlite3 step releases the GIL; while the event loop is busy, taking it back can wait a
whole switch interval (5 ms). So a batch is written with multi-row statements, a few steps
for hundreds of rows, instead of a few steps per row. Chunks stay under SQLite's smallest
parameter limit (999). Run ids of a multi-row INSERT are consecutive (AUTOINCREMENT inside
one write transaction); the first id of each chunk is checked, with a per-row fallback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from piko.core.types import RunClaim, RunFinish
from piko.errors import StoreError
from piko.store import sql
from piko.store.codec import to_text
from piko.store.sqlite import dialect
from piko.store.sqlite.leases import check_fence

_PARAMS_MAX = 999
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def memo(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """fn with its answers kept for one batch (timestamps repeat across a burst's claims)."""
    seen: dict[Any, Any] = {}

    def cached(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            out = seen[value] = fn(value)
            return out
    return cached


def _chunks(items: Sequence[Any], width: int) -> list[Sequence[Any]]:
    size = max(1, _PARAMS_MAX // width)
    return [items[i:i + size] for i in range(0, len(items), size)]


_LOCK_INSERT = "INSERT{ignore} INTO job_lock (job_id, scheduled_time, instance_id, fence_token, locked_at) VALUES "


def take_locks(conn: sqlite3.Connection, claims: Sequence[RunClaim], ts: Callable[[Any], Any],
               token: int | None) -> list[bool]:
    """Insert lock rows; which claims got theirs (inside the caller's write transaction)."""
    got: list[bool] = []
    for chunk in _chunks(claims, 5):
        rows = [(c.job_id, ts(c.scheduled_at), c.instance_id, token, ts(c.started_at)) for c in chunk]
        got += _insert_locks_returning(conn, rows) if _HAS_RETURNING else _insert_locks_checked(conn, rows)
    return got


def _insert_locks_returning(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[bool]:
    """One statement: INSERT OR IGNORE returns just the rows it inserted (taken keys are skipped)."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * len(rows))
    inserted = {tuple(k) for k in conn.execute(
        _LOCK_INSERT.format(ignore=" OR IGNORE") + values + " RETURNING job_id, scheduled_time",
        [v for row in rows for v in row])}
    got = []
    for row in rows:
        key = (row[0], row[1])
        got.append(key in inserted)
        inserted.discard(key)  # a key twice in one batch: only its first claim gets it
    return got


def _insert_locks_checked(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[bool]:
    """SQLite < 3.35 (no RETURNING): read which keys are taken, then insert the free ones."""
    taken = {tuple(k) for k in conn.execute(  # usually none: one step; a join so the primary key is used
        "SELECT l.job_id, l.scheduled_time FROM (VALUES " + ", ".join(["(?, ?)"] * len(rows)) + ") AS v "
        "JOIN job_lock l ON l.job_id = v.column1 AND l.scheduled_time = v.column2",
        [v for row in rows for v in row[:2]])}
    got, fresh = [], []
    for row in rows:
        is_free = (row[0], row[1]) not in taken
        got.append(is_free)
        if is_free:
            taken.add((row[0], row[1]))  # a key twice in one batch: only the first gets it
            fresh.append(row)
    if fresh:
        conn.execute(_LOCK_INSERT.format(ignore="") + ", ".join(["(?, ?, ?, ?, ?)"] * len(fresh)),
                     [v for row in fresh for v in row])
    return got


def insert_runs(conn: sqlite3.Connection, claims: Sequence[RunClaim], ts: Callable[[Any], Any],
                token: int | None) -> list[int]:
    ids: list[int] = []
    for chunk in _chunks(claims, sql.RUN_WIDTH):
        params = [sql.run_params(c, ts, token) for c in chunk]
        cur = conn.execute(sql.INSERT_RUN.split(" VALUES ")[0] + " VALUES " +
                           ", ".join([sql.RUN_PLACEHOLDERS] * len(params)), [v for p in params for v in p])
        last = int(cur.lastrowid or 0)
        first = last - len(params) + 1
        check = conn.execute("SELECT job_id FROM job_run WHERE run_id = ?", (first,)).fetchone()
        if check is not None and check[0] == chunk[0].job_id:
            ids.extend(range(first, last + 1))
        else:  # not consecutive after all: find them one by one (never seen; kept for safety)
            ids.extend(_find_ids(conn, chunk, ts))
    return ids


def _find_ids(conn: sqlite3.Connection, chunk: Sequence[RunClaim], ts: Callable[[Any], Any]) -> list[int]:
    return [int(conn.execute("SELECT MAX(run_id) FROM job_run WHERE job_id = ? AND scheduled_time = ? "
                             "AND instance_id = ?", (c.job_id, ts(c.scheduled_at), c.instance_id)).fetchone()[0])
            for c in chunk]


def finish_runs(conn: sqlite3.Connection, finishes: Sequence[RunFinish], ts: Callable[[Any], Any]) -> list[int]:
    """Write the ends; the run ids whose row had moved on (already ended, or handed to another
    attempt: its claim token is gone) and so kept what it had."""
    ended: set[int] = set()
    if not _HAS_RETURNING:  # SQLite < 3.35: one statement per end, counted
        for f in finishes:
            cur = conn.execute(dialect.FINISH_RUN_MEASURED, (f.status.value, ts(f.finished_at), f.duration_s,
                                                             ts(f.finished_at), f.error_type, f.error_message,
                                                             f.error_traceback, f.result, f.run_id, f.claim_token))
            if cur.rowcount == 1:
                ended.add(f.run_id)
        return sql.refused_ends(finishes, ended)
    first = list({f.run_id: f for f in reversed(finishes)}.values())  # UPDATE FROM picks any of two rows
    for chunk in _chunks(first, 8):
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        ended.update(int(r[0]) for r in conn.execute(
            dialect.FINISH_RUNS_FROM.format(values=values),
            [x for f in chunk for x in (f.run_id, f.status.value, ts(f.finished_at), f.error_type, f.error_message,
                                        f.duration_s, f.error_traceback, f.claim_token, f.result)]))
    return sql.refused_ends(finishes, ended)


def claim(conn: sqlite3.Connection, claim: RunClaim) -> int | None:
    """One claim: its lock row (or its re-run check) and its run row, in the caller's transaction."""
    check_fence(conn, claim.fence)
    token = claim.fence.token if claim.fence else None
    scheduled = to_text(claim.scheduled_at)
    if claim.take_lock:
        taken = conn.execute(dialect.TAKE_LOCK, (claim.job_id, scheduled, claim.instance_id, token,
                                                 to_text(claim.started_at)))
        if taken.rowcount != 1:
            return None
    elif claim.rerun_if and not _may_rerun(conn, claim, scheduled):
        return None
    return insert_run(conn, claim, token)


def insert_run(conn: sqlite3.Connection, claim: RunClaim, token: int | None) -> int:
    """One run row; a re-run's row takes the claim token of an ABANDONED run before it away."""
    run_id = int(conn.execute(sql.INSERT_RUN, sql.run_params(claim, to_text, token)).lastrowid)  # type: ignore[arg-type]
    if claim.rerun_if:
        conn.execute(sql.STRIP_ABANDONED_TOKEN, (claim.job_id, to_text(claim.scheduled_at), run_id))
    return run_id


def claim_many(conn: sqlite3.Connection, claims: Sequence[RunClaim]) -> list[int | None]:
    """A batch of claims under one fence: locks, re-run checks and rows in few statements."""
    if not claims:
        return []
    fences = {c.fence for c in claims}
    if len(fences) > 1:
        raise StoreError("claim_runs: every claim of one batch must carry the same fence")
    fence = next(iter(fences))
    check_fence(conn, fence)
    token = fence.token if fence else None
    ts = memo(to_text)  # a burst's claims share their scheduled time: format it once
    locked = [c for c in claims if c.take_lock]
    got = iter(take_locks(conn, locked, ts, token)) if locked else iter(())
    keep = [not c.take_lock or next(got) for c in claims]
    if any(c.rerun_if for c in claims):
        keep = _check_reruns(conn, claims, keep, ts)
    ids = iter(insert_runs(conn, [c for c, k in zip(claims, keep, strict=True) if k], ts, token))
    out = [next(ids) if k else None for k in keep]
    for c, run_id in zip(claims, out, strict=True):
        if run_id is not None and c.rerun_if:
            conn.execute(sql.STRIP_ABANDONED_TOKEN, (c.job_id, ts(c.scheduled_at), run_id))
    return out


def _may_rerun(conn: sqlite3.Connection, claim: RunClaim, scheduled: str | None) -> bool:
    """Inside the write transaction (BEGIN IMMEDIATE: no other writer), so check and insert are one step."""
    if conn.execute(sql.SLOT_LOCK, (claim.job_id, scheduled)).fetchone() is None:
        return False
    return sql.may_rerun(claim, conn.execute(sql.NEWEST_RUN_STATE, (claim.job_id, scheduled)).fetchone())


def _check_reruns(conn: sqlite3.Connection, claims: Sequence[RunClaim], keep: list[bool],
                  ts: Callable[[Any], Any]) -> list[bool]:
    """Re-run claims of a batch keep their place only if their slot's newest run allows it and no
    earlier claim of the batch writes that slot (its row would be the newest one)."""
    out: list[bool] = []
    written: set[tuple[str, Any]] = set()
    for c, is_kept in zip(claims, keep, strict=True):
        slot = (c.job_id, ts(c.scheduled_at))
        if is_kept and c.rerun_if and not c.take_lock:
            is_kept = slot not in written and _may_rerun(conn, c, slot[1])
        if is_kept:
            written.add(slot)
        out.append(is_kept)
    return out


def sweep(conn: sqlite3.Connection, stale_before: str | None, now: str | None, dead: Sequence[str]) -> int:
    """Forget dead and silent instances, then mark their RUNNING rows ABANDONED; how many."""
    for instance_id in dead:
        conn.execute(dialect.FORGET_INSTANCE, (instance_id,))
    conn.execute(dialect.FORGET_STALE_INSTANCES, (stale_before,))
    return int(conn.execute(sql.ABANDON_ORPHANS, (now,)).rowcount)
