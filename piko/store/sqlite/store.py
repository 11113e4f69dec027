"""The SQLite store: the embedded default, on the standard sqlite3 module.

All I/O runs on one worker thread (worker.py) with WAL and batched commits. The
"database clock" for leases and fences is the host clock as SQLite reads it (milliseconds;
hence strict `<` for takeover and `>=` for validity). Several processes on one host may
share the file; never put it on a network filesystem. Must not import the MySQL store.
"""

from __future__ import annotations

import os
import re
import sqlite3
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
from piko.errors import ConfigError, StoreError, StoreNotWritable, StoreUnavailable
from piko.store import sql
from piko.store.codec import from_db, to_param, to_text
from piko.store.schema import SCHEMA_TABLE, latest_version, migrations, render
from piko.store.sqlite import access as sqlite_access
from piko.store.sqlite import dialect, leases, queue, runs
from piko.store.sqlite.worker import SqliteWorker

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SqliteStore:
    dialect = "sqlite"

    def __init__(self, path: str, *, busy_timeout_s: float = 10.0, mode: str = "rwc") -> None:
        if mode not in sqlite_access.MODES:
            raise ConfigError(f"SQLite mode {mode!r} is not one of {', '.join(sqlite_access.MODES)}")
        self.path = path
        self.mode = mode  # rwc: open or create; rw: open an existing file; ro: read only, never migrate
        self._file = os.path.abspath(path)
        self.description = f"SQLite file {self._file}" + (" (read-only)" if mode == "ro" else "")
        self._worker = SqliteWorker(path, busy_timeout_s=busy_timeout_s, mode=mode)

    # -- lifecycle --------------------------------------------------------------------
    async def open(self) -> None:
        """Open (and migrate, unless read-only). A file that cannot be opened or written says why:
        the path, and 'read-only file system', 'permission denied' or 'does not exist'."""
        try:
            await self._worker.start()
            if self.mode == "ro":
                await self._check_schema_readable()
            else:
                await self._worker.call(self._migrate, is_write=True)
        except StoreError as exc:
            await self._worker.stop()
            problem = sqlite_access.access_problem(self.path, self.mode)
            if problem is None:
                raise
            if self.mode == "ro":
                raise StoreUnavailable(f"cannot read SQLite file {self._file}: {problem}") from exc
            raise StoreNotWritable(f"cannot write SQLite file {self._file}: {problem}") from exc

    async def _check_schema_readable(self) -> None:
        """Read-only: nothing is migrated, so an older schema is refused before a query trips on it."""
        version, newest = await self.schema_version(), latest_version("sqlite")
        if version == 0:
            raise StoreError(f"{self.description} is not a piko database (it has no piko_schema table)")
        if version < newest:
            raise StoreError(f"{self.description} has schema version {version}, older than this piko reads "
                             f"({newest}): open it once with write access to migrate it (piko db init)")

    async def close(self) -> None:
        await self._worker.stop()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raises StoreUnavailable when the file is gone or the last write failed (a full disk):
        SELECT 1 alone would answer in both cases."""
        problem = self._worker.file_problem()
        if problem is None and self._worker.write_failure is not None:
            problem = f"writes fail: {self._worker.write_failure}"
        if problem is not None:
            raise StoreUnavailable(f"SQLite file {self.path}: {problem}")
        await self._worker.call(lambda c: c.execute("SELECT 1").fetchone(), is_write=False)

    async def schema_version(self) -> int:
        return int(await self._worker.call(_schema_version, is_write=False))

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(render(SCHEMA_TABLE, "sqlite"))
        current = _schema_version(conn)
        for mig in migrations("sqlite"):
            if mig.version <= current:
                continue
            for statement in (*mig.statements, *mig.optional):
                conn.execute(statement)
            conn.execute("INSERT INTO piko_schema(version, description) VALUES (?, ?)",
                         (mig.version, mig.description))

    # -- control plane -------------------------------------------------------------------
    async def load_schedules(self, job_ids: Collection[str] | None = None) -> list[ScheduleRow]:
        created = runs.memo(from_db)  # rows written together share their created_at text

        def read(c: sqlite3.Connection) -> list[ScheduleRow]:  # each row converted as the cursor yields it
            return _select(c, sql.SELECT_SCHEDULES, job_ids, convert=lambda r: sql.schedule_row(r, created))
        return await self._worker.call(read, is_write=False)  # type: ignore[no-any-return]

    async def insert_schedule_if_absent(self, row: ScheduleRow) -> bool:
        params = sql.schedule_params(row)
        return bool(await self._worker.call(
            lambda c: c.execute(sql.INSERT_SCHEDULE.format(ignore="OR IGNORE"), params).rowcount,
            is_write=True))

    async def insert_schedules_if_absent(self, rows: Sequence[ScheduleRow]) -> int:
        def insert(c: sqlite3.Connection) -> int:  # rowcount sums the rows inserted, without trigger rows
            params = (sql.schedule_params(row) for row in rows)  # made as sqlite binds them: no list of 10,000
            return int(c.executemany(sql.INSERT_SCHEDULE.format(ignore="OR IGNORE"), params).rowcount)
        return int(await self._worker.call(insert, is_write=True)) if rows else 0

    async def upsert_schedule(self, row: ScheduleRow) -> None:
        params = sql.schedule_params(row)
        await self._worker.call(lambda c: c.execute(dialect.UPSERT_SCHEDULE, params), is_write=True)

    async def set_schedule_enabled(self, job_id: str, is_enabled: bool) -> bool:
        return bool(await self._worker.call(
            lambda c: c.execute(sql.SET_ENABLED, (int(is_enabled), job_id)).rowcount, is_write=True))

    async def set_schedules_enabled(self, job_ids: Sequence[str], is_enabled: bool) -> int:
        def write(c: sqlite3.Connection) -> int:
            return sum(c.execute(sql.SET_MANY_ENABLED.format(marks=sql.marks(len(ids))), (int(is_enabled), *ids)).rowcount
                       for ids in sql.chunked(list(job_ids)) if ids)
        return int(await self._worker.call(write, is_write=True)) if job_ids else 0

    async def load_configs(self, job_ids: Collection[str] | None = None) -> list[ConfigRow]:
        rows = await self._worker.call(lambda c: _select(c, sql.SELECT_CONFIGS, job_ids), is_write=False)
        return [ConfigRow(r[0], r[2], int(r[3]), int(r[1]), from_db(r[4])) for r in rows]

    async def load_config_history(self, job_ids: Collection[str] | None = None,
                                  per_job: int = 10) -> list[ConfigRow]:
        rows = await self._worker.call(
            lambda c: _select(c, sql.SELECT_CONFIG_HISTORY, job_ids, condition=sql.HISTORY_NEWEST,
                                  tail=" ORDER BY history_id", extra=(per_job,)),
            is_write=False)
        return [ConfigRow(r[0], r[2], int(r[3]), int(r[1]), from_db(r[4]), int(r[5])) for r in rows]

    async def change_cursor(self) -> int | None:
        row = await self._worker.call(lambda c: c.execute(sql.CHANGE_CURSOR).fetchone(), is_write=False)
        return int(row[0] or 0)

    async def changes_since(self, seq: int, limit: int = 10000) -> tuple[int, set[str], set[str]] | None:
        rows = await self._worker.call(lambda c: c.execute(sql.CHANGES_SINCE, (seq, limit + 1)).fetchall(),
                                       is_write=False)
        return sql.fold_changes(seq, rows, limit)

    async def prune_changes(self, before: datetime) -> int:
        return int(await self._worker.call(
            lambda c: c.execute(dialect.PRUNE_CHANGES, (to_text(before),)).rowcount,
            is_write=True))

    async def upsert_config(self, row: ConfigRow) -> None:
        params = (row.job_id, row.schema_version, row.config_json, row.version, to_text(row.effective_from))
        await self._worker.call(lambda c: c.execute(dialect.UPSERT_CONFIG, params), is_write=True)

    # -- run records -------------------------------------------------------------------
    async def claim_run(self, claim: RunClaim) -> int | None:
        return await self._worker.call(lambda c: runs.claim(c, claim), is_write=True)  # type: ignore[no-any-return]

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[int | None]:
        return await self._worker.call(lambda c: runs.claim_many(c, claims), is_write=True)  # type: ignore[no-any-return]

    async def finish_runs(self, finishes: Sequence[RunFinish]) -> list[int]:
        return await self._worker.call(lambda c: runs.finish_runs(c, finishes, to_text),  # type: ignore[no-any-return]
                                       is_write=True)

    async def finish_run(self, run_id: int, status: RunStatus, finished_at: datetime,
                         error_type: str | None = None, error_message: str | None = None,
                         error_traceback: str | None = None) -> None:
        params = (status.value, to_text(finished_at), to_text(finished_at), error_type, error_message,
                  error_traceback, run_id)
        await self._worker.call(lambda c: c.execute(dialect.FINISH_RUN, params), is_write=True)

    async def recent_runs(self, job_id: str | None = None, limit: int = 20, *, status: RunStatus | None = None,
                          kind: str | None = None) -> list[RunRecord]:
        statement, params = sql.select_runs(job_id, status, kind)
        rows = await self._worker.call(lambda c: c.execute(statement, (*params, limit)).fetchall(), is_write=False)
        return [sql.run_record(r, from_db) for r in rows]

    async def get_run(self, run_id: int) -> RunRecord | None:
        row = await self._worker.call(lambda c: c.execute(sql.GET_RUN, (run_id,)).fetchone(), is_write=False)
        return sql.run_record(row, from_db) if row else None

    async def latest_status(self, job_id: str, scheduled_at: datetime) -> RunStatus | None:
        row = await self._worker.call(
            lambda c: c.execute(sql.LATEST_STATUS, (job_id, to_text(scheduled_at))).fetchone(), is_write=False)
        return RunStatus(row[0]) if row else None

    async def latest_run(self, job_id: str, scheduled_at: datetime) -> RunRecord | None:
        row = await self._worker.call(
            lambda c: c.execute(sql.LATEST_RUN, (job_id, to_text(scheduled_at))).fetchone(), is_write=False)
        return sql.run_record(row, from_db) if row else None

    async def pieces(self, prefix: str, scheduled_at: datetime) -> list[RunRecord]:
        rows = await self._worker.call(lambda c: c.execute(sql.PIECES, (sql.like_prefix(prefix),
                                                                        to_text(scheduled_at))).fetchall(),
                                       is_write=False)
        return sql.newest_per_slot([sql.run_record(r, from_db) for r in rows], prefix)

    async def children(self, parent_run_ids: Collection[int]) -> list[RunRecord]:
        out: list[RunRecord] = []
        ids = list(parent_run_ids)
        for start in range(0, len(ids), sql.CHUNK):
            chunk = ids[start:start + sql.CHUNK]

            def read(c: Any, chunk: list[int] = chunk) -> list[Any]:
                return c.execute(sql.CHILDREN.format(marks=sql.marks(len(chunk))), chunk).fetchall()

            rows = await self._worker.call(read, is_write=False)
            out += [sql.run_record(r, from_db) for r in rows]
        return out

    async def last_fire_times(self, job_ids: Collection[str]) -> dict[str, datetime]:
        ids = list(job_ids)

        def read(c: sqlite3.Connection) -> list[tuple[str, Any]]:  # one indexed MAX per job: no table scan
            return [(j, c.execute(sql.LAST_FIRE, (j,)).fetchone()[0]) for j in ids]
        return {j: from_db(t) for j, t in await self._worker.call(read, is_write=False) if t is not None}  # type: ignore[misc]

    async def last_runs(self, job_ids: Collection[str]) -> dict[str, RunRecord]:
        ids = list(job_ids)

        def read(c: sqlite3.Connection) -> list[RunRecord]:  # one index walk per job, all in one worker call,
            rows = [row for j in ids if (row := c.execute(sql.LAST_RUN, (j,)).fetchone()) is not None]
            return [sql.run_record(row, from_db) for row in rows]  # decoded there too: not on the loop
        return {r.job_id: r for r in await self._worker.call(read, is_write=False)}

    async def heartbeat(self, instance: InstanceInfo, now: datetime) -> None:
        params = (*sql.instance_params(instance, to_text), to_text(now))
        await self._worker.call(lambda c: c.execute(dialect.HEARTBEAT, params), is_write=True, is_urgent=True)

    async def list_instances(self) -> list[InstanceInfo]:
        rows = await self._worker.call(lambda c: c.execute(sql.SELECT_INSTANCES).fetchall(), is_write=False)
        return [sql.instance_row(r, from_db) for r in rows]

    async def abandon_orphans(self, stale_before: datetime, now: datetime,
                              dead_instances: Sequence[str] = ()) -> int:
        stale, at = to_text(stale_before), to_text(now)
        return await self._worker.call(lambda c: runs.sweep(c, stale, at, dead_instances),  # type: ignore[no-any-return]
                                       is_write=True)

    # -- the queue (cluster execution) -----------------------------------------------------
    async def place_runs(self, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]:
        return await self._worker.call(lambda c: queue.place_runs(c, claims), is_write=True)  # type: ignore[no-any-return]

    async def claim_queued(self, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
                           limits_for: Callable[[str], JobLimits | None], now: datetime, share: int = 1) -> QueueClaim:
        probe = sql.COUNT_QUEUED.format(marks=sql.marks(len(queues)))  # an idle poll reads, never takes the write lock
        (queued,) = await self._worker.call(lambda c: c.execute(probe, tuple(queues)).fetchone(), is_write=False)
        if not queued:
            return QueueClaim([], [])
        take = sql.fair_take(capacity, int(queued), share)
        return await self._worker.call(  # type: ignore[no-any-return]
            lambda c: queue.claim_queued(c, instance_id, queues, take, claim_token, limits_for, now),
            is_write=True)

    async def request_cancel(self, *, by: str, now: datetime, run_id: int | None = None,
                             job_id: str | None = None) -> tuple[int, int]:
        column, value = sql.cancel_target(run_id, job_id)
        return await self._worker.call(lambda c: queue.request_cancel(c, column, value, by, now),  # type: ignore[no-any-return]
                                       is_write=True)

    async def cancel_requests(self, instance_id: str) -> list[tuple[int, str]]:
        rows = await self._worker.call(lambda c: c.execute(sql.CANCEL_REQUESTS, (instance_id,)).fetchall(),
                                       is_write=False)
        return [(int(r[0]), str(r[1] or "")) for r in rows]

    async def queue_depths(self) -> dict[str, int]:
        rows = await self._worker.call(lambda c: c.execute(sql.QUEUE_DEPTHS).fetchall(), is_write=False)
        return {str(r[0]): int(r[1]) for r in rows}

    # -- stateful jobs -----------------------------------------------------------------
    async def get_watermark(self, job_id: str) -> datetime | None:
        row = await self._worker.call(
            lambda c: c.execute(sql.GET_WATERMARK, (job_id,)).fetchone(), is_write=False)
        return from_db(row[0]) if row else None

    async def cas_watermark(self, job_id: str, expected: datetime | None, new: datetime,
                            fence: Fence | None = None) -> bool:
        def cas(c: sqlite3.Connection) -> bool:
            # Compared as instants inside the write transaction, not as text: an operator may have
            # typed '2026-12-01 15:00:00' or '...T15:00:00Z' by hand.
            leases.check_fence(c, fence)
            row = c.execute(sql.GET_WATERMARK, (job_id,)).fetchone()
            if row is None or from_db(row[0]) != expected:
                return False
            return c.execute(sql.SET_WATERMARK, (to_text(new), job_id)).rowcount == 1
        return bool(await self._worker.call(cas, is_write=True))

    # -- SQL sink ----------------------------------------------------------------------
    async def execute_ddl(self, statement: str) -> None:
        await self._worker.call(lambda c: c.execute(statement), is_write=True)

    async def upsert_rows(self, table: str, key_columns: Sequence[str],
                          rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        columns = list(rows[0])
        for name in [table, *columns, *key_columns]:
            if not _IDENT.match(name):
                raise StoreError(f"upsert_rows: {name!r} is not a plain SQL identifier")
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key_columns)
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        statement = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
                     f"ON CONFLICT ({', '.join(key_columns)}) {conflict}")
        params = [tuple(to_param(r[c], datetime_as_text=True) for c in columns) for r in rows]
        await self._worker.call(lambda c: c.executemany(statement, params), is_write=True)
        return len(rows)

    # -- leader lease --------------------------------------------------------------------
    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None:
        ttl_ms = max(1, int(ttl.total_seconds() * 1000))
        return await self._worker.call(lambda c: leases.acquire(c, name, holder, ttl_ms),  # type: ignore[no-any-return]
                                       is_write=True, is_urgent=True)

    async def lease_release(self, name: str, holder: str, token: int) -> None:
        await self._worker.call(lambda c: c.execute(dialect.RELEASE_LEASE, (name, holder, token)), is_write=True,
                                is_urgent=True)

    async def lease_holder(self, name: str) -> tuple[str, int] | None:
        return await self._worker.call(lambda c: leases.holder_of(c, name), is_write=False,  # type: ignore[no-any-return]
                                       is_urgent=True)


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT MAX(version) FROM piko_schema").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


def _select(conn: sqlite3.Connection, base: str, job_ids: Collection[str] | None, *,
            condition: str = "", tail: str = "", extra: tuple[Any, ...] = (),
            convert: Callable[[Any], Any] | None = None) -> list[Any]:
    """Rows of `base` for these jobs (every job when None), in chunks of sql.CHUNK ids; with
    `convert`, each row as it comes off the cursor, so the raw tuples are never all held at once."""
    rows: list[Any] = []
    for ids in sql.chunked(job_ids):
        statement = sql.select_for(base, None if ids is None else len(ids), condition, tail)
        cursor = conn.execute(statement, (*(ids or ()), *extra))
        rows += cursor.fetchall() if convert is None else map(convert, cursor)
    return rows
