"""Many claims or finishes in a few SQLite statements (run on the store's worker thread).

Each sqlite3 step releases the GIL; while the event loop is busy, taking it back can wait a
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
from piko.store import sql

_PARAMS_MAX = 999
_HAS_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
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
    for chunk in _chunks(claims, 14):
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


def finish_runs(conn: sqlite3.Connection, finishes: Sequence[RunFinish], ts: Callable[[Any], Any]) -> None:
    if not _HAS_UPDATE_FROM:
        conn.executemany(sql.FINISH_RUN_MEASURED_SQLITE,
                         [(f.status.value, ts(f.finished_at), f.duration_s, ts(f.finished_at), f.error_type,
                           f.error_message, f.error_traceback, f.run_id) for f in finishes])
        return
    for chunk in _chunks(finishes, 7):
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        conn.execute(
            "UPDATE job_run SET status = v.column2, finished_at = v.column3, duration_s = COALESCE(v.column6, "
            "ROUND((julianday(v.column3) - julianday(job_run.started_at)) * 86400.0, 6)), "
            "error_type = v.column4, error_message = v.column5, error_traceback = v.column7 "
            f"FROM (VALUES {values}) AS v "
            "WHERE job_run.run_id = v.column1 AND job_run.status IN ('RUNNING', 'ABANDONED')",
            [x for f in chunk
             for x in (f.run_id, f.status.value, ts(f.finished_at), f.error_type, f.error_message, f.duration_s,
                       f.error_traceback)])
