"""Plain values shared by the kernel, the runner and the stores (pure: no I/O, no clock).

BackfillPolicy and DataInterval keep the import path users already have
(`piko.core.types`). Records are frozen dataclasses whose datetimes are aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class BackfillPolicy(str, enum.Enum):
    """What a stateful job does with data windows it missed while piko was down."""

    SKIP = "skip"  # run only the latest window; older ones are reported, not run
    CATCH_UP = "catch_up"  # run every missed window in order


class RunStatus(str, enum.Enum):
    PENDING = "PENDING"  # queued for any worker (cluster execution), not claimed yet
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    ABANDONED = "ABANDONED"
    MISSED = "MISSED"
    SKIPPED = "SKIPPED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"  # a workflow step that cannot run: a step it needs did not succeed

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.PENDING)


@dataclass(frozen=True)
class DataInterval:
    """A half-open data window [start, end) handed to a stateful job."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"DataInterval end {self.end} is before start {self.start}")


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One row of `scheduled_job`: the desired schedule of a job, as operators wrote it.

    Read from a store, a column holding what its type never should (enabled 2 or 'yes', a
    timezone '', a misfire_grace_s 'soon') keeps that value; reconcile.check_row_options
    refuses the row, so nothing downstream guesses what it meant. Slotted: the reconcile book
    keeps one per schedule for as long as the app runs."""

    job_id: str
    schedule_type: str
    schedule_expr: str
    timezone: str | None = None
    enabled: bool = True
    misfire_grace_s: float | None = None
    coalesce: bool | None = None
    max_instances: int | None = None
    jitter_s: float | None = None
    version: int = 1
    created_at: datetime | None = None  # anchors interval schedules that give no start_date
    shards: int | None = None  # split each fire into this many shard runs (None: as the code says)


@dataclass(frozen=True)
class ConfigRow:
    """One version of a job's parameters from `job_config` (or its history)."""

    job_id: str
    config_json: str
    version: int = 1
    schema_version: int = 1
    effective_from: datetime | None = None
    seq: int = 0  # job_config_history id (0 for the current row): later stored = larger


@dataclass(frozen=True)
class Fence:
    """A leader term: writes carrying it are accepted only while the term is current."""

    lease_name: str
    holder: str
    token: int


RUN_KINDS = ("schedule", "manual", "backfill", "retry", "piece")  # why a run exists: job_run.kind


@dataclass(frozen=True)
class RunClaim:
    """A request to open a run record, optionally taking the (job_id, scheduled_at) lock."""

    job_id: str
    scheduled_at: datetime
    status: RunStatus
    started_at: datetime
    instance_id: str
    attempt: int = 1
    kind: str = "schedule"  # schedule | manual | backfill | retry
    take_lock: bool = True
    fence: Fence | None = None
    data_start: datetime | None = None
    data_end: datetime | None = None
    error_type: str | None = None  # for rows born final (MISSED / SKIPPED)
    error_message: str | None = None
    # A re-run (take_lock False): its row is inserted only while the slot's lock row exists and the
    # newest run of (job_id, scheduled_at) has one of these statuses and attempt == this attempt - 1,
    # checked in the insert's own write transaction; else the claim answers None. Empty: no check.
    rerun_if: frozenset[RunStatus] = frozenset()
    queue: str = "default"  # which workers may take it (cluster execution)
    # A PENDING claim with a limit is recorded SKIPPED instead when the job already has this many
    # runs pending or running in the whole cluster (counted in the claim's transaction).
    max_instances: int | None = None
    claim_token: int | None = None  # a RUNNING claim's token: its end is written only while it matches
    parent_run_id: int | None = None  # a piece (core/pieces.py): the run that made it
    payload: str | None = None  # a piece: what it gets, as JSON (a map item; [index, total] for a shard)


@dataclass(frozen=True)
class RunFinish:
    """The end of a run, as written by finish_runs."""

    run_id: int
    status: RunStatus
    finished_at: datetime
    error_type: str | None = None
    error_message: str | None = None
    duration_s: float | None = None  # measured on the monotonic clock; else finished_at - started_at
    error_traceback: str | None = None  # FAILED / TIMEOUT: the formatted traceback, tail kept (bounded)
    claim_token: int | None = None  # the claim's token; a row handed to another attempt has none
    result: str | None = None  # a piece's return value as JSON (size-capped)


@dataclass(frozen=True)
class RunRecord:
    """A row of `job_run` as read back."""

    run_id: int
    job_id: str
    scheduled_at: datetime
    status: RunStatus
    attempt: int
    kind: str
    instance_id: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error_type: str | None
    error_message: str | None
    data_start: datetime | None = None
    data_end: datetime | None = None
    error_traceback: str | None = None
    queue: str = "default"
    claim_token: int | None = None
    enqueued_at: datetime | None = None  # when a queued run was written (cluster execution)
    cancel_requested: bool = False
    cancelled_by: str | None = None
    parent_run_id: int | None = None
    payload: str | None = None
    result: str | None = None


@dataclass(frozen=True)
class QueueClaim:
    """What a worker's claim took from the queue: runs now RUNNING under its token, and runs it
    recorded MISSED (claimed later than their misfire grace)."""

    started: list[RunRecord]
    missed: list[RunRecord]


@dataclass(frozen=True)
class LeaseGrant:
    """The answer to a successful acquire-or-renew: our term's token and whether it is new."""

    token: int
    is_new_term: bool
    expires_at: datetime | None = None


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    role: str = ""  # "scheduler+worker" (piko run), "worker" (piko worker), "scheduler" (leader mode)
    queues: tuple[str, ...] = ()  # queues its worker takes runs from (cluster execution)
    capacity: int = 0  # runs it may execute at once
    running: int = 0  # runs it executes now (as of its last heartbeat)


@dataclass(frozen=True)
class JobOptions:
    """The options in force for one job: schedule row, else code, else settings."""

    misfire_grace_s: float | None = 60.0  # None = no limit
    coalesce: bool = True
    max_instances: int = 1
    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 300.0
    is_one_shot: bool = False  # a date schedule: disabled after its run succeeds
    queue: str = "default"  # cluster execution: the workers that may take its runs
    shards: int = 0  # > 0: each fire runs as this many shard pieces
    broadcast: bool = False  # each fire runs once on every live instance of its queue


@dataclass
class RunOutcome:
    """What a run ended as, returned by manual runs."""

    run_id: int | None
    job_id: str
    scheduled_at: datetime
    status: RunStatus
    error_type: str | None = None
    error_message: str | None = None
    result: object = None
    duration_s: float | None = None
    error_traceback: str | None = None  # FAILED / TIMEOUT: where it happened, innermost frames kept
    result_json: str | None = None  # a piece's result as stored (core/pieces.py)
    attempt: int = 1


@dataclass(frozen=True)
class JobStatus:
    """One job as the status page shows it: its schedule in force, next fire and last run."""

    job_id: str
    schedule_type: str | None  # None: no schedule (manual runs only)
    schedule_expr: str | None
    is_enabled: bool
    next_fire_at: datetime | None  # this instance's next fire of it; None when none is planned here
    last_run: RunRecord | None  # the run of its newest scheduled time
    timezone: str | None = None
    problem: str | None = None  # why its stored row is refused (it keeps its last good schedule)
    is_registered: bool = True  # False: a stored row that no code of this instance registers
    queue: str = "default"


class ActionOutcome(str, enum.Enum):
    """How an operator's action (run now, pause, resume, cancel, re-run) went."""

    DONE = "done"
    STARTED = "started"  # a run was started or queued; its end is recorded on its row
    NOT_FOUND = "not_found"  # no such job or run
    CONFLICT = "conflict"  # the job or run is not in a state the action applies to
    UNAVAILABLE = "unavailable"  # the app has not started (or is stopping)


@dataclass(frozen=True)
class ActionResult:
    outcome: ActionOutcome
    message: str  # says what was done, or what was wrong and what would be right
    run_id: int | None = None
