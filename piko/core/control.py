"""The control plane tick: bring the kernel and the config book in line with the store.

The first tick reads everything; later ticks read only the job ids the change log names
(rows changed by anyone, with plain SQL or not, version bumped or not), so a tick costs what
changed, not the table size. Without a change log (or when it overflows) a tick falls back
to a full read; a full read also runs every `full_every` ticks as a safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any

from piko.core.configs import ConfigBook
from piko.core.reconcile import ScheduleBook, TickResult, apply_plan, diff
from piko.core.registry import Registry
from piko.core.types import ConfigRow, ScheduleRow
from piko.protocols import Clock, Store, Trigger

log = logging.getLogger("piko.reconcile")
CHANGE_LOG_KEEP = timedelta(days=1)  # far longer than any poll interval, so no instance misses a change


class ControlPlane:
    def __init__(self, *, store: Store, registry: Registry, clock: Clock, book: ScheduleBook,
                 configs: ConfigBook, default_tz: str, schedule: Callable[[str, Trigger, ScheduleRow], None],
                 unschedule: Callable[[str], Any], metrics: Any = None, full_every: int = 360) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self.book = book
        self.configs = configs
        self._tz = default_tz
        self._schedule = schedule
        self._unschedule = unschedule
        self._metrics = metrics
        self._full_every = full_every
        self._cursor: int | None = None
        self._ticks = 0

    async def tick(self) -> TickResult:
        self._ticks += 1
        if self._cursor is None or self._ticks % self._full_every == 0:
            return await self._full()
        changes = await self._store.changes_since(self._cursor)
        if changes is None:
            log.info("reconcile: change log overflowed; reading every row")
            return await self._full()
        cursor, schedule_ids, config_ids = changes
        result = TickResult()
        if schedule_ids:
            rows = await self._store.load_schedules(schedule_ids)
            result = self._apply(diff(self.book.last_seen(), rows, self._is_registered, scope=schedule_ids))
        if config_ids:
            await self._load_configs(config_ids)
        self._cursor = cursor
        self._count("ok")
        return result

    async def _full(self) -> TickResult:
        if self._cursor is not None:  # a periodic safety read: also drop change-log rows nobody needs
            await self._store.prune_changes(self._clock.now() - CHANGE_LOG_KEEP)
        cursor = await self._store.change_cursor()  # read first: changes made during the load are seen next tick
        rows = await self._store.load_schedules()
        result = self._apply(diff(self.book.last_seen(), rows, self._is_registered))
        await self._load_configs(None)
        self._cursor = cursor
        self._count("ok")
        return result

    def _is_registered(self, job_id: str) -> bool:
        return job_id in self._registry

    def _apply(self, plan: Any) -> TickResult:
        result = apply_plan(plan, self.book, self._registry, self._tz, self._schedule, self._unschedule,
                            self._clock.now())
        if result.invalid:
            self._count("invalid_schedule", len(result.invalid))
        for job_id in result.stopped:
            log.info("job %s: schedule stopped (row deleted or disabled)", job_id)
        return result

    async def _load_configs(self, job_ids: Collection[str] | None) -> None:
        current = await self._store.load_configs(job_ids)
        present = {row.job_id for row in current}
        scope = set(job_ids) if job_ids is not None else set(self.configs.jobs())
        self.configs.forget(j for j in scope if j not in present)  # row deleted: back to defaults
        history = await self._store.load_config_history(job_ids)
        with_history = {row.job_id for row in history}
        fallback = [row for row in current if row.job_id not in with_history]  # no triggers: current only
        now = self._clock.now()
        # Newest first, per job: once a valid version is in force, older ones can never serve again,
        # so they are not validated (nor their old rejections reported again after each restart).
        in_force: set[str] = set()
        for row in sorted([*history, *fallback], key=lambda r: r.seq, reverse=True):
            if row.job_id in in_force:
                continue
            if self._offer(row) and (row.effective_from is None or row.effective_from <= now):
                in_force.add(row.job_id)

    def _offer(self, row: ConfigRow) -> bool:
        """Offer one version; True if it is valid and kept."""
        spec = self._registry.get(row.job_id)
        if spec is None:
            return False
        problem = self.configs.offer(row, spec.schema)
        if problem:
            log.error("job_config rejected; the job keeps its last valid config: %s", problem)
            self._count("invalid_config")
        return problem is None and self.configs.has_version(row.job_id, row.seq)

    def _count(self, result: str, n: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.config_reconcile_total.labels(result=result).inc(n)
