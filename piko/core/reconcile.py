"""Store rows -> desired schedules -> kernel. The diff is pure; the loop only carries it out.

Each tick reads `scheduled_job` (and `job_config`) and compares every row, field by field,
with what was applied last, so edits by plain SQL are seen even when `version` is not
bumped. A row whose schedule or columns are invalid (check_row_options) is reported once and
the job keeps its last good schedule and options; a row for a job no code registers is
reported once. Neither stops the loop.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import ChainMap
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from piko.core.registry import JobSpec, Registry
from piko.core.types import JobOptions, ScheduleRow
from piko.errors import ConfigError, TriggerSpecError
from piko.protocols import Trigger

log = logging.getLogger("piko.reconcile")


@dataclass(frozen=True)
class Plan:
    """What to change in the kernel: rows to (re)start, job ids to stop."""

    upsert: tuple[ScheduleRow, ...] = ()
    stop: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # rows for job ids no code registers

    @property
    def is_empty(self) -> bool:
        return not (self.upsert or self.stop)


def _comparable(row: ScheduleRow) -> ScheduleRow:
    return replace(row, version=0)  # a changed row is a changed row, whatever its version says


def diff(applied: Mapping[str, ScheduleRow], rows: Iterable[ScheduleRow], registered: Callable[[str], bool],
         scope: Collection[str] | None = None) -> Plan:
    """Compare the rows last applied with the rows now stored (pure).

    `scope` None means `rows` is the whole table; otherwise `rows` holds the current rows of
    just the job ids in `scope` (those the change log named), and only they can stop.
    """
    by_id = {row.job_id: row for row in rows}
    upsert: list[ScheduleRow] = []
    unknown: list[str] = []
    for job_id, row in by_id.items():
        if not registered(job_id):
            unknown.append(job_id)
            continue
        before = applied.get(job_id)
        if not _is_switched_off(row) and (before is None or _comparable(before) != _comparable(row)):
            upsert.append(row)
    candidates = applied if scope is None else [job_id for job_id in scope if job_id in applied]
    stop = [job_id for job_id in candidates
            if job_id not in by_id or _is_switched_off(by_id[job_id]) or not registered(job_id)]
    return Plan(tuple(upsert), tuple(sorted(stop)), tuple(sorted(unknown)))


def _is_switched_off(row: ScheduleRow) -> bool:
    """enabled 0 / False stops a job. Any other value but 1 / True (2, -1, 'yes', NULL) is not
    a switch: the row goes on to check_row_options, is refused, and the job keeps its last
    good schedule, as with any other invalid row (guessing 'off' would stop it silently)."""
    return isinstance(row.enabled, int) and not row.enabled


MAX_GRACE_S = 100 * 365 * 86400.0  # beyond this a grace time is "no limit": write NULL or a negative value
MAX_JITTER_S = 86400.0


def check_row_options(row: ScheduleRow) -> None:
    """The row's columns besides the schedule itself, as operators typed them: ConfigError
    naming the column.

    enabled is 1 or 0 and coalesce 1, 0 or NULL (2, -1 or 'yes' say nothing certain); a
    timezone is a zone name or NULL for the default ('' is neither). A negative
    misfire_grace_s means no limit (as NULL grace in APScheduler); huge or NaN values, a
    max_instances under 1 and a jitter past a day are refused like a bad schedule."""
    def fail(column: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"invalid {column}: {TriggerSpecError.preview(value)} is not allowed; use {allowed}")

    if not _is_flag(row.enabled):
        fail("enabled", row.enabled, "1 (on) or 0 (off)")
    if row.coalesce is not None and not _is_flag(row.coalesce):
        fail("coalesce", row.coalesce, "1, 0, or NULL for the default")
    if row.timezone is not None and not (isinstance(row.timezone, str) and row.timezone.strip()):
        fail("timezone", row.timezone, "an IANA name such as 'Europe/Berlin', or NULL for the default")
    grace, jitter, most = row.misfire_grace_s, row.jitter_s, row.max_instances
    if grace is not None and not (isinstance(grace, (int, float)) and math.isfinite(grace) and grace <= MAX_GRACE_S):
        fail("misfire_grace_s", grace, f"seconds up to {MAX_GRACE_S:.0f}, or a negative value or NULL for no limit")
    if jitter is not None and not (isinstance(jitter, (int, float)) and 0 <= jitter <= MAX_JITTER_S):
        fail("jitter_s", jitter, f"seconds from 0 to {MAX_JITTER_S:.0f}, or NULL")
    if most is not None and not (isinstance(most, int) and not isinstance(most, bool) and most >= 1):
        fail("max_instances", most, "a whole number of 1 or more, or NULL")
    shards = row.shards
    if shards is not None and not (isinstance(shards, int) and not isinstance(shards, bool) and 0 <= shards <= 1000):
        fail("shards", shards, "a whole number from 1 to 1000, 0 for no shards, or NULL for the code's value")


def _is_flag(value: Any) -> bool:
    return isinstance(value, int) and value in (0, 1)  # bools included


def options_for(spec: JobSpec | None, row: ScheduleRow | None, defaults: JobOptions) -> JobOptions:
    """Row value, else the code's value, else the settings default."""
    def pick(row_value: Any, code_value: Any, default: Any) -> Any:
        if row_value is not None:
            return row_value
        return code_value if code_value is not None else default

    grace = pick(row.misfire_grace_s if row else None, spec.misfire_grace_time if spec else None,
                 defaults.misfire_grace_s)
    return JobOptions(
        misfire_grace_s=None if grace is not None and grace < 0 else grace,
        coalesce=bool(pick(row.coalesce if row else None, spec.coalesce if spec else None, defaults.coalesce)),
        max_instances=int(pick(row.max_instances if row else None, spec.max_instances if spec else None,
                               defaults.max_instances)),
        timeout_s=pick(None, spec.timeout if spec else None, defaults.timeout_s) or None,
        retries=int(pick(None, spec.retries if spec else None, defaults.retries)),
        retry_backoff_s=float(pick(None, spec.retry_backoff if spec else None, defaults.retry_backoff_s)),
        retry_backoff_max_s=defaults.retry_backoff_max_s,
        is_one_shot=(row.schedule_type if row else spec.schedule_type if spec else None) == "date",
        queue=spec.queue if spec else "default",
        shards=int(pick(row.shards if row else None, spec.shards if spec else None, 0)),
        broadcast=bool(spec.broadcast) if spec else False,
    )


@dataclass
class ScheduleBook:
    """What the kernel was last told, per job, and which problems were already reported.

    `applied` holds the rows in force (the job's options and trigger are derived from them, not
    kept twice); a row refused since is kept in `refused`, so the next tick sees it unchanged
    and does not report it again, while the job runs on with its last good row's schedule and
    options."""

    applied: dict[str, ScheduleRow] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # job_id -> current problem text
    reported: set[tuple[str, str]] = field(default_factory=set)
    refused: dict[str, ScheduleRow] = field(default_factory=dict)

    def last_seen(self) -> Mapping[str, ScheduleRow]:
        """Every job's row as last read (refused or in force): what the next diff compares with."""
        return ChainMap(self.refused, self.applied)

    def trigger_of(self, job_id: str, default_tz: str) -> Trigger | None:
        """The trigger in force: built again from the applied row (a cached value, see build_trigger)."""
        row = self.applied.get(job_id)
        return build_trigger(row, default_tz) if row is not None else None

    def report_once(self, job_id: str, problem: str) -> bool:
        self.problems[job_id] = problem
        key = (job_id, problem)
        if key in self.reported:
            return False
        self.reported.add(key)
        return True


BuildTrigger = Callable[[ScheduleRow, str], Trigger]


def build_trigger(row: ScheduleRow, default_tz: str) -> Trigger:
    """The row's trigger. Triggers are immutable values, so rows with the same schedule share one."""
    anchor = row.created_at if row.schedule_type == "interval" else None  # only intervals depend on it
    return _cached_trigger(row.schedule_type, row.schedule_expr, row.timezone or default_tz, anchor)


@functools.lru_cache(maxsize=4096)
def _cached_trigger(kind: str, expr: str, tz: str, anchor: datetime | None) -> Trigger:
    from piko.triggers import trigger_from_stored
    from piko.triggers.interval import EPOCH, IntervalTrigger

    trigger = trigger_from_stored(kind, expr, tz, default_start=anchor)
    if isinstance(trigger, IntervalTrigger) and anchor is not None and trigger.start_at == anchor > EPOCH:
        # created_at only sets the phase: the start moves back by whole intervals to the Unix epoch,
        # so the fire times after any instant are the same, windows before the row existed are real
        # data windows (a backfill finds them), and a row whose created_at reads hours "ahead" (written
        # from a +08:00 MySQL session) fires now
        steps = -(-(anchor - EPOCH) // trigger.interval)
        trigger = replace(trigger, start_at=anchor - steps * trigger.interval)
    return trigger


@dataclass
class TickResult:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def apply_plan(plan: Plan, book: ScheduleBook, registry: Registry, default_tz: str,
               schedule: Callable[[str, Trigger, ScheduleRow], None], unschedule: Callable[[str], None],
               now: datetime, make: BuildTrigger = build_trigger) -> TickResult:
    """Carry a plan out on the kernel, keeping the book; invalid rows keep their last good schedule."""
    result = TickResult()
    for job_id in plan.unknown:
        if book.report_once(job_id, "no code registers this job id"):
            log.warning("scheduled_job row %r: no registered job has this id; ignored", job_id)
        result.unknown.append(job_id)
    for job_id in plan.stop:
        unschedule(job_id)
        book.applied.pop(job_id, None)
        book.refused.pop(job_id, None)
        book.problems.pop(job_id, None)
        result.stopped.append(job_id)
    for row in plan.upsert:
        try:
            check_row_options(row)
            trigger = make(row, default_tz)
        except ConfigError as exc:  # TriggerSpecError is one
            if book.report_once(row.job_id, str(exc)):
                keeps = "keeps its last good schedule" if row.job_id in book.applied else "is not scheduled"
                log.error("scheduled_job row %r (version %s) is invalid and %s: %s", row.job_id, row.version,
                          keeps, exc)
            book.refused[row.job_id] = row  # do not retry the same broken row every tick
            result.invalid.append(row.job_id)
            continue
        if book.applied.get(row.job_id) != row:  # the same row builds the same trigger
            schedule(row.job_id, trigger, row)
        book.applied[row.job_id] = row
        book.refused.pop(row.job_id, None)
        book.problems.pop(row.job_id, None)
        result.started.append(row.job_id)
    return result
