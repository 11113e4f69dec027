"""MySQL/MariaDB dialect data: the DSN form, statements that differ from store/sql.py, error codes.

Shared statements are converted here once ('?' -> '%s'). Upserts use ON DUPLICATE KEY
UPDATE with VALUES(col) (MariaDB rejects MySQL 8's row alias; MySQL 8 only warns on
VALUES()). Every lease and fence comparison uses UTC_TIMESTAMP(6), the server clock; no
client timestamp is ever compared with a lease. Pure: imports no driver, does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from piko.errors import ConfigError, StoreError
from piko.observability.logging import mask_dsn
from piko.store import sql

NOW = "UTC_TIMESTAMP(6)"


SCHEMES = ("mysql", "mysql+aiomysql", "mysql+asyncmy")  # the driver named in the scheme is always aiomysql
QUERY_KEYS = ("charset", "unix_socket", "connect_timeout", "pool_size", "pool_recycle", "mode")
MODES = ("rw", "ro")  # ro: only reads, never migrates (works for a user with SELECT privileges only)
POOL_KEYS = ("pool_size", "pool_recycle")  # given in the DSN, they win over the settings


def parse_dsn(dsn: str) -> dict[str, Any]:
    """`mysql://user:pass@host:port/db?charset=utf8mb4` -> aiomysql connect arguments."""
    parts = urlsplit(dsn)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"MySQL DSN scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}")
    db = unquote(parts.path.lstrip("/"))
    if not db or "/" in db:
        raise ConfigError(f"MySQL DSN {mask_dsn(dsn)!r} names no database (use mysql://USER:PASS@HOST/DB)")
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise ConfigError(f"MySQL DSN parameter(s) {', '.join(unknown)} not supported "
                          f"(allowed: {', '.join(QUERY_KEYS)})")
    if query.get("mode", "rw") not in MODES:
        raise ConfigError(f"MySQL DSN {mask_dsn(dsn)!r}: mode {query['mode']!r} is not one of {', '.join(MODES)}")
    try:
        port = parts.port or 3306
        connect_timeout = float(query.get("connect_timeout", 5))
        pool = {key: int(query[key]) for key in POOL_KEYS if key in query}
    except ValueError as exc:
        raise ConfigError(f"MySQL DSN {mask_dsn(dsn)!r}: {exc}") from None
    return {"host": parts.hostname or "127.0.0.1", "port": port, "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""), "db": db, "charset": query.get("charset", "utf8mb4"),
            "unix_socket": query.get("unix_socket"), "connect_timeout": connect_timeout,
            "mode": query.get("mode", "rw"), **pool}


def q(statement: str) -> str:
    """'?' placeholders -> the driver's '%s' (a literal '%' is doubled first)."""
    return statement.replace("%", "%%").replace("?", "%s")


# -- control plane ----------------------------------------------------------------------
SELECT_SCHEDULES = q(sql.SELECT_SCHEDULES)
INSERT_SCHEDULE_IF_ABSENT = q(sql.INSERT_SCHEDULE.format(ignore="IGNORE"))
UPSERT_SCHEDULE = q(
    sql.INSERT_SCHEDULE.format(ignore="") + " ON DUPLICATE KEY UPDATE "
    "schedule_type = VALUES(schedule_type), schedule_expr = VALUES(schedule_expr), "
    "timezone = VALUES(timezone), enabled = VALUES(enabled), misfire_grace_s = VALUES(misfire_grace_s), "
    "`coalesce` = VALUES(`coalesce`), max_instances = VALUES(max_instances), jitter_s = VALUES(jitter_s), "
    "shards = VALUES(shards), "
    "version = version + 1")
SET_ENABLED = q(sql.SET_ENABLED)
SELECT_CONFIGS = q(sql.SELECT_CONFIGS)
SELECT_CONFIG_HISTORY = q(sql.SELECT_CONFIG_HISTORY)
HISTORY_NEWEST = q(sql.HISTORY_NEWEST)
CHANGE_CURSOR = q(sql.CHANGE_CURSOR)
CHANGES_SINCE = q(sql.CHANGES_SINCE)
PRUNE_CHANGES = "DELETE FROM piko_change WHERE changed_at < %s"
UPSERT_CONFIG = q(
    "INSERT INTO job_config (job_id, schema_version, config_json, version, effective_from) "
    "VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE schema_version = VALUES(schema_version), "
    "config_json = VALUES(config_json), version = version + 1, effective_from = VALUES(effective_from)")

# -- run records ------------------------------------------------------------------------
TAKE_LOCK = q("INSERT IGNORE INTO job_lock (job_id, scheduled_time, instance_id, fence_token, locked_at) "
              "VALUES (?, ?, ?, ?, ?)")
INSERT_RUN = q(sql.INSERT_RUN)
GET_RUN = q(sql.GET_RUN)
LATEST_STATUS = q(sql.LATEST_STATUS)
LATEST_RUN = q(sql.LATEST_RUN)
PIECES = q(sql.PIECES)
LOCK_SLOT = q(sql.SLOT_LOCK + " FOR UPDATE")  # concurrent re-runs of one time wait here, one after another
NEWEST_RUN_STATE = q(sql.NEWEST_RUN_STATE + " LOCK IN SHARE MODE")  # a current read, not the snapshot
LAST_FIRES = q(sql.LAST_FIRES)


def last_runs(count: int) -> str:
    """LAST_RUN for `count` jobs in one statement: one index walk each, their rows together."""
    return " UNION ALL ".join([f"({q(sql.LAST_RUN)})"] * count)


FINISH_RUN = q("UPDATE job_run SET status = ?, finished_at = ?, "
               "duration_s = ROUND(TIMESTAMPDIFF(MICROSECOND, started_at, ?) / 1000000, 6), "
               "error_type = ?, error_message = ?, error_traceback = ? "
               f"WHERE run_id = ? AND {sql.FINISHABLE_GUARD}")
FINISH_RUN_MEASURED = q("UPDATE job_run SET status = ?, finished_at = ?, "
                        "duration_s = COALESCE(?, ROUND(TIMESTAMPDIFF(MICROSECOND, started_at, ?) / 1000000, 6)), "
                        "error_type = ?, error_message = ?, error_traceback = ? "
                        f"WHERE run_id = ? AND {sql.FINISHABLE_GUARD} AND claim_token <=> ?")  # NULL-safe
# Heartbeats and their age use the server clock: instances on hosts with skewed clocks still
# judge each other fairly (a lagging clock must not make a live instance look silent).
HEARTBEAT = q(f"INSERT INTO piko_instance ({sql.INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {NOW}) "
              "ON DUPLICATE KEY UPDATE heartbeat_at = VALUES(heartbeat_at), role = VALUES(role), "
              "queues = VALUES(queues), capacity = VALUES(capacity), running = VALUES(running)")
SELECT_INSTANCES = q(sql.SELECT_INSTANCES)
FORGET_INSTANCE = q("DELETE FROM piko_instance WHERE instance_id = ?")
FORGET_STALE_INSTANCES = f"DELETE FROM piko_instance WHERE heartbeat_at < {NOW} - INTERVAL %s MICROSECOND"
ABANDON_ORPHANS = q(sql.ABANDON_ORPHANS.replace("finished_at = ?", f"finished_at = {NOW}"))

# -- stateful jobs ----------------------------------------------------------------------
GET_WATERMARK = q(sql.GET_WATERMARK)
CAS_WATERMARK = q(sql.CAS_WATERMARK)

# -- leases (variant B of docs/mysql.md: one UPDATE decides, LAST_INSERT_ID returns the token)
SEED_LEASE = "INSERT INTO piko_lease (name) VALUES (%s) ON DUPLICATE KEY UPDATE name = name"
_IS_MY_VALID_TERM = f"holder = %(me)s AND expires_at > {NOW}"
# token and acquired_at come before holder/expires_at so they read the old row in
# MariaDB's left-to-right assignment order (and in SIMULTANEOUS_ASSIGNMENT mode anyway).
ACQUIRE_LEASE = (
    f"UPDATE piko_lease SET token = LAST_INSERT_ID(IF({_IS_MY_VALID_TERM}, token, token + 1)), "
    f"acquired_at = IF({_IS_MY_VALID_TERM}, acquired_at, {NOW}), "
    f"holder = %(me)s, renewed_at = {NOW}, "
    f"expires_at = {NOW} + INTERVAL %(ttl_us)s MICROSECOND, renewals = renewals + 1 "
    f"WHERE name = %(name)s AND (holder = %(me)s OR holder = '' OR expires_at <= {NOW})")
READ_GRANT = "SELECT token, acquired_at = renewed_at, expires_at FROM piko_lease WHERE name = %s"
RELEASE_LEASE = (f"UPDATE piko_lease SET holder = '', expires_at = LEAST(expires_at, {NOW}), "
                 "renewals = renewals + 1 WHERE name = %s AND holder = %s AND token = %s")
LEASE_HOLDER = f"SELECT holder, token FROM piko_lease WHERE name = %s AND holder != '' AND expires_at > {NOW}"
# A shared lock on the lease row: a takeover (X lock) waits until the fenced write commits.
CHECK_FENCE = (f"SELECT 1 FROM piko_lease WHERE name = %s AND holder = %s AND token = %s "
               f"AND expires_at > {NOW} LOCK IN SHARE MODE")

# -- migrations -------------------------------------------------------------------------
SCHEMA_VERSION = "SELECT MAX(version) FROM piko_schema"
RECORD_MIGRATION = "INSERT IGNORE INTO piko_schema (version, description) VALUES (%s, %s)"
MIGRATION_LOCK = "SELECT GET_LOCK(%s, 60)"
MIGRATION_UNLOCK = "SELECT RELEASE_LOCK(%s)"

# -- error codes --------------------------------------------------------------------------
ER_DUP_FIELDNAME = 1060  # ADD COLUMN of an existing column: a re-run migration (MySQL 8: no IF NOT EXISTS)
ER_DUP_KEYNAME = 1061  # CREATE INDEX on an existing index: a re-run migration
ER_TRG_ALREADY_EXISTS = 1359  # CREATE TRIGGER again (MySQL 8 has no IF NOT EXISTS for triggers)
ER_BINLOG_CREATE_ROUTINE_NEED_SUPER = 1419  # CREATE TRIGGER with binlog on, without SUPER
ALREADY_DONE = frozenset({ER_DUP_FIELDNAME, ER_DUP_KEYNAME, ER_TRG_ALREADY_EXISTS})
ER_NO_SUCH_TABLE = 1146
BUSY = frozenset({1205, 1213, 3572})  # lock wait timeout, deadlock, NOWAIT (MySQL 8)
# Lost or refused connections, server shutting down, connection killed, idle disconnect
# (MySQL 8); 0 is the driver's "not connected" on a connection it already closed.
CONNECTION_LOST = frozenset({0, 1053, 1927, 2003, 2006, 2013, 2055, 4031})
TRANSIENT = BUSY | CONNECTION_LOST
# Writes refused until someone acts: disk full (1021), table full (1114), read-only server or
# transaction (1290, 1792, 1836), InnoDB read-only (1015 can't lock, 1030 engine error).
WRITES_REFUSED = frozenset({1015, 1021, 1030, 1114, 1290, 1792, 1836})


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a driver error, None for anything else."""
    if type(exc).__module__.split(".")[0] not in ("pymysql", "aiomysql"):
        return None
    code = exc.args[0] if exc.args else 0
    return code if isinstance(code, int) else 0


def reason(exc: BaseException) -> str:
    """A driver error as text without secrets: 'MySQL error 1045: Access denied ...'."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return mask_dsn(f"MySQL error {args[0]}: {args[1]}")
    return mask_dsn(f"{type(exc).__name__}: {exc}")


def select_for(base: str, id_count: int | None, condition: str = "", tail: str = "") -> str:
    """sql.select_for on statements already in the driver's placeholders."""
    return sql.select_for(base, id_count, condition, tail, mark="%s")


# -- upsert_rows (the SQL sink) -----------------------------------------------------------
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def upsert_rows_statement(table: str, columns: Sequence[str], key_columns: Sequence[str]) -> str:
    """INSERT ... ON DUPLICATE KEY UPDATE for the sink; identifiers checked, then backquoted."""
    for name in [table, *columns, *key_columns]:
        if not _IDENT.match(name):
            raise StoreError(f"upsert_rows: {name!r} is not a plain SQL identifier")
    updates = [f"`{c}` = VALUES(`{c}`)" for c in columns if c not in key_columns]
    if not updates:  # keys only: keep the existing row (SQLite's DO NOTHING)
        updates = [f"`{key_columns[0]}` = `{key_columns[0]}`"]
    return (f"INSERT INTO `{table}` ({', '.join(f'`{c}`' for c in columns)}) "
            f"VALUES ({', '.join('%s' for _ in columns)}) ON DUPLICATE KEY UPDATE {', '.join(updates)}")


# -- row mapping (same shapes as the SQLite store) ----------------------------------------


schedule_row = sql.schedule_row  # shared with the SQLite store
schedule_params = sql.schedule_params


# -- the queue (cluster execution) ---------------------------------------------------------
# SKIP LOCKED: workers claiming at once take different rows, none waits (index: status, queue, run_id)
SELECT_QUEUED = sql.SELECT_QUEUED + " FOR UPDATE SKIP LOCKED"
# A locking (current) read: in REPEATABLE READ a plain SELECT would count from the transaction's
# snapshot, taken before the gate was locked, and miss runs another claim started meanwhile.
COUNT_LIVE = sql.COUNT_LIVE + " LOCK IN SHARE MODE"
STRIP_ABANDONED_TOKEN = q(sql.STRIP_ABANDONED_TOKEN)
MISS_QUEUED = q(sql.MISS_QUEUED)
CANCEL_REQUESTS = q(sql.CANCEL_REQUESTS)
QUEUE_DEPTHS = q(sql.QUEUE_DEPTHS)
# A job's gate row, locked in job order, serializes the claims that count its running runs.
FIND_GATES = "SELECT job_id FROM piko_job_gate WHERE job_id IN ({marks})"
ADD_GATES = "INSERT IGNORE INTO piko_job_gate (job_id) VALUES "
LOCK_GATES = "SELECT job_id FROM piko_job_gate WHERE job_id IN ({marks}) ORDER BY job_id FOR UPDATE"  # '?' style


def with_marks(statement: str, count: int) -> str:
    """A shared statement ('?' style) with `count` placeholders in its IN list, in the driver's style."""
    return q(statement.format(marks=sql.marks(count)))
