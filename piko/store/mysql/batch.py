"""Many claims, placements and ends in a few MySQL statements (async steps inside a transaction).

A statement is a round trip: a burst of 10,000 runs sent row by row is 30,000 of them. Here a
chunk of up to 500 rows costs a few: which lock rows exist (one SELECT), the free ones inserted
(one multi-row INSERT; a racing inserter's duplicate key falls back to INSERT IGNORE row by
row, whose answers are exact), the run rows inserted (one multi-row INSERT, their ids checked
to be consecutive, else looked up), the ends written (one UPDATE joined to the values, then one
SELECT telling which rows took them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from piko.core.types import RunClaim, RunFinish
from piko.store import sql
from piko.store.codec import to_naive_utc
from piko.store.mysql import dialect as my

CHUNK = 500
ER_DUP_ENTRY = 1062


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def take_locks(cur: Any, claims: Sequence[RunClaim], token: int | None) -> list[bool]:
    """The (job_id, scheduled_time) lock row of each claim: True where this transaction got it (a key
    twice in one batch: only its first claim)."""
    got: list[bool] = []
    for chunk in _chunks(claims):
        keys = [(c.job_id, to_naive_utc(c.scheduled_at)) for c in chunk]
        await cur.execute("SELECT job_id, scheduled_time FROM job_lock WHERE (job_id, scheduled_time) IN ("
                          + ", ".join(["(%s, %s)"] * len(keys)) + ")", [v for k in keys for v in k])
        taken = {(r[0], r[1]) for r in await cur.fetchall()}
        fresh: dict[tuple[str, Any], RunClaim] = {}
        for claim, key in zip(chunk, keys, strict=True):
            if key not in taken and key not in fresh:
                fresh[key] = claim
        inserted = await _insert_locks(cur, fresh, token)
        for key in keys:
            got.append(key in inserted)
            inserted.discard(key)
    return got


async def _insert_locks(cur: Any, fresh: dict[tuple[str, Any], RunClaim], token: int | None) -> set[tuple[str, Any]]:
    if not fresh:
        return set()
    rows = [(key[0], key[1], c.instance_id, token, to_naive_utc(c.started_at)) for key, c in fresh.items()]
    try:
        await cur.execute("INSERT INTO job_lock (job_id, scheduled_time, instance_id, fence_token, locked_at) VALUES "
                          + ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows)), [v for r in rows for v in r])
        return set(fresh)
    except Exception as exc:  # someone took one between our SELECT and INSERT: ask row by row
        if my.error_code(exc) != ER_DUP_ENTRY:
            raise
    won = set()
    for key, row in zip(fresh, rows, strict=True):
        await cur.execute(my.TAKE_LOCK, row)
        if cur.rowcount == 1:
            won.add(key)
    return won


async def insert_runs(cur: Any, claims: Sequence[RunClaim], token: int | None) -> list[int]:
    """Run rows for these claims (already checked); their run ids, in order."""
    ids: list[int] = []
    head = my.INSERT_RUN.split(" VALUES ")[0] + " VALUES "
    one = "(" + ", ".join(["%s"] * sql.RUN_WIDTH) + ")"
    for chunk in _chunks(claims):
        params = [sql.run_params(c, to_naive_utc, token) for c in chunk]
        await cur.execute(head + ", ".join([one] * len(params)), [v for p in params for v in p])
        first = int(cur.lastrowid)  # LAST_INSERT_ID(): the first row's id of a multi-row INSERT
        await cur.execute("SELECT run_id, job_id FROM job_run WHERE run_id BETWEEN %s AND %s ORDER BY run_id",
                          (first, first + len(chunk) - 1))
        found = await cur.fetchall()
        if [r[1] for r in found] == [c.job_id for c in chunk]:
            ids += [int(r[0]) for r in found]
        else:  # not consecutive (innodb_autoinc_lock_mode = 2 under concurrent inserts): look each up
            ids += [await _find_id(cur, c) for c in chunk]
    return ids


async def _find_id(cur: Any, claim: RunClaim) -> int:
    await cur.execute("SELECT MAX(run_id) FROM job_run WHERE job_id = %s AND scheduled_time = %s AND attempt = %s",
                      (claim.job_id, to_naive_utc(claim.scheduled_at), claim.attempt))
    return int((await cur.fetchone())[0])


_FINISH_FROM = (
    "UPDATE job_run j JOIN ({values}) v ON j.run_id = v.run_id SET j.status = v.status, "
    "j.finished_at = v.finished_at, j.duration_s = COALESCE(v.duration_s, "
    "ROUND(TIMESTAMPDIFF(MICROSECOND, j.started_at, v.finished_at) / 1000000, 6)), j.error_type = v.error_type, "
    "j.error_message = v.error_message, j.error_traceback = v.error_traceback, j.result = v.result "
    f"WHERE j.{sql.FINISHABLE_GUARD} AND j.claim_token <=> v.claim_token")
_ROW = ("SELECT %s AS run_id, %s AS status, CAST(%s AS DATETIME(6)) AS finished_at, %s AS duration_s, "
        "%s AS error_type, %s AS error_message, %s AS error_traceback, %s AS claim_token, "
        "CAST(%s AS CHAR) AS result")


async def finish_runs(cur: Any, finishes: Sequence[RunFinish]) -> list[int]:
    """Write the ends; the run ids whose row had moved on (already ended, or handed to another
    attempt: its claim token is gone) and so kept what it had. A run ends once: a second end of it
    in one batch is refused too."""
    first = list({f.run_id: f for f in reversed(finishes)}.values())
    wrote: set[int] = set()
    for chunk in _chunks(first, 200):
        params = [(f.run_id, f.status.value, to_naive_utc(f.finished_at), f.duration_s, f.error_type,
                   f.error_message, f.error_traceback, f.claim_token, f.result) for f in chunk]
        await cur.execute(_FINISH_FROM.format(values=" UNION ALL ".join([_ROW] * len(chunk))),
                          [v for p in params for v in p])
        await cur.execute("SELECT run_id, status, finished_at FROM job_run WHERE run_id IN ("
                          + ", ".join(["%s"] * len(chunk)) + ")", [f.run_id for f in chunk])
        now = {int(r[0]): (r[1], r[2]) for r in await cur.fetchall()}
        wrote.update(f.run_id for f in chunk if now.get(f.run_id) == (f.status.value, to_naive_utc(f.finished_at)))
    return sql.refused_ends(finishes, wrote)
