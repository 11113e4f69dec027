"""SQL shared by the SQLite and MySQL stores, written once with '?' placeholders.

Each dialect module (sqlite/dialect.py, mysql/dialect.py) adds what its database says
differently: upserts, the clock, durations; the MySQL one converts placeholders ('?' -> '%s').
Row <-> record mapping, the chunking of long id lists and the status guards (derived from
core/lifecycle.py) live here too, so both stores read, write and guard runs the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from piko.core.lifecycle import ABANDONABLE, CLAIMABLE, FINISHABLE, LIVE, sql_in
from piko.core.types import RUN_KINDS, InstanceInfo, RunClaim, RunFinish, RunRecord, RunStatus, ScheduleRow
from piko.errors import ConfigError
from piko.store.codec import from_db

SCHEDULE_COLUMNS = ("job_id, schedule_type, schedule_expr, timezone, enabled, misfire_grace_s, `coalesce`, "
                    "max_instances, jitter_s, version, shards")
SELECT_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS}, created_at FROM scheduled_job"
INSERT_SCHEDULE = (f"INSERT {{ignore}} INTO scheduled_job ({SCHEDULE_COLUMNS}) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SCHEDULE_UPDATES = ("schedule_type = {v}schedule_type, schedule_expr = {v}schedule_expr, timezone = {v}timezone, "
                     "enabled = {v}enabled, misfire_grace_s = {v}misfire_grace_s, `coalesce` = {v}`coalesce`, "
                     "max_instances = {v}max_instances, jitter_s = {v}jitter_s, shards = {v}shards, "
                     "version = scheduled_job.version + 1")
SET_ENABLED = "UPDATE scheduled_job SET enabled = ?, version = version + 1 WHERE job_id = ?"
SET_MANY_ENABLED = "UPDATE scheduled_job SET enabled = ?, version = version + 1 WHERE job_id IN ({marks})"

SELECT_CONFIGS = "SELECT job_id, schema_version, config_json, version, effective_from FROM job_config"
# The newest versions per job: a correlated count keeps it portable (SQLite, MariaDB, MySQL).
SELECT_CONFIG_HISTORY = ("SELECT job_id, schema_version, config_json, version, effective_from, history_id "
                         "FROM job_config_history h")
HISTORY_NEWEST = ("(SELECT COUNT(*) FROM job_config_history n WHERE n.job_id = h.job_id "
                  "AND n.history_id > h.history_id) < ?")
CHANGE_CURSOR = "SELECT MAX(seq) FROM piko_change"
CHANGES_SINCE = "SELECT seq, table_name, job_id FROM piko_change WHERE seq > ? ORDER BY seq LIMIT ?"

RUN_COLUMNS = ("job_id, scheduled_time, status, attempt, kind, instance_id, fence_token, started_at, "
               "finished_at, duration_s, error_type, error_message, data_start, data_end, queue, claim_token, "
               "enqueued_at, parent_run_id, payload")
RUN_WIDTH = RUN_COLUMNS.count(",") + 1
RUN_PLACEHOLDERS = "(" + ", ".join(["?"] * RUN_WIDTH) + ")"
INSERT_RUN = f"INSERT INTO job_run ({RUN_COLUMNS}) VALUES {RUN_PLACEHOLDERS}"
# read back: what a run is born with, then what it may gain later (a traceback, a cancel request)
SELECT_RUNS = f"SELECT run_id, {RUN_COLUMNS}, error_traceback, cancel_requested, cancelled_by, result FROM job_run"
GET_RUN = SELECT_RUNS + " WHERE run_id = ?"
# The newest fire time each job has handled (every fire takes its run lock: runs, MISSED and
# SKIPPED records alike); MAX over the primary key is an index lookup on both databases.
LAST_FIRE = "SELECT MAX(scheduled_time) FROM job_lock WHERE job_id = ?"
LAST_FIRES = "SELECT job_id, MAX(scheduled_time) FROM job_lock"
LATEST_STATUS = ("SELECT status FROM job_run WHERE job_id = ? AND scheduled_time = ? "
                 "ORDER BY run_id DESC LIMIT 1")
LATEST_RUN = SELECT_RUNS + " WHERE job_id = ? AND scheduled_time = ? ORDER BY run_id DESC LIMIT 1"
# Pieces of a fire (core/pieces.py): every row of the slots under a key prefix at one time (the
# caller keeps each slot's newest and drops what a case-insensitive collation let in), and the
# pieces a set of runs made (a run's tree).
PIECES = SELECT_RUNS + " WHERE job_id LIKE ? ESCAPE '!' AND scheduled_time = ? ORDER BY run_id"
CHILDREN = SELECT_RUNS + " WHERE parent_run_id IN ({marks}) ORDER BY run_id"


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with `prefix` ('!' escapes the wildcards)."""
    return prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def newest_per_slot(runs: Sequence[RunRecord], prefix: str) -> list[RunRecord]:
    newest: dict[str, RunRecord] = {}
    for run in runs:  # in run_id order
        if run.job_id.startswith(prefix):
            newest[run.job_id] = run
    return list(newest.values())


# A job's run of its newest scheduled time (its newest attempt): a backward walk of the
# (job_id, scheduled_time) index, which carries the primary key on both databases.
LAST_RUN = SELECT_RUNS + " WHERE job_id = ? ORDER BY scheduled_time DESC, run_id DESC LIMIT 1"
# A re-run claim reads, inside its write transaction, whether the slot is locked (MySQL: and locks
# it, so concurrent re-runs of one time queue up) and the state of the slot's newest run.
SLOT_LOCK = "SELECT 1 FROM job_lock WHERE job_id = ? AND scheduled_time = ?"
NEWEST_RUN_STATE = ("SELECT status, attempt FROM job_run WHERE job_id = ? AND scheduled_time = ? "
                    "ORDER BY run_id DESC LIMIT 1")
# Guards from the lifecycle table: a run's end may replace these statuses; the sweep only these.
FINISHABLE_GUARD = f"status IN {sql_in(FINISHABLE)}"
ABANDON_ORPHANS = ("UPDATE job_run SET status = 'ABANDONED', finished_at = ?, error_type = 'InstanceLost', "
                   "error_message = 'the instance running it stopped (no heartbeat)' "
                   f"WHERE status IN {sql_in(ABANDONABLE)} "
                   "AND instance_id NOT IN (SELECT instance_id FROM piko_instance)")

SELECT_INSTANCES = ("SELECT instance_id, host, pid, started_at, heartbeat_at, role, queues, capacity, running "
                    "FROM piko_instance")
INSTANCE_COLUMNS = "instance_id, host, pid, started_at, role, queues, capacity, running, heartbeat_at"

# -- the queue (cluster execution) -----------------------------------------------------------
# A new attempt over an ABANDONED run takes the old claim's token away: its late end is refused.
STRIP_ABANDONED_TOKEN = ("UPDATE job_run SET claim_token = NULL WHERE job_id = ? AND scheduled_time = ? "
                         "AND status = 'ABANDONED' AND run_id < ?")
COUNT_LIVE = f"SELECT job_id, status, COUNT(*) FROM job_run WHERE status IN {sql_in(LIVE)} AND job_id IN ({{marks}}) " \
             "GROUP BY job_id, status"
# How many runs wait (up to QUEUED_PEEK): an idle poll's one read, and a claim's fair share of a burst.
QUEUED_PEEK = 1000
COUNT_QUEUED = (f"SELECT COUNT(*) FROM (SELECT 1 FROM job_run WHERE status IN {sql_in(CLAIMABLE)} "
                f"AND queue IN ({{marks}}) LIMIT {QUEUED_PEEK}) q")


SMALL_BURST = 4  # a burst this small goes whole to the first worker that asks; a bigger one is shared


def fair_take(capacity: int, queued: int, share: int) -> int:
    """How many of `queued` runs one of `share` workers claims: its part of a burst (rounded up), a
    small burst whole, never more than its free capacity."""
    return min(capacity, max(-(-queued // max(1, share)), min(queued, SMALL_BURST)))
SELECT_QUEUED = SELECT_RUNS + f" WHERE status IN {sql_in(CLAIMABLE)} AND queue IN ({{marks}}) ORDER BY run_id LIMIT ?"
START_QUEUED = (f"UPDATE job_run SET status = 'RUNNING', instance_id = ?, claim_token = ?, started_at = ? "
                f"WHERE run_id IN ({{marks}}) AND status IN {sql_in(CLAIMABLE)}")
MISS_QUEUED = ("UPDATE job_run SET status = 'MISSED', instance_id = ?, started_at = ?, finished_at = ?, duration_s = 0, "
               f"error_type = 'Misfire', error_message = ? WHERE run_id = ? AND status IN {sql_in(CLAIMABLE)}")
CANCEL_QUEUED = ("UPDATE job_run SET status = 'CANCELLED', finished_at = ?, duration_s = 0, error_type = 'Cancelled', "
                 f"error_message = ?, cancelled_by = ? WHERE status IN {sql_in(CLAIMABLE)} AND {{who}} = ?")
FLAG_RUNNING = ("UPDATE job_run SET cancel_requested = 1, cancelled_by = ? WHERE status = 'RUNNING' "
                "AND cancel_requested = 0 AND {who} = ?")
CANCEL_REQUESTS = ("SELECT run_id, cancelled_by FROM job_run WHERE status = 'RUNNING' AND instance_id = ? "
                   "AND cancel_requested = 1")
QUEUE_DEPTHS = f"SELECT queue, COUNT(*) FROM job_run WHERE status IN {sql_in(CLAIMABLE)} GROUP BY queue"


def marks(count: int, mark: str = "?") -> str:
    return ", ".join([mark] * count)


def cancel_target(run_id: int | None, job_id: str | None) -> tuple[str, Any]:
    """(column, value) a cancel request names: one run, or every run of a job."""
    if (run_id is None) == (job_id is None):
        raise ValueError("request_cancel: name a run_id or a job_id")
    return ("run_id", run_id) if run_id is not None else ("job_id", job_id)


def instance_params(i: InstanceInfo, ts: Callable[[datetime | None], Any]) -> tuple[Any, ...]:
    """INSTANCE_COLUMNS but heartbeat_at (each dialect stamps that itself)."""
    return (i.instance_id, i.host, i.pid, ts(i.started_at), i.role, ",".join(i.queues), i.capacity, i.running)


def instance_row(r: Sequence[Any], ts: Callable[[Any], datetime | None]) -> InstanceInfo:
    return InstanceInfo(r[0], r[1], int(r[2]), ts(r[3]), ts(r[4]), role=r[5] or "",  # type: ignore[arg-type]
                        queues=tuple(q for q in (r[6] or "").split(",") if q), capacity=int(r[7] or 0),
                        running=int(r[8] or 0))

GET_WATERMARK = "SELECT last_data_time FROM scheduled_job WHERE job_id = ?"
SET_WATERMARK = "UPDATE scheduled_job SET last_data_time = ? WHERE job_id = ?"
CAS_WATERMARK = ("UPDATE scheduled_job SET last_data_time = ? WHERE job_id = ? "
                 "AND (last_data_time = ? OR (last_data_time IS NULL AND ? IS NULL))")


CHUNK = 500  # ids per `IN (...)` list: under every database's parameter limit


def select_for(base: str, id_count: int | None, condition: str = "", tail: str = "", mark: str = "?") -> str:
    """base [WHERE job_id IN (mark x id_count) AND condition] tail; id_count None = every job.
    `mark` is the driver's placeholder, the one `base` and `condition` are written in."""
    where = [f"job_id IN ({', '.join(mark for _ in range(id_count))})"] if id_count is not None else []
    where += [condition] if condition else []
    return base + (" WHERE " + " AND ".join(where) if where else "") + tail


def chunked(job_ids: Collection[str] | None) -> list[list[str] | None]:
    """Long id lists in CHUNK-sized pieces; None (every job) stays one piece."""
    if job_ids is None:
        return [None]
    ids = list(job_ids)
    return [ids[start:start + CHUNK] for start in range(0, len(ids), CHUNK)]


def run_params(claim: RunClaim, ts: Callable[[datetime | None], Any], token: int | None) -> tuple[Any, ...]:
    """A claim as a job_run row. A queued (PENDING) row has not started: its claim time is when it
    was enqueued, and a worker's claim sets started_at; a row born final ends as it starts."""
    status = claim.status
    is_queued = status is RunStatus.PENDING
    at = ts(claim.started_at)
    return (claim.job_id, ts(claim.scheduled_at), status.value, claim.attempt, claim.kind,
            "" if is_queued else claim.instance_id, token, None if is_queued else at,
            at if status.is_final else None, 0.0 if status.is_final else None, claim.error_type,
            claim.error_message, ts(claim.data_start), ts(claim.data_end), claim.queue, claim.claim_token,
            at if is_queued else None, claim.parent_run_id, claim.payload)


def may_rerun(claim: RunClaim, newest: Sequence[Any] | None) -> bool:
    """Whether a re-run claim may insert its row, given the slot's newest run (status, attempt)."""
    return newest is not None and RunStatus(newest[0]) in claim.rerun_if and int(newest[1]) == claim.attempt - 1


def refused_ends(finishes: Sequence[RunFinish], written: set[int]) -> list[int]:
    """The run ids whose end was not written (finish_runs' answer): a run ends once, so a second
    end of it in one batch is refused too. `written` is consumed."""
    refused = []
    for f in finishes:
        if f.run_id in written:
            written.discard(f.run_id)
        else:
            refused.append(f.run_id)
    return refused


def run_filters(job_id: str | None, status: RunStatus | None, kind: str | None) -> dict[str, str]:
    """The filters given, checked and as stored: column -> value (ConfigError names the allowed ones)."""
    try:
        status_value = None if status is None else RunStatus(status).value
    except ValueError:
        allowed = ", ".join(s.value for s in RunStatus)
        raise ConfigError(f"unknown run status {status!r} (use one of {allowed})") from None
    if kind is not None and kind not in RUN_KINDS:
        raise ConfigError(f"unknown run kind {kind!r} (use one of {', '.join(RUN_KINDS)})")
    filters = {"job_id": job_id, "status": status_value, "kind": kind}
    return {column: value for column, value in filters.items() if value is not None}


def select_runs(job_id: str | None, status: RunStatus | None, kind: str | None) -> tuple[str, tuple[Any, ...]]:
    """The newest runs matching every filter given, filtered in SQL (so LIMIT counts matches):
    the statement, ending in `LIMIT ?` for the caller's limit, and the filters' parameters."""
    used = run_filters(job_id, status, kind)
    where = " WHERE " + " AND ".join(f"{column} = ?" for column in used) if used else ""
    return f"{SELECT_RUNS}{where} ORDER BY run_id DESC LIMIT ?", tuple(used.values())


def run_record(r: Sequence[Any], ts: Callable[[Any], datetime | None]) -> RunRecord:
    return RunRecord(
        run_id=int(r[0]), job_id=r[1], scheduled_at=ts(r[2]), status=RunStatus(r[3]),  # type: ignore[arg-type]
        attempt=int(r[4]), kind=r[5], instance_id=r[6], started_at=ts(r[8]), finished_at=ts(r[9]),
        duration_s=None if r[10] is None else float(r[10]), error_type=r[11], error_message=r[12],
        data_start=ts(r[13]), data_end=ts(r[14]), queue=r[15], claim_token=None if r[16] is None else int(r[16]),
        enqueued_at=ts(r[17]), parent_run_id=None if r[18] is None else int(r[18]), payload=r[19],
        error_traceback=r[20], cancel_requested=bool(r[21]), cancelled_by=r[22], result=r[23])


def fold_changes(seq: int, rows: Sequence[Any], limit: int) -> tuple[int, set[str], set[str]] | None:
    """Change-log rows -> (new cursor, schedule job ids, config job ids); None when over the limit."""
    if len(rows) > limit:
        return None
    schedules: set[str] = set()
    configs: set[str] = set()
    for row_seq, table, job_id in rows:
        seq = max(seq, int(row_seq))
        (schedules if table == "scheduled_job" else configs).add(job_id)
    return seq, schedules, configs


def schedule_row(r: Sequence[Any], ts: Callable[[Any], datetime | None] = from_db) -> ScheduleRow:
    """A stored row as operators wrote it: a value the column should never hold (enabled 2 or
    'yes', timezone '') is kept, not read as something valid, so reconcile can refuse the row."""
    return ScheduleRow(
        job_id=_shared(r[0]), schedule_type=_shared(str(r[1] or "")), schedule_expr=_shared(str(r[2] or "")),
        timezone=_shared(r[3]), enabled=_stored_flag(r[4]), misfire_grace_s=r[5], coalesce=_stored_flag(r[6]),
        max_instances=r[7], jitter_s=r[8], version=int(r[9] or 0), shards=r[10], created_at=ts(r[11]))


def _shared(value: Any) -> Any:
    """Text as one object per distinct value: rows repeat their type, expression and zone, and a
    job id is the registry's own string (registry.py interns it), so the rows the reconcile book
    keeps for the app's lifetime add no copies. Interned strings go when nothing refers to them."""
    return sys.intern(value) if type(value) is str else value


def _stored_flag(value: Any) -> Any:
    """A boolean column's 0 / 1 as False / True; NULL and any other value as stored."""
    return bool(value) if isinstance(value, int) and value in (0, 1) else value


def schedule_params(row: ScheduleRow) -> tuple[Any, ...]:
    return (row.job_id, row.schedule_type, row.schedule_expr, row.timezone, _flag_param(row.enabled),
            row.misfire_grace_s, _flag_param(row.coalesce), row.max_instances, row.jitter_s, row.version, row.shards)


def _flag_param(value: Any) -> Any:
    """A bool as 0 / 1; a value read as stored (a refused 'yes') is written back unchanged."""
    return int(value) if isinstance(value, bool) else value
