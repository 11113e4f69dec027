"""Every seam the kernel and the components use, as typing.Protocols, in one place.

A reader sees all the ports at once; one contract test suite runs against every
implementation (memory-free: real SQLite and real MySQL). Imports only pure modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from piko.core.types import (
    ConfigRow,
    Fence,
    InstanceInfo,
    LeaseGrant,
    RunClaim,
    RunFinish,
    RunRecord,
    RunStatus,
    ScheduleRow,
)


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    async def wait(self, event: asyncio.Event | None, timeout: float) -> bool: ...


@runtime_checkable
class Trigger(Protocol):
    """An immutable schedule: the first fire strictly after `after`, or None if none is left."""

    def next_fire_time(self, after: datetime) -> datetime | None: ...


class Store(Protocol):
    """Durable state: schedules, configs, run records, locks, watermarks, leases.

    All datetimes in and out are aware UTC. Implementations: store/sqlite.py, store/mysql.py.
    """

    dialect: str
    description: str  # where the data lives, secrets masked (for logs and the CLI)

    async def open(self) -> None: ...  # connect and migrate to the newest schema
    async def close(self) -> None: ...
    async def ping(self) -> None: ...  # raise StoreUnavailable when not reachable
    async def schema_version(self) -> int: ...

    # -- control plane -------------------------------------------------------------
    async def load_schedules(self, job_ids: Collection[str] | None = None) -> list[ScheduleRow]: ...
    async def insert_schedule_if_absent(self, row: ScheduleRow) -> bool: ...
    async def insert_schedules_if_absent(self, rows: Sequence[ScheduleRow]) -> int: ...  # one transaction
    async def upsert_schedule(self, row: ScheduleRow) -> None: ...
    async def set_schedule_enabled(self, job_id: str, is_enabled: bool) -> bool: ...
    async def load_configs(self, job_ids: Collection[str] | None = None) -> list[ConfigRow]: ...
    async def load_config_history(
        self, job_ids: Collection[str] | None = None, per_job: int = 10
    ) -> list[ConfigRow]: ...  # every stored version (newest `per_job` per job), seq = history id

    # -- change log (rows written by triggers on scheduled_job / job_config) ---------
    async def change_cursor(self) -> int | None: ...  # newest change seq; None = no change log here
    async def changes_since(
        self, seq: int, limit: int = 10000
    ) -> tuple[int, set[str], set[str]] | None: ...  # (cursor, schedule job ids, config job ids); None = too many
    async def prune_changes(self, before: datetime) -> int: ...
    async def upsert_config(self, row: ConfigRow) -> None: ...

    # -- run records ---------------------------------------------------------------
    async def claim_run(self, claim: RunClaim) -> int | None: ...
    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[int | None]: ...  # one transaction, one fence
    async def finish_runs(self, finishes: Sequence[RunFinish]) -> None: ...
    async def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        finished_at: datetime,
        error_type: str | None = None,
        error_message: str | None = None,
        error_traceback: str | None = None,
    ) -> None: ...
    async def recent_runs(
        self, job_id: str | None = None, limit: int = 20, *, status: RunStatus | None = None,
        kind: str | None = None,
    ) -> list[RunRecord]: ...  # newest first; filters given are ANDed in SQL; ConfigError for unknown ones
    async def get_run(self, run_id: int) -> RunRecord | None: ...
    async def latest_status(self, job_id: str, scheduled_at: datetime) -> RunStatus | None: ...
    async def latest_run(self, job_id: str, scheduled_at: datetime) -> RunRecord | None: ...  # newest of the slot
    async def last_fire_times(self, job_ids: Collection[str]) -> dict[str, datetime]: ...  # newest locked fire
    # Heartbeats: a store with a server clock (MySQL) records and ages heartbeats by that clock,
    # so `now` is the caller's view and `now - stale_before` is the silence that counts.
    async def heartbeat(self, instance: InstanceInfo, now: datetime) -> None: ...
    async def list_instances(self) -> list[InstanceInfo]: ...
    async def abandon_orphans(
        self, stale_before: datetime, now: datetime, dead_instances: Sequence[str] = ()
    ) -> int: ...  # RUNNING rows of instances silent since stale_before (or known dead) -> ABANDONED

    # -- stateful jobs -------------------------------------------------------------
    async def get_watermark(self, job_id: str) -> datetime | None: ...
    async def cas_watermark(
        self, job_id: str, expected: datetime | None, new: datetime, fence: Fence | None = None
    ) -> bool: ...

    # -- built-in SQL sink (persistence) --------------------------------------------
    async def execute_ddl(self, statement: str) -> None: ...  # CREATE TABLE IF NOT EXISTS for the SQL sink
    async def upsert_rows(
        self, table: str, key_columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> int: ...

    # -- leader lease (database clock only) ------------------------------------------
    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None: ...
    async def lease_release(self, name: str, holder: str, token: int) -> None: ...
    async def lease_holder(self, name: str) -> tuple[str, int] | None: ...  # (holder, token) of a valid term


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
