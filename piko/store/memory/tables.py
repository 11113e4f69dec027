"""The memory store's tables, and the run-row steps both of its modules use.

Plain dataclasses and dicts; `claim` is the (job_id, scheduled_time) lock and the run row in
one step, as the SQL stores do in one transaction (everything here runs on the loop, so a
step is atomic). Row shapes and meaning follow store/sql.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from piko.core.types import ConfigRow, InstanceInfo, RunClaim, RunRecord, RunStatus, ScheduleRow
from piko.store import sql


@dataclass
class Lease:
    holder: str = ""
    token: int = 0
    expires_at: datetime | None = None


@dataclass
class Schedule:
    row: ScheduleRow
    last_data_time: datetime | None = None


@dataclass
class Tables:
    schedules: dict[str, Schedule] = field(default_factory=dict)
    configs: dict[str, ConfigRow] = field(default_factory=dict)
    history: list[ConfigRow] = field(default_factory=list)
    changes: list[tuple[int, str, str, datetime]] = field(default_factory=list)  # seq, table, job_id, at
    runs: dict[int, RunRecord] = field(default_factory=dict)
    fences: dict[int, int | None] = field(default_factory=dict)  # run_id -> fence token it was claimed under
    locks: dict[tuple[str, datetime], str] = field(default_factory=dict)  # (job_id, time) -> instance
    instances: dict[str, InstanceInfo] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    sink_rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    def claim(self, claim: RunClaim, token: int | None) -> int | None:
        """The lock (or a re-run's check) and the run row; None when the time is taken."""
        if not self.lock_or_check(claim):
            return None
        return self.insert(claim, token)

    def lock_or_check(self, claim: RunClaim) -> bool:
        slot = (claim.job_id, claim.scheduled_at)
        if claim.take_lock:
            if slot in self.locks:
                return False
            self.locks[slot] = claim.instance_id
            return True
        return not claim.rerun_if or self.may_rerun(claim)

    def insert(self, claim: RunClaim, token: int | None) -> int:
        run_id = len(self.runs) + 1
        status, at = claim.status, claim.started_at
        is_queued = status is RunStatus.PENDING
        if claim.rerun_if:  # a new attempt: the one before it, if abandoned, is no longer anyone's to end
            newest = self.newest(claim.job_id, claim.scheduled_at)
            if newest is not None and newest.status is RunStatus.ABANDONED:
                self.runs[newest.run_id] = replace(newest, claim_token=None)
        self.runs[run_id] = RunRecord(
            run_id, claim.job_id, claim.scheduled_at, status, claim.attempt, claim.kind,
            "" if is_queued else claim.instance_id, None if is_queued else at, at if status.is_final else None,
            0.0 if status.is_final else None, claim.error_type, claim.error_message, claim.data_start,
            claim.data_end, queue=claim.queue, claim_token=claim.claim_token, enqueued_at=at if is_queued else None,
            parent_run_id=claim.parent_run_id, payload=claim.payload)
        self.fences[run_id] = token
        return run_id

    def may_rerun(self, claim: RunClaim) -> bool:
        if (claim.job_id, claim.scheduled_at) not in self.locks:
            return False
        newest = self.newest(claim.job_id, claim.scheduled_at)
        return sql.may_rerun(claim, None if newest is None else (newest.status.value, newest.attempt))

    def newest(self, job_id: str, at: datetime) -> RunRecord | None:
        found = [r for r in self.runs.values() if r.job_id == job_id and r.scheduled_at == at]
        return found[-1] if found else None
