"""The MySQL/MariaDB store, on an aiomysql pool (imported lazily: `pip install 'piko[mysql]'`).

Rules: the pool runs with autocommit=True, so every plain read sees the latest committed
rows (aiomysql's default would keep a REPEATABLE-READ snapshot open and return stale lease
and schedule rows); multi-statement work runs in an explicit BEGIN ... COMMIT. Sessions use
time_zone '+00:00' and DATETIME(6) holding UTC. Lease and fence checks compare with the
server's UTC_TIMESTAMP(6) only. Deadlocks, lock-wait timeouts and lost connections are
retried with bounded backoff. Must not import the SQLite store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from piko.core.placement import JobLimits
from piko.core.types import (
    ConfigRow,
    Fence,
    InstanceInfo,
    LeaseGrant,
    QueueClaim,
    RunClaim,
    RunFinish,
    RunRecord,
    RunStatus,
    ScheduleRow,
)
from piko.errors import ConfigError, StoreError, StoreUnavailable
from piko.observability.logging import mask_dsn
from piko.store import sql
from piko.store.codec import from_db, to_naive_utc, to_param
from piko.store.mysql import dialect as my
from piko.store.mysql import leases, queue, runs
from piko.store.mysql import schema as mysql_schema
from piko.store.mysql.pool import MysqlConnections, Op, T

log = logging.getLogger("piko.store.mysql")

class MysqlStore:
    """The Store protocol on MySQL 8 or MariaDB (tested on 10.11); see docs/mysql.md."""

    dialect = "mysql"

    def __init__(self, dsn: str, *, pool_size: int = 10, pool_recycle: int = 3600,
                 retry_attempts: int = 4) -> None:
        self._connect_args = my.parse_dsn(dsn)
        pool_size = self._connect_args.pop("pool_size", pool_size)
        pool_recycle = self._connect_args.pop("pool_recycle", pool_recycle)
        self.mode = self._connect_args.pop("mode", "rw")  # ro: read, never migrate
        if pool_size < 1:
            raise ConfigError(f"pool_size must be >= 1, got {pool_size}")
        _check_charset(self._connect_args["charset"])
        self.description = f"MySQL {mask_dsn(dsn)}" + (" (read-only)" if self.mode == "ro" else "")
        self._db = MysqlConnections(self._connect_args, self.description, pool_size=pool_size,
                                    pool_recycle=pool_recycle, attempts=retry_attempts)
        self._seeded_leases: set[str] = set()
        self._write_failure: str | None = None  # why writes fail, while none has succeeded since

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        if self._db.is_open:
            return
        await self._db.open()
        try:
            if self.mode == "ro":
                await self._check_schema_readable()
            else:
                await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _check_schema_readable(self) -> None:
        """Read-only: nothing is migrated, so an older schema is refused before a query trips on it."""
        version, newest = await self.schema_version(), mysql_schema.latest()
        if version < newest:
            raise StoreError(f"{self.description} has schema version {version}, older than this piko reads "
                             f"({newest}): open it once with a user that may migrate it (piko db init)")
        self._has_change_log = True

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> MysqlStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        async def select_one(cur: Any) -> None:
            await cur.execute("SELECT 1")

        try:
            await self._call(select_one, attempts=2, is_read=True)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if self._write_failure is not None:  # SELECT 1 answers while every write fails (read-only, full)
            raise StoreUnavailable(f"{self.description}: writes fail: {self._write_failure}")

    async def schema_version(self) -> int:
        async def read(cur: Any) -> int:
            try:
                await cur.execute(my.SCHEMA_VERSION)
            except Exception as exc:
                if my.error_code(exc) == my.ER_NO_SUCH_TABLE:
                    return 0
                raise
            row = await cur.fetchone()
            return int(row[0] or 0)
        return await self._call(read, is_read=True)

    async def _migrate(self) -> None:
        db_name = str(self._connect_args["db"])

        async def run(cur: Any) -> None:
            self._has_change_log = await mysql_schema.migrate(cur, db_name)
        await self._call(run)

    # -- the one way SQL runs: see pool.py -----------------------------------------------------
    async def _call(self, op: Op[T], *, is_tx: bool = False, attempts: int | None = None,
                    is_urgent: bool = False, is_read: bool = False) -> T:
        """The one way SQL runs; a write failing for a reason that lasts (read-only server, full
        disk) is remembered for ping() until a write succeeds again."""
        try:
            result = await self._db.call(op, is_tx=is_tx, attempts=attempts, is_urgent=is_urgent)
        except StoreError as exc:
            cause = exc.__cause__
            if not is_read and cause is not None and my.error_code(cause) in my.WRITES_REFUSED:
                self._write_failure = my.reason(cause)
            raise
        if not is_read:
            self._write_failure = None
        return result

    async def _execute(self, statement: str, params: Any = (), *, is_tx: bool = False) -> int:
        """Run one statement; its rowcount."""
        async def run(cur: Any) -> int:
            await cur.execute(statement, params)
            return int(cur.rowcount)
        return await self._call(run, is_tx=is_tx)

    async def _fetchall(self, statement: str, params: Any = ()) -> list[Any]:
        async def run(cur: Any) -> list[Any]:
            await cur.execute(statement, params)
            return list(await cur.fetchall())
        return await self._call(run, is_read=True)

    async def _select_for(self, base: str, job_ids: Collection[str] | None, *, condition: str = "",
                          tail: str = "", extra: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of `base` for these jobs (every job when None), in chunks of sql.CHUNK ids."""
        rows: list[Any] = []
        for ids in sql.chunked(job_ids):
            statement = my.select_for(base, None if ids is None else len(ids), condition, tail)
            rows += await self._fetchall(statement, (*(ids or ()), *extra))
        return rows

    # -- control plane ----------------------------------------------------------------------
    async def load_schedules(self, job_ids: Collection[str] | None = None) -> list[ScheduleRow]:
        return [my.schedule_row(r) for r in await self._select_for(my.SELECT_SCHEDULES, job_ids)]

    async def insert_schedule_if_absent(self, row: ScheduleRow) -> bool:
        return await self._execute(my.INSERT_SCHEDULE_IF_ABSENT, my.schedule_params(row)) == 1

    async def insert_schedules_if_absent(self, rows: Sequence[ScheduleRow]) -> int:
        params = [my.schedule_params(row) for row in rows]

        async def insert(cur: Any) -> int:
            inserted = 0
            for start in range(0, len(params), 1000):  # executemany folds these into multi-row INSERTs
                await cur.executemany(my.INSERT_SCHEDULE_IF_ABSENT, params[start:start + 1000])
                inserted += max(0, int(cur.rowcount))
            return inserted
        return await self._call(insert, is_tx=True) if params else 0

    async def upsert_schedule(self, row: ScheduleRow) -> None:
        await self._execute(my.UPSERT_SCHEDULE, my.schedule_params(row))

    async def set_schedule_enabled(self, job_id: str, is_enabled: bool) -> bool:
        return await self._execute(my.SET_ENABLED, (int(is_enabled), job_id)) > 0

    async def set_schedules_enabled(self, job_ids: Sequence[str], is_enabled: bool) -> int:
        async def write(cur: Any) -> int:
            changed = 0
            for ids in sql.chunked(list(job_ids)):
                await cur.execute(my.with_marks(sql.SET_MANY_ENABLED, len(ids or ())), (int(is_enabled), *(ids or ())))
                changed += int(cur.rowcount)
            return changed
        return await self._call(write, is_tx=True) if job_ids else 0

    async def load_configs(self, job_ids: Collection[str] | None = None) -> list[ConfigRow]:
        rows = await self._select_for(my.SELECT_CONFIGS, job_ids)
        return [ConfigRow(r[0], r[2], int(r[3]), int(r[1]), from_db(r[4])) for r in rows]

    async def load_config_history(self, job_ids: Collection[str] | None = None,
                                  per_job: int = 10) -> list[ConfigRow]:
        rows = await self._select_for(my.SELECT_CONFIG_HISTORY, job_ids, condition=my.HISTORY_NEWEST,
                                      tail=" ORDER BY history_id", extra=(per_job,))
        return [ConfigRow(r[0], r[2], int(r[3]), int(r[1]), from_db(r[4]), int(r[5])) for r in rows]

    async def change_cursor(self) -> int | None:
        if not getattr(self, "_has_change_log", True):
            return None  # no triggers here: every reconcile tick reads all rows
        rows = await self._fetchall(my.CHANGE_CURSOR)
        return int(rows[0][0] or 0)

    async def changes_since(self, seq: int, limit: int = 10000) -> tuple[int, set[str], set[str]] | None:
        return sql.fold_changes(seq, await self._fetchall(my.CHANGES_SINCE, (seq, limit + 1)), limit)

    async def prune_changes(self, before: datetime) -> int:
        return await self._execute(my.PRUNE_CHANGES, (to_naive_utc(before),))

    async def upsert_config(self, row: ConfigRow) -> None:
        await self._execute(my.UPSERT_CONFIG, (row.job_id, row.schema_version, row.config_json, row.version,
                                               to_naive_utc(row.effective_from)))

    # -- run records ------------------------------------------------------------------------
    async def claim_run(self, claim: RunClaim) -> int | None:
        """Lock row and RUNNING row in one transaction; None when the lock is already taken."""
        (run_id,) = await self._call(lambda cur: runs.claim_many(cur, [claim]), is_tx=True)
        return run_id

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[int | None]:
        """Every claim of the batch in one transaction (one fence check, one commit)."""
        return await self._call(lambda cur: runs.claim_many(cur, claims), is_tx=True)

    async def finish_runs(self, finishes: Sequence[RunFinish]) -> list[int]:
        return await self._call(lambda cur: runs.finish_runs(cur, finishes), is_tx=True)

    async def finish_run(self, run_id: int, status: RunStatus, finished_at: datetime,
                         error_type: str | None = None, error_message: str | None = None,
                         error_traceback: str | None = None) -> None:
        at = to_naive_utc(finished_at)
        await self._execute(my.FINISH_RUN, (status.value, at, at, error_type, error_message, error_traceback,
                                            run_id))

    async def recent_runs(self, job_id: str | None = None, limit: int = 20, *, status: RunStatus | None = None,
                          kind: str | None = None) -> list[RunRecord]:
        statement, params = sql.select_runs(job_id, status, kind)
        rows = await self._fetchall(my.q(statement), (*params, limit))
        return [sql.run_record(r, from_db) for r in rows]

    async def get_run(self, run_id: int) -> RunRecord | None:
        rows = await self._fetchall(my.GET_RUN, (run_id,))
        return sql.run_record(rows[0], from_db) if rows else None

    async def latest_status(self, job_id: str, scheduled_at: datetime) -> RunStatus | None:
        rows = await self._fetchall(my.LATEST_STATUS, (job_id, to_naive_utc(scheduled_at)))
        return RunStatus(rows[0][0]) if rows else None

    async def latest_run(self, job_id: str, scheduled_at: datetime) -> RunRecord | None:
        rows = await self._fetchall(my.LATEST_RUN, (job_id, to_naive_utc(scheduled_at)))
        return sql.run_record(rows[0], from_db) if rows else None

    async def pieces(self, prefix: str, scheduled_at: datetime) -> list[RunRecord]:
        rows = await self._fetchall(my.PIECES, (sql.like_prefix(prefix), to_naive_utc(scheduled_at)))
        return sql.newest_per_slot([sql.run_record(r, from_db) for r in rows], prefix)

    async def children(self, parent_run_ids: Collection[int]) -> list[RunRecord]:
        out: list[RunRecord] = []
        ids = list(parent_run_ids)
        for start in range(0, len(ids), sql.CHUNK):
            chunk = ids[start:start + sql.CHUNK]
            rows = await self._fetchall(my.q(sql.CHILDREN.format(marks=sql.marks(len(chunk)))), tuple(chunk))
            out += [sql.run_record(r, from_db) for r in rows]
        return out

    async def last_fire_times(self, job_ids: Collection[str]) -> dict[str, datetime]:
        rows = await self._select_for(my.LAST_FIRES, job_ids, tail=" GROUP BY job_id")  # loose index scan
        return {r[0]: from_db(r[1]) for r in rows if r[1] is not None}  # type: ignore[misc]

    async def last_runs(self, job_ids: Collection[str]) -> dict[str, RunRecord]:
        rows: list[Any] = []
        for ids in sql.chunked(job_ids):  # never None here: job_ids is a collection
            rows += await self._fetchall(my.last_runs(len(ids or ())), tuple(ids or ()))
        return {r.job_id: r for r in (sql.run_record(row, from_db) for row in rows)}

    async def heartbeat(self, instance: InstanceInfo, now: datetime) -> None:
        params = sql.instance_params(instance, to_naive_utc)
        await self._call(lambda cur: cur.execute(my.HEARTBEAT, params), is_urgent=True)  # never behind a burst

    async def list_instances(self) -> list[InstanceInfo]:
        return [sql.instance_row(r, from_db) for r in await self._fetchall(my.SELECT_INSTANCES)]

    async def abandon_orphans(self, stale_before: datetime, now: datetime,
                              dead_instances: Sequence[str] = ()) -> int:
        return await self._call(lambda cur: runs.sweep(cur, stale_before, now, dead_instances), is_tx=True)

    # -- the queue (cluster execution) -----------------------------------------------------
    async def place_runs(self, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]:
        return await self._call(lambda cur: queue.place_runs(cur, claims), is_tx=True)

    async def claim_queued(self, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
                           limits_for: Callable[[str], JobLimits | None], now: datetime, share: int = 1) -> QueueClaim:
        # an idle worker's poll is this one statement: no transaction unless something is queued
        ((queued,),) = await self._fetchall(my.with_marks(sql.COUNT_QUEUED, len(queues)), tuple(queues))
        if not queued:
            return QueueClaim([], [])
        take = sql.fair_take(capacity, int(queued), share)
        return await self._call(
            lambda cur: queue.claim_queued(cur, instance_id, queues, take, claim_token, limits_for, now),
            is_tx=True)

    async def request_cancel(self, *, by: str, now: datetime, run_id: int | None = None,
                             job_id: str | None = None) -> tuple[int, int]:
        column, value = sql.cancel_target(run_id, job_id)
        return await self._call(lambda cur: queue.request_cancel(cur, column, value, by, now), is_tx=True)

    async def cancel_requests(self, instance_id: str) -> list[tuple[int, str]]:
        return [(int(r[0]), str(r[1] or "")) for r in await self._fetchall(my.CANCEL_REQUESTS, (instance_id,))]

    async def queue_depths(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._fetchall(my.QUEUE_DEPTHS)}

    # -- stateful jobs ----------------------------------------------------------------------
    async def get_watermark(self, job_id: str) -> datetime | None:
        rows = await self._fetchall(my.GET_WATERMARK, (job_id,))
        return from_db(rows[0][0]) if rows else None

    async def cas_watermark(self, job_id: str, expected: datetime | None, new: datetime,
                            fence: Fence | None = None) -> bool:
        old = to_naive_utc(expected)

        async def cas(cur: Any) -> bool:
            await leases.check_fence(cur, fence)
            await cur.execute(my.CAS_WATERMARK, (to_naive_utc(new), job_id, old, old))
            return bool(cur.rowcount == 1)
        return await self._call(cas, is_tx=fence is not None)

    # -- SQL sink ---------------------------------------------------------------------------
    async def execute_ddl(self, statement: str) -> None:
        await self._execute(statement)

    async def upsert_rows(self, table: str, key_columns: Sequence[str],
                          rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        columns = list(rows[0])
        statement = my.upsert_rows_statement(table, columns, key_columns)
        params = [tuple(to_param(r[c], datetime_as_text=False) for c in columns) for r in rows]

        async def write(cur: Any) -> None:
            await cur.executemany(statement, params)
        await self._call(write, is_tx=True)
        return len(rows)

    # -- leader lease (server clock only) -----------------------------------------------------
    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None:
        if not holder:
            raise ValueError("lease holder must be a non-empty string ('' marks a released lease)")
        if name not in self._seeded_leases:
            await self._execute(my.SEED_LEASE, (name,))
            self._seeded_leases.add(name)
        args = {"name": name, "me": holder, "ttl_us": max(1, int(ttl / timedelta(microseconds=1)))}

        # Few attempts: a failed renew is "not leader" and the elector retries on its own interval.
        return await self._call(lambda cur: leases.acquire(cur, args), is_tx=True, attempts=2, is_urgent=True)

    async def lease_release(self, name: str, holder: str, token: int) -> None:
        async def release(cur: Any) -> None:
            await cur.execute(my.RELEASE_LEASE, (name, holder, token))
        await self._call(release, is_urgent=True)

    async def lease_holder(self, name: str) -> tuple[str, int] | None:
        return await self._call(lambda cur: leases.holder_of(cur, name), is_urgent=True, is_read=True)


def _check_charset(name: str) -> None:
    try:
        from pymysql.charset import charset_by_name  # installed with aiomysql
    except ImportError:
        return  # the driver is missing: opening the store says so, naming the extra to install
    try:
        known = charset_by_name(name) is not None
    except KeyError:
        known = False
    if not known:
        raise ConfigError(f"MySQL DSN charset {name!r} is not a MySQL character set (use utf8mb4)")
