"""Every seam of piko as a typing.Protocol, in one place: a reader sees all of them at once.

The store is split by role, as the parts use it: the reconcile loop needs ScheduleStore, the
runner RunStore (and QueueStore in cluster execution), the heartbeat InstanceStore, the
elector LeaseStore, the SQL sink RowSink.
`Store` is all of them plus a lifecycle; store/memory.py, store/sqlite/ and store/mysql/
implement it and one contract suite (tests/store) runs against each. Executor is a CPU
offload backend, Writer the batching writer, Sink where written intents land, OpsState and
OpsConsole what the ops routes and the status page ask the app. Datetimes in
and out of a store are aware UTC. Imports only pure modules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from piko.core.placement import JobLimits
from piko.core.types import (
    ActionResult,
    ConfigRow,
    Fence,
    InstanceInfo,
    JobStatus,
    LeaseGrant,
    QueueClaim,
    RunClaim,
    RunFinish,
    RunRecord,
    RunStatus,
    ScheduleRow,
)

if TYPE_CHECKING:  # only for annotations: this module does no I/O and stays pure
    import asyncio

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    async def wait(self, event: asyncio.Event | None, timeout: float) -> bool: ...


@runtime_checkable
class Trigger(Protocol):
    """An immutable schedule: the first fire strictly after `after`, or None if none is left."""

    def next_fire_time(self, after: datetime) -> datetime | None: ...


# -- the store, by role ------------------------------------------------------------------------
class ScheduleStore(Protocol):
    """The control plane: schedule rows, config versions, the change log, watermarks."""

    async def load_schedules(self, job_ids: Collection[str] | None = None) -> list[ScheduleRow]: ...
    async def insert_schedule_if_absent(self, row: ScheduleRow) -> bool: ...
    async def insert_schedules_if_absent(self, rows: Sequence[ScheduleRow]) -> int: ...  # one transaction
    async def upsert_schedule(self, row: ScheduleRow) -> None: ...
    async def set_schedule_enabled(self, job_id: str, is_enabled: bool) -> bool: ...
    async def set_schedules_enabled(self, job_ids: Sequence[str], is_enabled: bool) -> int: ...  # how many found
    async def load_configs(self, job_ids: Collection[str] | None = None) -> list[ConfigRow]: ...
    async def load_config_history(
        self, job_ids: Collection[str] | None = None, per_job: int = 10
    ) -> list[ConfigRow]: ...  # every stored version (newest `per_job` per job), seq = history id
    async def upsert_config(self, row: ConfigRow) -> None: ...
    # the change log: rows written by triggers on scheduled_job / job_config
    async def change_cursor(self) -> int | None: ...  # newest change seq; None = no change log here
    async def changes_since(
        self, seq: int, limit: int = 10000
    ) -> tuple[int, set[str], set[str]] | None: ...  # (cursor, schedule job ids, config job ids); None = too many
    async def prune_changes(self, before: datetime) -> int: ...
    # stateful jobs: the watermark moves by compare-and-set, fenced by a leader term when given
    async def get_watermark(self, job_id: str) -> datetime | None: ...
    async def cas_watermark(
        self, job_id: str, expected: datetime | None, new: datetime, fence: Fence | None = None
    ) -> bool: ...


class RunStore(Protocol):
    """Run records: claims under the (job_id, scheduled_time) lock, ends, and reading them back.
    Status moves follow core/lifecycle.py."""

    async def claim_run(self, claim: RunClaim) -> int | None: ...
    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[int | None]: ...  # one transaction, one fence
    # Ends are written only over a row that may end (FINISHABLE) and still carries the claim's token;
    # the answer names the runs that had moved on (already ended, or handed to another attempt).
    async def finish_runs(self, finishes: Sequence[RunFinish]) -> list[int]: ...
    async def finish_run(  # an administrative end: no token to match
        self, run_id: int, status: RunStatus, finished_at: datetime, error_type: str | None = None,
        error_message: str | None = None, error_traceback: str | None = None,
    ) -> None: ...
    async def recent_runs(
        self, job_id: str | None = None, limit: int = 20, *, status: RunStatus | None = None,
        kind: str | None = None,
    ) -> list[RunRecord]: ...  # newest first; filters given are ANDed; ConfigError for unknown ones
    async def get_run(self, run_id: int) -> RunRecord | None: ...
    async def latest_status(self, job_id: str, scheduled_at: datetime) -> RunStatus | None: ...
    async def latest_run(self, job_id: str, scheduled_at: datetime) -> RunRecord | None: ...  # newest of the slot
    async def pieces(self, prefix: str, scheduled_at: datetime) -> list[RunRecord]: ...  # newest per slot
    async def children(self, parent_run_ids: Collection[int]) -> list[RunRecord]: ...  # pieces these runs made
    async def last_fire_times(self, job_ids: Collection[str]) -> dict[str, datetime]: ...  # newest locked fire
    async def last_runs(self, job_ids: Collection[str]) -> dict[str, RunRecord]: ...  # newest scheduled time's newest run


class InstanceStore(Protocol):
    """Heartbeats and the orphan sweep. A store with a server clock (MySQL) records and ages
    heartbeats by that clock, so `now` is the caller's view and `now - stale_before` the silence
    that counts."""

    async def heartbeat(self, instance: InstanceInfo, now: datetime) -> None: ...
    async def list_instances(self) -> list[InstanceInfo]: ...
    async def abandon_orphans(
        self, stale_before: datetime, now: datetime, dead_instances: Sequence[str] = ()
    ) -> int: ...  # RUNNING rows of instances silent since stale_before (or known dead) -> ABANDONED


class LeaseStore(Protocol):
    """The leader lease, decided by the database's clock only."""

    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None: ...
    async def lease_release(self, name: str, holder: str, token: int) -> None: ...
    async def lease_holder(self, name: str) -> tuple[str, int] | None: ...  # (holder, token) of a valid term


class QueueStore(Protocol):
    """Cluster execution: the leader places runs (to start here, queue for any worker, or skip
    past max_instances), workers claim queued runs, cancels are requested on the row.
    Decisions are core/placement.py's; statuses move as core/lifecycle.py allows."""

    async def place_runs(self, claims: Sequence[RunClaim]) -> list[tuple[int | None, RunStatus]]: ...
    async def claim_queued(  # at most capacity, and about 1/share of what is queued (a burst is shared)
        self, instance_id: str, queues: Sequence[str], capacity: int, claim_token: int,
        limits_for: Callable[[str], JobLimits | None], now: datetime, share: int = 1,
    ) -> QueueClaim: ...
    async def request_cancel(
        self, *, by: str, now: datetime, run_id: int | None = None, job_id: str | None = None
    ) -> tuple[int, int]: ...  # (queued runs cancelled now, running runs asked to stop)
    async def cancel_requests(self, instance_id: str) -> list[tuple[int, str]]: ...  # (run_id, who asked)
    async def queue_depths(self) -> dict[str, int]: ...  # queued runs per queue


class RowSink(Protocol):
    """Tables the built-in SQL sink writes results to."""

    async def execute_ddl(self, statement: str) -> None: ...  # CREATE TABLE IF NOT EXISTS
    async def upsert_rows(
        self, table: str, key_columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> int: ...


class Store(ScheduleStore, RunStore, QueueStore, InstanceStore, LeaseStore, RowSink, Protocol):
    """Every role, and a lifecycle."""

    dialect: str
    description: str  # where the data lives, secrets masked (for logs and the CLI)

    async def open(self) -> None: ...  # connect and migrate to the newest schema
    async def close(self) -> None: ...
    async def ping(self) -> None: ...  # raise StoreUnavailable when not reachable or writes fail
    async def schema_version(self) -> int: ...


# -- the other seams ------------------------------------------------------------------------------
class Executor(Protocol):
    """Where CPU-bound calls run (compute/manager.py: piko's own worker processes;
    compute/dask_backend.py: an existing Dask cluster)."""

    async def submit(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T: ...
    async def map_reduce(
        self, map_fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int | None = None,
        chunksize: int | None = None, reduce_fn: Callable[[Any, Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any: ...
    async def close(self, timeout_s: float = 10.0) -> None: ...


class Writer(Protocol):
    """Batches job output to sinks (persistence/writer.py)."""

    def register_sink(self, sink: Sink) -> None: ...
    async def enqueue(self, intent: Any) -> None: ...
    async def flush(self, run_id: int | str | None = None, timeout: float | None = None) -> None: ...
    async def start(self) -> None: ...
    async def stop(self, deadline_s: float = 10.0) -> int: ...


class Sink(Protocol):
    """Where WriteIntents end up (persistence/sink_base.py has the base classes)."""

    name: str

    async def write_batch(self, batch: list[Any]) -> None: ...


class OpsState(Protocol):
    """What the ops HTTP routes ask the app: liveness, readiness, role."""

    def is_started(self) -> bool: ...
    def role(self) -> str: ...  # "leader" | "standby" (single instances are "leader")
    def loop_lag_s(self) -> float: ...
    async def readiness_checks(self) -> dict[str, str | None]: ...  # check name -> None if ok, else reason


class OpsConsole(OpsState, Protocol):
    """What the status page and its /api/ ask the app, besides OpsState: what runs where, and
    the operator's actions. Each call reads or writes the store once or a few times; the routes
    bound it with a short timeout. `by` says who asked (client address), recorded where a run
    records it (a cancel's cancelled_by) and logged."""

    def now(self) -> datetime: ...
    def is_cluster(self) -> bool: ...  # cluster execution: queue depths mean something
    def admin_token(self) -> str | None: ...  # None: actions are refused, the page is read-only
    async def jobs(self) -> list[JobStatus]: ...
    async def runs(self, job_id: str | None, status: RunStatus | None, limit: int) -> list[RunRecord]: ...
    async def failures(self, limit: int) -> list[RunRecord]: ...  # FAILED, TIMEOUT, ABANDONED; newest first
    async def instances(self) -> list[InstanceInfo]: ...
    async def queue_depths(self) -> dict[str, int]: ...
    async def run_now(self, job_id: str, by: str) -> ActionResult: ...
    async def set_paused(self, job_id: str, is_paused: bool, by: str) -> ActionResult: ...
    async def cancel_run(self, run_id: int, by: str) -> ActionResult: ...
    async def rerun(self, run_id: int, by: str) -> ActionResult: ...  # a failed run's time, as its next attempt
