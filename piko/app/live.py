"""The app's live state: what the ops routes, the kernel and the runner ask while piko runs.

Role, readiness, the options and configs in force, data windows, after-run bookkeeping,
and the reconcile loop that keeps the kernel in line with the stored rows. Built from
explicit parts: the registry, clock and metrics at once; the store and settings when the
app opens them (`attach`); the kernel, runner and leader once they exist (`bind`).
Imports no other module of the app package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from piko.core.batching import Batcher
from piko.core.configs import ConfigBook
from piko.core.control import ControlPlane
from piko.core.pieces import is_piece, spec_name
from piko.core.reconcile import ScheduleBook, options_for
from piko.core.registry import JobSpec, Registry
from piko.core.stateful import Watermarks
from piko.core.types import DataInterval, Fence, JobOptions, RunOutcome, RunStatus, ScheduleRow
from piko.errors import PikoError
from piko.observability.piko_metrics import PikoMetrics
from piko.protocols import Clock, Store, Trigger
from piko.settings import Settings

log = logging.getLogger("piko.app")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def job_defaults(s: Settings) -> JobOptions:
    return JobOptions(misfire_grace_s=s.misfire_grace_s, coalesce=s.coalesce, max_instances=s.max_instances,
                      timeout_s=s.job_timeout_s or None, retries=s.retries, retry_backoff_s=s.retry_backoff_s,
                      retry_backoff_max_s=s.retry_backoff_max_s)


class LiveState:
    def __init__(self, registry: Registry, clock: Clock, metrics: PikoMetrics) -> None:
        self.registry = registry
        self.clock = clock
        self.metrics = metrics
        self.store: Store = None  # type: ignore[assignment]  # attach()
        self.settings: Settings = None  # type: ignore[assignment]  # attach()
        self.kernel: Any = None  # bind(): the kernel, the runner and the leader, once they exist
        self.runner: Any = None
        self.leader: Any = None
        self.started = False
        self.is_worker_only = False  # `piko worker`: never leads
        self.book = ScheduleBook()
        self.configs = ConfigBook()
        self._lag_monitor: Any = None
        self.http_port: int | None = None  # the bound port, once serving
        self._options: dict[str, tuple[Any, Any, JobOptions]] = {}
        self._defaults: JobOptions | None = None
        self.control: ControlPlane = None  # type: ignore[assignment]  # built by start_control()
        self._reconciling: asyncio.Lock | None = None  # one tick at a time: the loop's, or an action's
        self._watermarks: Watermarks | None = None
        self.resume_after: dict[str, datetime] = {}  # job_id -> its newest handled fire, until first scheduled
        self._disables: Batcher[str, None] = Batcher(self._disable_schedules)

    async def _disable_schedules(self, job_ids: Sequence[str]) -> list[None]:
        """One-shots that are over: their rows disabled together."""
        await self.store.set_schedules_enabled(job_ids, False)
        return [None] * len(job_ids)

    def attach(self, store: Store, settings: Settings) -> None:
        """The store and the settings in force, once the app opens them."""
        self.store, self.settings = store, settings
        self._defaults, self._options, self._watermarks = None, {}, None

    def bind(self, *, kernel: Any = None, runner: Any = None, leader: Any = None) -> None:
        self.kernel, self.runner, self.leader = kernel, runner, leader

    def set_lag_monitor(self, monitor: Any, http_port: int | None) -> None:
        self._lag_monitor, self.http_port = monitor, http_port

    @property
    def watermarks(self) -> Watermarks:
        if self._watermarks is None:
            s = self.settings
            self._watermarks = Watermarks(self.store, self.clock, self.trigger_for, self.fence,
                                          max_windows=s.backfill_max_windows, recheck_s=s.heartbeat_interval_s,
                                          is_leader=self.is_leader)
        return self._watermarks

    # -- OpsState ----------------------------------------------------------------------
    def is_started(self) -> bool:
        return self.started

    def is_leader(self) -> bool:
        if self.is_worker_only:
            return False
        leader = self.leader
        return leader is None or bool(leader.is_leader())

    def role(self) -> str:
        if self.is_worker_only:
            return "worker"
        return "leader" if self.is_leader() else "standby"

    def loop_lag_s(self) -> float:
        return float(self._lag_monitor.lag_s) if self._lag_monitor is not None else 0.0

    async def readiness_checks(self) -> dict[str, str | None]:
        checks: dict[str, str | None] = {"started": None if self.is_started() else "not started yet"}
        try:
            if self.store is None:
                raise PikoError("the store is not open yet")
            await self.store.ping()
            checks["store"] = None
        except (PikoError, OSError) as exc:
            checks["store"] = str(exc)
        return checks

    def fence(self) -> Fence | None:
        leader = self.leader
        return leader.fence() if leader is not None else None

    # -- options, configs, windows -----------------------------------------------------
    def options_for(self, job_id: str) -> JobOptions:
        """The options in force, cached per (row, spec) object: asked several times per run. A piece
        (core/pieces.py) runs with its job's or task's options, once: its parent places it again."""
        if "[" in job_id and is_piece(job_id):
            return replace(self.options_for(spec_name(job_id)), retries=0, shards=0, broadcast=False,
                           is_one_shot=False, misfire_grace_s=None, max_instances=1)
        spec, row = self.registry.get(job_id), self.book.applied.get(job_id)
        cached = self._options.get(job_id)
        if cached is not None and cached[0] is row and cached[1] is spec:
            return cached[2]
        if self._defaults is None:
            self._defaults = job_defaults(self.settings)
        opts = options_for(spec, row, self._defaults)
        self._options[job_id] = (row, spec, opts)
        return opts

    def trigger_for(self, job_id: str) -> Trigger | None:
        """The applied schedule's trigger, else the code's default one (manual runs before any start)."""
        if job_id in self.book.applied:
            return self.book.trigger_of(job_id, self.settings.timezone)
        spec = self.registry.get(job_id)
        row = spec.default_schedule_row() if spec is not None else None
        if row is None:
            return None
        from piko.core.reconcile import build_trigger

        return build_trigger(row, self.settings.timezone)

    async def window_for(self, spec: JobSpec, at: datetime, kind: str = "manual") -> DataInterval:
        return await self.watermarks.window_for(spec, at, kind)

    async def on_finish(self, spec: JobSpec, outcome: RunOutcome, window: DataInterval | None, kind: str) -> None:
        if spec.stateful:
            if kind == "schedule":
                await self.watermarks.after_run(spec, window, outcome.status)
            elif outcome.status is RunStatus.SUCCESS and window is not None:
                await self.watermarks.advance(spec, window)
        is_done = outcome.status in (RunStatus.SUCCESS, RunStatus.MISSED)  # a one-shot's one fire is over
        if is_done and kind == "schedule" and self.options_for(spec.job_id).is_one_shot:
            await self._disables.submit(spec.job_id)  # a burst of one-shots: one UPDATE for many
            if self.kernel is not None:
                self.kernel.unschedule(spec.job_id)
            self.book.applied.pop(spec.job_id, None)

    def run_hooks(self) -> list[Any]:
        hooks = []
        for module, name, key in (("piko.persistence.writer", "current_run_id", "run_id"),
                                  ("piko.compute.calls", "current_job", "job_id")):
            try:
                var = getattr(__import__(module, fromlist=[name]), name)
            except (ImportError, AttributeError):
                continue
            hooks.append(lambda ctx, var=var, key=key: var.set(ctx[key]))
        return hooks

    # -- reconcile ----------------------------------------------------------------------
    async def load_resume_points(self) -> None:
        """The newest handled fire of each stateless job (stateful ones resume from their watermark)."""
        self.resume_after = await self.store.last_fire_times([s.job_id for s in self.registry if not s.stateful])

    def start_control(self) -> None:
        """Build the control plane and the watermark keeper once the kernel and runner exist."""
        kernel, runner = self.kernel, self.runner
        assert kernel is not None and runner is not None

        def schedule(job_id: str, trigger: Trigger, row: ScheduleRow) -> None:
            # A one-shot whose time has passed still fires once: the runner runs it within its grace
            # time or records it MISSED (the run lock makes a restart's second try a no-op).
            # a restart resumes after the newest fire this job handled, so fires that fell due
            # while no instance ran are run (within their grace) or recorded MISSED, not lost
            after = _EPOCH if row.schedule_type == "date" else self.resume_after.pop(job_id, None)
            jitter = getattr(trigger, "jitter", None)  # a field dict's own `jitter`, unless the row sets jitter_s
            jitter_s = row.jitter_s if row.jitter_s is not None else (jitter.total_seconds() if jitter else 0.0)
            kernel.schedule(job_id, trigger, jitter_s=jitter_s, after=after)

        self.control = ControlPlane(store=self.store, registry=self.registry, clock=self.clock, book=self.book,
                                    configs=self.configs, default_tz=self.settings.timezone, schedule=schedule,
                                    unschedule=kernel.unschedule, metrics=self.metrics)
        self._reconciling = asyncio.Lock()  # made here, on the loop the app runs on
        self.watermarks.bind_runner(runner.run_job, runner.holds, runner.record_final)

    async def load_stored_state(self, runner: Any) -> None:
        """For manual runs without a started app: read schedules and configs once, schedule nothing."""
        self.control = ControlPlane(store=self.store, registry=self.registry, clock=self.clock, book=self.book,
                                    configs=self.configs, default_tz=self.settings.timezone,
                                    schedule=lambda *_: None, unschedule=lambda _: None, metrics=self.metrics)
        self.watermarks.bind_runner(runner.run_job, runner.holds, runner.record_final)
        await self.control.tick()

    async def reconcile_once(self) -> None:
        """One tick; a status-page action (pause, resume) calls it too, so it applies at once here."""
        async with self._reconciling or asyncio.Lock():
            result = await self.control.tick()
        for job_id in result.started:
            spec = self.registry.get(job_id)
            if spec is not None and spec.stateful:
                self.watermarks.start_catch_up(spec)

    @contextlib.asynccontextmanager
    async def reconcile_loop(self) -> AsyncIterator[None]:
        stop = asyncio.Event()

        async def loop() -> None:
            interval = self.settings.poll_interval_s
            while not await self.clock.wait(stop, interval * random.uniform(0.9, 1.1)):
                try:
                    await self.reconcile_once()
                except (PikoError, OSError) as exc:
                    self.metrics.config_reconcile_total.labels(result="error").inc()
                    log.warning("reconcile failed, will retry: %s", exc)

        task = asyncio.create_task(loop(), name="piko-reconcile")
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait({task}, timeout=5.0)
            task.cancel()
            await self.watermarks.close()
