"""The memory store: every Store role in plain dicts (tables.py), the queue role from queue.py.

Same contract as the SQL stores (tests/store runs one suite over all three): the same run
lock, status guards (core/lifecycle.py), re-run checks, change log, fences and lease terms.
Its "database clock" is the Clock it is given (a FakeClock in tests), so leases, heartbeats
and fences follow fake time. Nothing survives the process: `memory://` is never the place
for real schedules. Calls never block and never fail, unless a test makes them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from piko.clock import SystemClock
from piko.core.lifecycle import ABANDONABLE, FINISHABLE
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
from piko.errors import LeaseLost, StoreError
from piko.protocols import Clock
from piko.store import sql
from piko.store.memory.queue import MemoryQueue
from piko.store.memory.tables import Lease, Schedule, Tables
from piko.store.schema import latest_version

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MemoryStore(MemoryQueue):
    dialect = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.description = "memory (nothing is kept when the process ends)"
        self.t = Tables()
        self._seq = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def schema_version(self) -> int:
        return latest_version()

    # -- control plane --------------------------------------------------------------------------
    def _changed(self, table: str, job_id: str) -> None:
        self._seq += 1
        self.t.changes.append((self._seq, table, job_id, self.clock.now()))

    async def load_schedules(self, job_ids: Collection[str] | None = None) -> list[ScheduleRow]:
        return [s.row for job_id, s in self.t.schedules.items() if job_ids is None or job_id in job_ids]

    async def insert_schedule_if_absent(self, row: ScheduleRow) -> bool:
        if row.job_id in self.t.schedules:
            return False
        created = row.created_at or self.clock.now()
        self.t.schedules[row.job_id] = Schedule(replace(row, created_at=created))
        self._changed("scheduled_job", row.job_id)
        return True

    async def insert_schedules_if_absent(self, rows: Sequence[ScheduleRow]) -> int:
        return sum([await self.insert_schedule_if_absent(row) for row in rows])

    async def upsert_schedule(self, row: ScheduleRow) -> None:
        old = self.t.schedules.get(row.job_id)
        if old is None:
            await self.insert_schedule_if_absent(row)
            return
        old.row = replace(row, version=old.row.version + 1, created_at=old.row.created_at)
        self._changed("scheduled_job", row.job_id)

    async def set_schedule_enabled(self, job_id: str, is_enabled: bool) -> bool:
        found = self.t.schedules.get(job_id)
        if found is None:
            return False
        found.row = replace(found.row, enabled=is_enabled, version=found.row.version + 1)
        self._changed("scheduled_job", job_id)
        return True

    async def set_schedules_enabled(self, job_ids: Sequence[str], is_enabled: bool) -> int:
        return sum([await self.set_schedule_enabled(job_id, is_enabled) for job_id in job_ids])

    async def load_configs(self, job_ids: Collection[str] | None = None) -> list[ConfigRow]:
        return [c for job_id, c in self.t.configs.items() if job_ids is None or job_id in job_ids]

    async def load_config_history(self, job_ids: Collection[str] | None = None, per_job: int = 10) -> list[ConfigRow]:
        kept: list[ConfigRow] = []
        for job_id in {c.job_id for c in self.t.history if job_ids is None or c.job_id in job_ids}:
            kept += [c for c in self.t.history if c.job_id == job_id][-per_job:]
        return sorted(kept, key=lambda c: c.seq)

    async def upsert_config(self, row: ConfigRow) -> None:
        old = self.t.configs.get(row.job_id)
        stored = row if old is None else replace(row, version=old.version + 1)
        self.t.configs[row.job_id] = stored
        self.t.history.append(replace(stored, seq=len(self.t.history) + 1))
        self._changed("job_config", row.job_id)

    async def change_cursor(self) -> int | None:
        return self._seq

    async def changes_since(self, seq: int, limit: int = 10000) -> tuple[int, set[str], set[str]] | None:
        rows = [(s, table, job_id) for s, table, job_id, _ in self.t.changes if s > seq][:limit + 1]
        return sql.fold_changes(seq, rows, limit)

    async def prune_changes(self, before: datetime) -> int:
        kept = [c for c in self.t.changes if c[3] >= before]
        pruned, self.t.changes = len(self.t.changes) - len(kept), kept
        return pruned

    async def get_watermark(self, job_id: str) -> datetime | None:
        found = self.t.schedules.get(job_id)
        return found.last_data_time if found else None

    async def cas_watermark(self, job_id: str, expected: datetime | None, new: datetime,
                            fence: Fence | None = None) -> bool:
        self._check_fence(fence)
        found = self.t.schedules.get(job_id)
        if found is None or found.last_data_time != expected:
            return False
        found.last_data_time = new
        return True

    # -- run records --------------------------------------------------------------------------
    async def claim_run(self, claim: RunClaim) -> int | None:
        return (await self.claim_runs([claim]))[0]

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[int | None]:
        fences = {c.fence for c in claims}
        if len(fences) > 1:
            raise StoreError("claim_runs: every claim of one batch must carry the same fence")
        fence = next(iter(fences), None)
        self._check_fence(fence)
        return [self.t.claim(c, fence.token if fence else None) for c in claims]

    async def finish_runs(self, finishes: Sequence[RunFinish]) -> list[int]:
        refused = []
        for f in finishes:
            run = self.t.runs.get(f.run_id)
            if run is None or run.status not in FINISHABLE or run.claim_token != f.claim_token:
                refused.append(f.run_id)
                continue
            self._finish(f.run_id, f.status, f.finished_at, f.error_type, f.error_message, f.duration_s,
                         f.error_traceback, f.result)
        return refused

    async def finish_run(self, run_id: int, status: RunStatus, finished_at: datetime, error_type: str | None = None,
                         error_message: str | None = None, error_traceback: str | None = None) -> None:
        self._finish(run_id, status, finished_at, error_type, error_message, None, error_traceback)

    def _finish(self, run_id: int, status: RunStatus, at: datetime, error_type: str | None,
                error_message: str | None, duration_s: float | None, error_traceback: str | None,
                result: str | None = None) -> None:
        run = self.t.runs.get(run_id)
        if run is None or run.status not in FINISHABLE:
            return
        if duration_s is None and run.started_at is not None:
            duration_s = round((at - run.started_at).total_seconds(), 6)
        self.t.runs[run_id] = replace(run, status=status, finished_at=at, duration_s=duration_s,
                                      error_type=error_type, error_message=error_message,
                                      error_traceback=error_traceback, result=result)

    async def recent_runs(self, job_id: str | None = None, limit: int = 20, *, status: RunStatus | None = None,
                          kind: str | None = None) -> list[RunRecord]:
        wanted = sql.run_filters(job_id, status, kind)
        found = [r for r in reversed(self.t.runs.values())
                 if all({"job_id": r.job_id, "status": r.status.value, "kind": r.kind}[k] == v
                        for k, v in wanted.items())]
        return found[:limit]

    async def get_run(self, run_id: int) -> RunRecord | None:
        return self.t.runs.get(run_id)

    async def latest_status(self, job_id: str, scheduled_at: datetime) -> RunStatus | None:
        newest = self.t.newest(job_id, scheduled_at)
        return newest.status if newest else None

    async def latest_run(self, job_id: str, scheduled_at: datetime) -> RunRecord | None:
        return self.t.newest(job_id, scheduled_at)

    async def pieces(self, prefix: str, scheduled_at: datetime) -> list[RunRecord]:
        newest: dict[str, RunRecord] = {}
        for run in self.t.runs.values():  # in run_id order: the last one of a slot is its newest
            if run.scheduled_at == scheduled_at and run.job_id.startswith(prefix):
                newest[run.job_id] = run
        return list(newest.values())

    async def children(self, parent_run_ids: Collection[int]) -> list[RunRecord]:
        wanted = set(parent_run_ids)
        return [r for r in self.t.runs.values() if r.parent_run_id in wanted]

    async def last_fire_times(self, job_ids: Collection[str]) -> dict[str, datetime]:
        wanted, out = set(job_ids), dict[str, datetime]()
        for job_id, at in self.t.locks:
            if job_id in wanted and (job_id not in out or at > out[job_id]):
                out[job_id] = at
        return out

    async def last_runs(self, job_ids: Collection[str]) -> dict[str, RunRecord]:
        wanted, out = set(job_ids), dict[str, RunRecord]()
        for run in self.t.runs.values():  # in run_id order: a later run of the same time wins
            best = out.get(run.job_id)
            if run.job_id in wanted and (best is None or run.scheduled_at >= best.scheduled_at):
                out[run.job_id] = run
        return out

    # -- instances ----------------------------------------------------------------------------
    async def heartbeat(self, instance: InstanceInfo, now: datetime) -> None:
        self.t.instances[instance.instance_id] = replace(instance, heartbeat_at=now)

    async def list_instances(self) -> list[InstanceInfo]:
        return list(self.t.instances.values())

    async def abandon_orphans(self, stale_before: datetime, now: datetime, dead_instances: Sequence[str] = ()) -> int:
        for instance_id in dead_instances:
            self.t.instances.pop(instance_id, None)
        for instance_id, info in list(self.t.instances.items()):
            if info.heartbeat_at is not None and info.heartbeat_at < stale_before:
                del self.t.instances[instance_id]
        count = 0
        for run_id, run in self.t.runs.items():
            if run.status in ABANDONABLE and run.instance_id not in self.t.instances:
                self.t.runs[run_id] = replace(run, status=RunStatus.ABANDONED, finished_at=now,
                                              error_type="InstanceLost",
                                              error_message="the instance running it stopped (no heartbeat)")
                count += 1
        return count

    # -- leases (the given clock is the database clock) --------------------------------------
    def _check_fence(self, fence: Fence | None) -> None:
        if fence is None:
            return
        lease = self.t.leases.get(fence.lease_name)
        if (lease is None or (lease.holder, lease.token) != (fence.holder, fence.token)
                or lease.expires_at is None or lease.expires_at < self.clock.now()):
            raise LeaseLost(f"leader term {fence.token} of {fence.holder!r} is no longer current")

    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None:
        lease = self.t.leases.setdefault(name, Lease())
        now = self.clock.now()
        is_valid = lease.expires_at is not None and lease.expires_at >= now
        is_mine = lease.holder == holder and is_valid
        if not (lease.holder == holder or lease.holder == "" or not is_valid):
            return None
        if not is_mine:
            lease.token += 1
        lease.holder, lease.expires_at = holder, now + ttl
        return LeaseGrant(lease.token, not is_mine, lease.expires_at)

    async def lease_release(self, name: str, holder: str, token: int) -> None:
        lease = self.t.leases.get(name)
        if lease is not None and (lease.holder, lease.token) == (holder, token):
            now = self.clock.now()
            lease.holder = ""
            lease.expires_at = min(lease.expires_at or now, now)

    async def lease_holder(self, name: str) -> tuple[str, int] | None:
        lease = self.t.leases.get(name)
        if lease is None or not lease.holder or lease.expires_at is None or lease.expires_at < self.clock.now():
            return None
        return lease.holder, lease.token

    # -- the SQL sink's tables ----------------------------------------------------------------
    async def execute_ddl(self, statement: str) -> None:
        return None

    async def upsert_rows(self, table: str, key_columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
        for name in [table, *key_columns, *(rows[0] if rows else ())]:
            if not _IDENT.match(name):
                raise StoreError(f"upsert_rows: {name!r} is not a plain SQL identifier")
        kept = self.t.sink_rows.setdefault(table, {})
        for row in rows:
            key = tuple(row[c] for c in key_columns)
            kept[key] = {**kept.get(key, {}), **row}
        return len(rows)
