"""What SQLite says differently: upserts, the clock, run ends, heartbeats, leases.

Statements shared with MySQL live in store/sql.py; these are SQLite's own. The "database
clock" is the host clock as SQLite reads it, in milliseconds (hence strict `<` for a lease
takeover and `>=` for validity). Guards on run statuses come from core/lifecycle.py.
"""

from __future__ import annotations

from piko.store import sql

NOW_MS = "(CAST(strftime('%s','now') AS INTEGER)*1000 + CAST(substr(strftime('%f','now'),4) AS INTEGER))"

# -- control plane -------------------------------------------------------------------------
UPSERT_SCHEDULE = (f"INSERT INTO scheduled_job ({sql.SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT (job_id) DO UPDATE SET " + sql.SCHEDULE_UPDATES.format(v="excluded."))
UPSERT_CONFIG = ("INSERT INTO job_config (job_id, schema_version, config_json, version, effective_from) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                 "schema_version = excluded.schema_version, config_json = excluded.config_json, "
                 "version = job_config.version + 1, effective_from = excluded.effective_from")
PRUNE_CHANGES = "DELETE FROM piko_change WHERE changed_at < ?"

# -- run records ---------------------------------------------------------------------------
TAKE_LOCK = ("INSERT OR IGNORE INTO job_lock(job_id, scheduled_time, instance_id, fence_token, locked_at) "
             "VALUES (?, ?, ?, ?, ?)")
_DURATION = "ROUND((julianday({at}) - julianday(job_run.started_at)) * 86400.0, 6)"
FINISH_RUN = ("UPDATE job_run SET status = ?, finished_at = ?, duration_s = " + _DURATION.format(at="?") + ", "
              f"error_type = ?, error_message = ?, error_traceback = ? WHERE run_id = ? AND {sql.FINISHABLE_GUARD}")
# a claim's end: written only while the row still carries the claim's token (IS: NULL-safe equality)
FINISH_RUN_MEASURED = ("UPDATE job_run SET status = ?, finished_at = ?, duration_s = COALESCE(?, "
                       + _DURATION.format(at="?") + "), error_type = ?, error_message = ?, error_traceback = ?, "
                       f"result = ? WHERE run_id = ? AND {sql.FINISHABLE_GUARD} AND claim_token IS ?")
# SQLite >= 3.35: many ends in one statement, from a VALUES list (run_id, status, finished_at,
# error_type, error_message, duration_s, error_traceback, claim_token, result), answering the runs it ended
FINISH_RUNS_FROM = ("UPDATE job_run SET status = v.column2, finished_at = v.column3, duration_s = COALESCE("
                    "v.column6, " + _DURATION.format(at="v.column3") + "), error_type = v.column4, "
                    "error_message = v.column5, error_traceback = v.column7, result = v.column9 "
                    "FROM (VALUES {values}) AS v "
                    "WHERE job_run.run_id = v.column1 AND job_run." + sql.FINISHABLE_GUARD
                    + " AND job_run.claim_token IS v.column8 RETURNING job_run.run_id")

# -- instances ------------------------------------------------------------------------------
HEARTBEAT = (f"INSERT INTO piko_instance ({sql.INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
             "ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, role = excluded.role, "
             "queues = excluded.queues, capacity = excluded.capacity, running = excluded.running")
FORGET_INSTANCE = "DELETE FROM piko_instance WHERE instance_id = ?"
FORGET_STALE_INSTANCES = "DELETE FROM piko_instance WHERE heartbeat_at < ?"

# -- leases ---------------------------------------------------------------------------------
CHECK_FENCE = f"SELECT 1 FROM piko_lease WHERE name = ? AND holder = ? AND token = ? AND expires_at >= {NOW_MS}"
SEED_LEASE = "INSERT OR IGNORE INTO piko_lease(name) VALUES (?)"
_VALID_MINE = f"holder = :me AND expires_at >= {NOW_MS}"
ACQUIRE_LEASE = (f"UPDATE piko_lease SET token = CASE WHEN {_VALID_MINE} THEN token ELSE token + 1 END, "
                 f"acquired_at = CASE WHEN {_VALID_MINE} THEN acquired_at ELSE {NOW_MS} END, "
                 f"holder = :me, renewed_at = {NOW_MS}, expires_at = {NOW_MS} + :ttl, renewals = renewals + 1 "
                 f"WHERE name = :name AND (holder = :me OR holder = '' OR expires_at < {NOW_MS})")
RELEASE_LEASE = (f"UPDATE piko_lease SET holder = '', expires_at = MIN(expires_at, {NOW_MS}), "
                 "renewals = renewals + 1 WHERE name = ? AND holder = ? AND token = ?")
LEASE_HOLDER = f"SELECT holder, token FROM piko_lease WHERE name = ? AND holder != '' AND expires_at >= {NOW_MS}"
