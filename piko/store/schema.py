"""The schema, once, for every dialect: tables as DDL templates plus versioned migrations.

Dialect differences are data (the TYPES maps below): key and text types, the auto-increment
id, timestamps (ISO text in SQLite, UTC DATETIME(6) in MySQL), the table suffix, and how an
index is created. Migrations are append-only: never edit a released one, add the next.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "KEY": "TEXT",
        "TEXT": "TEXT",
        "TS": "TEXT",
        "BOOL": "INTEGER",
        "ID": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGTEXT": "TEXT",
        "NOW": "(strftime('%Y-%m-%d %H:%M:%f','now'))",
        "LEASE_TS": "INTEGER",  # unix milliseconds from the host clock
        "LEASE_ZERO": "0",
        "SUFFIX": "",
    },
    "mysql": {
        "KEY": "VARCHAR(191)",
        "TEXT": "TEXT",
        "TS": "DATETIME(6)",
        "BOOL": "TINYINT",
        "ID": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        "BIGTEXT": "MEDIUMTEXT",  # up to 16 MiB: a map item, a step's upstream results
        "NOW": "CURRENT_TIMESTAMP(6)",
        "LEASE_TS": "DATETIME(6)",  # UTC from the server clock
        "LEASE_ZERO": "'1970-01-01 00:00:00'",
        "SUFFIX": " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    },
}

SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS piko_schema (
  version INTEGER NOT NULL PRIMARY KEY,
  description VARCHAR(200) NOT NULL,
  applied_at {TS} NOT NULL DEFAULT {NOW}
){SUFFIX}"""

V1_TABLES = [
    """CREATE TABLE IF NOT EXISTS scheduled_job (
  job_id {KEY} NOT NULL PRIMARY KEY,
  schedule_type VARCHAR(16) NOT NULL DEFAULT 'cron',
  schedule_expr {TEXT} NOT NULL,
  timezone VARCHAR(64) NULL,
  enabled {BOOL} NOT NULL DEFAULT 1,
  misfire_grace_s DOUBLE PRECISION NULL,
  `coalesce` {BOOL} NULL,
  max_instances INTEGER NULL,
  jitter_s DOUBLE PRECISION NULL,
  version BIGINT NOT NULL DEFAULT 1,
  last_data_time {TS} NULL,
  created_at {TS} NOT NULL DEFAULT {NOW}
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS job_config (
  job_id {KEY} NOT NULL PRIMARY KEY,
  schema_version INTEGER NOT NULL DEFAULT 1,
  config_json {TEXT} NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  effective_from {TS} NULL
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS job_run (
  run_id {ID},
  job_id {KEY} NOT NULL,
  scheduled_time {TS} NOT NULL,
  status VARCHAR(16) NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 1,
  kind VARCHAR(16) NOT NULL DEFAULT 'schedule',
  instance_id VARCHAR(128) NOT NULL DEFAULT '',
  fence_token BIGINT NULL,
  started_at {TS} NULL,
  finished_at {TS} NULL,
  duration_s DOUBLE PRECISION NULL,
  error_type VARCHAR(200) NULL,
  error_message {TEXT} NULL,
  data_start {TS} NULL,
  data_end {TS} NULL
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS job_lock (
  job_id {KEY} NOT NULL,
  scheduled_time {TS} NOT NULL,
  instance_id VARCHAR(128) NOT NULL,
  fence_token BIGINT NULL,
  locked_at {TS} NOT NULL,
  PRIMARY KEY (job_id, scheduled_time)
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS piko_instance (
  instance_id VARCHAR(128) NOT NULL PRIMARY KEY,
  host VARCHAR(128) NOT NULL,
  pid INTEGER NOT NULL,
  started_at {TS} NOT NULL,
  heartbeat_at {TS} NOT NULL
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS piko_lease (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  holder VARCHAR(128) NOT NULL DEFAULT '',
  token BIGINT NOT NULL DEFAULT 0,
  acquired_at {LEASE_TS} NOT NULL DEFAULT {LEASE_ZERO},
  renewed_at {LEASE_TS} NOT NULL DEFAULT {LEASE_ZERO},
  expires_at {LEASE_TS} NOT NULL DEFAULT {LEASE_ZERO},
  renewals BIGINT NOT NULL DEFAULT 0
){SUFFIX}""",
]

V1_INDEXES = [
    ("ix_job_run_job_time", "job_run", "job_id, scheduled_time"),
    ("ix_job_run_status", "job_run", "status, instance_id"),
]


# v2: a change log fed by triggers, so each reconcile tick reads only what changed (edits by
# plain SQL included, version bumped or not), and every stored config version is kept, so a
# config waiting for its effective_from does not hide the one still serving, across restarts.
V2_TABLES = [
    """CREATE TABLE IF NOT EXISTS piko_change (
  seq {ID},
  table_name VARCHAR(32) NOT NULL,
  job_id {KEY} NOT NULL,
  changed_at {TS} NOT NULL DEFAULT {NOW}
){SUFFIX}""",
    """CREATE TABLE IF NOT EXISTS job_config_history (
  history_id {ID},
  job_id {KEY} NOT NULL,
  schema_version INTEGER NOT NULL,
  config_json {TEXT} NOT NULL,
  version BIGINT NOT NULL,
  effective_from {TS} NULL,
  recorded_at {TS} NOT NULL DEFAULT {NOW}
){SUFFIX}""",
]
V2_INDEXES = [("ix_config_history_job", "job_config_history", "job_id, history_id")]
_CHANGE_EVENTS = [("scheduled_job", "INSERT", "NEW"), ("scheduled_job", "UPDATE", "NEW"),
                  ("scheduled_job", "DELETE", "OLD"), ("job_config", "INSERT", "NEW"),
                  ("job_config", "UPDATE", "NEW"), ("job_config", "DELETE", "OLD")]


def trigger_sql(dialect: str, name: str, table: str, event: str, body: str) -> str:
    if dialect == "sqlite":
        return f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} BEGIN {body}; END"
    return f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {body}"


def v2_triggers(dialect: str) -> list[str]:
    out = []
    for table, event, row in _CHANGE_EVENTS:
        short = "sj" if table == "scheduled_job" else "jc"
        body = f"INSERT INTO piko_change (table_name, job_id) VALUES ('{table}', {row}.job_id)"
        out.append(trigger_sql(dialect, f"piko_{short}_{event.lower()}", table, event, body))
        if table == "job_config" and event in ("INSERT", "UPDATE"):
            keep = ("INSERT INTO job_config_history (job_id, schema_version, config_json, version, effective_from) "
                    "VALUES (NEW.job_id, NEW.schema_version, NEW.config_json, NEW.version, NEW.effective_from)")
            out.append(trigger_sql(dialect, f"piko_jc_keep_{event.lower()}", table, event, keep))
    return out


# v3: an UPDATE that changes a row's job_id (a rename) must stop the old job too, so the
# update triggers log the old and the new job_id. The v2 update triggers are superseded.
_SUPERSEDED = ("piko_sj_update", "piko_jc_update")


def v3_triggers(dialect: str) -> list[str]:
    out = []
    for table, short in (("scheduled_job", "sj"), ("job_config", "jc")):
        body = (f"INSERT INTO piko_change (table_name, job_id) VALUES ('{table}', NEW.job_id), "
                f"('{table}', OLD.job_id)")
        out.append(trigger_sql(dialect, f"piko_{short}_update_v3", table, "UPDATE", body))
    # dropped after the new ones exist: no moment without an update trigger
    return out + [f"DROP TRIGGER IF EXISTS {name}" for name in _SUPERSEDED]


# v4: the traceback of a failed or timed-out run, so where it failed is seen from the store (the
# CLI, SQL) without the instance's logs. It comes bounded (core/invoke.py keeps the last 8192
# characters: 32 KiB of utf8mb4 at most), so TEXT holds it on MySQL too. A nullable column added
# last changes only the table's definition: instant on SQLite, MySQL 8 and MariaDB 10.3+.
V4_COLUMNS = ["ALTER TABLE job_run ADD COLUMN error_traceback {TEXT} NULL"]

# v5: cluster execution. A run may be queued (PENDING) for any worker of its queue; a claim
# carries a token its end must match; a cancel is requested on the row; instances say what they
# serve; a gate row per job serializes claims that count its running runs (max_instances).
V5_STATEMENTS = [
    "ALTER TABLE job_run ADD COLUMN queue VARCHAR(64) NOT NULL DEFAULT 'default'",
    "ALTER TABLE job_run ADD COLUMN claim_token BIGINT NULL",
    "ALTER TABLE job_run ADD COLUMN enqueued_at {TS} NULL",
    "ALTER TABLE job_run ADD COLUMN cancel_requested {BOOL} NOT NULL DEFAULT 0",
    "ALTER TABLE job_run ADD COLUMN cancelled_by VARCHAR(200) NULL",
    "ALTER TABLE piko_instance ADD COLUMN role VARCHAR(32) NOT NULL DEFAULT ''",
    "ALTER TABLE piko_instance ADD COLUMN queues VARCHAR(1000) NOT NULL DEFAULT ''",
    "ALTER TABLE piko_instance ADD COLUMN capacity INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE piko_instance ADD COLUMN running INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS piko_job_gate (
  job_id {KEY} NOT NULL PRIMARY KEY
){SUFFIX}""",
]
V5_INDEXES = [("ix_job_run_queue", "job_run", "status, queue, run_id"),  # a worker's claim scans this
              ("ix_job_run_live", "job_run", "status, job_id")]  # running runs of a job (max_instances)

# v6: pieces of a fire (core/pieces.py): a piece names the run that made it and carries its input
# and its result as JSON; a schedule row may split each fire into shards (hot-changeable).
V6_STATEMENTS = [
    "ALTER TABLE job_run ADD COLUMN parent_run_id BIGINT NULL",
    "ALTER TABLE job_run ADD COLUMN payload {BIGTEXT} NULL",
    "ALTER TABLE job_run ADD COLUMN result {BIGTEXT} NULL",
    "ALTER TABLE scheduled_job ADD COLUMN shards INTEGER NULL",
]
V6_INDEXES = [("ix_job_run_parent", "job_run", "parent_run_id")]  # a run's tree


@dataclass(frozen=True)
class Migration:
    """Statements run once, in order. `optional` ones are retried at every open and may fail
    (MySQL refuses triggers to non-SUPER users when binary logging is on): piko then works
    without what they add (the change log: reconcile reads every row each tick)."""

    version: int
    description: str
    statements: tuple[str, ...]
    optional: tuple[str, ...] = ()


def render(template: str, dialect: str) -> str:
    return template.format(**TYPES[dialect])


def index_sql(dialect: str, name: str, table: str, columns: str) -> str:
    exists = " IF NOT EXISTS" if dialect == "sqlite" else ""
    return f"CREATE INDEX{exists} {name} ON {table} ({columns})"


def migrations(dialect: str) -> list[Migration]:
    """Every migration for `dialect`, oldest first."""
    v1 = [render(t, dialect) for t in V1_TABLES]
    v1 += [index_sql(dialect, *ix) for ix in V1_INDEXES]
    v2 = [render(t, dialect) for t in V2_TABLES] + [index_sql(dialect, *ix) for ix in V2_INDEXES]
    v2.append("INSERT INTO job_config_history (job_id, schema_version, config_json, version, effective_from) "
              "SELECT job_id, schema_version, config_json, version, effective_from FROM job_config")
    return [Migration(1, "scheduled_job, job_config, job_run, job_lock, instances, lease", tuple(v1)),
            Migration(2, "change log and config history (triggers)", tuple(v2), tuple(v2_triggers(dialect))),
            Migration(3, "change log: updates log the old and the new job_id", (), tuple(v3_triggers(dialect))),
            Migration(4, "job_run.error_traceback: where a failed or timed-out run failed",
                      tuple(render(t, dialect) for t in V4_COLUMNS)),
            Migration(5, "cluster execution: queued runs, claim tokens, cancel requests, worker rows, job gates",
                      tuple([render(t, dialect) for t in V5_STATEMENTS]
                            + [index_sql(dialect, *ix) for ix in V5_INDEXES])),
            Migration(6, "pieces: parent run, payload and result of a piece; shards per schedule",
                      tuple([render(t, dialect) for t in V6_STATEMENTS]
                            + [index_sql(dialect, *ix) for ix in V6_INDEXES]))]


def optional_statements(dialect: str) -> list[str]:
    """The optional statements that bring any database to the newest state, re-run at every
    open (MySQL): superseded triggers are dropped, never created again first."""
    out = []
    for mig in migrations(dialect):
        out += [st for st in mig.optional if not any(f"TRIGGER {name} " in st or
                                                         f"TRIGGER IF NOT EXISTS {name} " in st
                                                         for name in _SUPERSEDED)]
    return out


def latest_version(dialect: str = "sqlite") -> int:
    """The newest schema version: the same number in every dialect (the memory store included)."""
    return migrations("mysql" if dialect == "mysql" else "sqlite")[-1].version
