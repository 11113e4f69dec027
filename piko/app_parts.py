"""The app's live state and the builders of its optional parts.

LiveState is what the ops routes, the kernel and the runner ask the app: role, readiness,
options and configs in force, data windows, and the reconcile loop that keeps the kernel in
line with the stored rows. Builders import optional parts lazily, so an app that never
uses the writer or the CPU pool never imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from piko.core.configs import ConfigBook
from piko.core.control import ControlPlane
from piko.core.reconcile import ScheduleBook, options_for
from piko.core.registry import JobSpec
from piko.core.stateful import Watermarks
from piko.core.types import DataInterval, Fence, JobOptions, RunOutcome, RunStatus, ScheduleRow
from piko.errors import PikoError
from piko.ports import Trigger
from piko.settings import Settings

if TYPE_CHECKING:
    from piko.app import PikoApp

log = logging.getLogger("piko.app")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SIGNAL_DEBOUNCE_S = 0.25  # a second signal sooner than this is the first one delivered twice


def job_defaults(s: Settings) -> JobOptions:
    return JobOptions(misfire_grace_s=s.misfire_grace_s, coalesce=s.coalesce, max_instances=s.max_instances,
                      timeout_s=s.job_timeout_s or None, retries=s.retries, retry_backoff_s=s.retry_backoff_s,
                      retry_backoff_max_s=s.retry_backoff_max_s)


class LiveState:
    def __init__(self, app: PikoApp) -> None:
        self._app = app
        self.book = ScheduleBook()
        self.configs = ConfigBook()
        self._lag_monitor: Any = None
        self.http_port: int | None = None  # the bound port, once serving
        self._options: dict[str, tuple[Any, Any, JobOptions]] = {}
        self._defaults: JobOptions | None = None
        self.control: ControlPlane = None  # type: ignore[assignment]  # built by start_control()
        self._watermarks: Watermarks | None = None
        self.resume_after: dict[str, datetime] = {}  # job_id -> its newest handled fire, until first scheduled

    @property
    def watermarks(self) -> Watermarks:
        if self._watermarks is None:
            app = self._app
            self._watermarks = Watermarks(app.store, app.clock, self.trigger_for, self.fence,
                                          max_windows=app.settings.backfill_max_windows,
                                          recheck_s=app.settings.heartbeat_interval_s)
        return self._watermarks

    # -- OpsState ----------------------------------------------------------------------
    def is_started(self) -> bool:
        return self._app._is_started

    def is_leader(self) -> bool:
        leader = self._app.leader
        return leader is None or bool(leader.is_leader())

    def role(self) -> str:
        return "leader" if self.is_leader() else "standby"

    def loop_lag_s(self) -> float:
        return float(self._lag_monitor.lag_s) if self._lag_monitor is not None else 0.0

    async def readiness_checks(self) -> dict[str, str | None]:
        checks: dict[str, str | None] = {"started": None if self.is_started() else "not started yet"}
        try:
            await self._app.store.ping()
            checks["store"] = None
        except (PikoError, OSError) as exc:
            checks["store"] = str(exc)
        return checks

    def fence(self) -> Fence | None:
        leader = self._app.leader
        return leader.fence() if leader is not None else None

    # -- options, configs, windows -----------------------------------------------------
    def options_for(self, job_id: str) -> JobOptions:
        """The options in force, cached per (row, spec) object: asked several times per run."""
        spec, row = self._app.registry.get(job_id), self.book.applied.get(job_id)
        cached = self._options.get(job_id)
        if cached is not None and cached[0] is row and cached[1] is spec:
            return cached[2]
        if self._defaults is None:
            self._defaults = job_defaults(self._app.settings)
        opts = options_for(spec, row, self._defaults)
        self._options[job_id] = (row, spec, opts)
        return opts

    def trigger_for(self, job_id: str) -> Trigger | None:
        """The applied schedule's trigger, else the code's default one (manual runs before any start)."""
        found = self.book.triggers.get(job_id)
        if found is not None or job_id in self.book.applied:
            return found
        spec = self._app.registry.get(job_id)
        row = spec.default_schedule_row() if spec is not None else None
        if row is None:
            return None
        from piko.core.reconcile import build_trigger

        return build_trigger(row, self._app.settings.timezone)

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
            await self._app.store.set_schedule_enabled(spec.job_id, False)
            if self._app.kernel is not None:
                self._app.kernel.unschedule(spec.job_id)
            self.book.applied.pop(spec.job_id, None)

    def run_hooks(self) -> list[Any]:
        hooks = []
        for module, name, key in (("piko.persistence.writer", "current_run_id", "run_id"),
                                  ("piko.compute.manager", "current_job", "job_id")):
            try:
                var = getattr(__import__(module, fromlist=[name]), name)
            except (ImportError, AttributeError):
                continue
            hooks.append(lambda ctx, var=var, key=key: var.set(ctx[key]))
        return hooks

    # -- reconcile ----------------------------------------------------------------------
    async def load_resume_points(self) -> None:
        """The newest handled fire of each stateless job (stateful ones resume from their watermark)."""
        app = self._app
        self.resume_after = await app.store.last_fire_times([s.job_id for s in app.registry if not s.stateful])

    def start_control(self) -> None:
        """Build the control plane and the watermark keeper once the kernel and runner exist."""
        app = self._app
        kernel, runner = app.kernel, app.runner
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

        self.control = ControlPlane(store=app.store, registry=app.registry, clock=app.clock, book=self.book,
                                    configs=self.configs, default_tz=app.settings.timezone, schedule=schedule,
                                    unschedule=kernel.unschedule, metrics=app.piko_metrics)
        self.watermarks.bind_runner(runner.run_job, runner.holds, runner.record_final)

    async def load_stored_state(self, runner: Any) -> None:
        """For manual runs without a started app: read schedules and configs once, schedule nothing."""
        app = self._app
        self.control = ControlPlane(store=app.store, registry=app.registry, clock=app.clock, book=self.book,
                                    configs=self.configs, default_tz=app.settings.timezone,
                                    schedule=lambda *_: None, unschedule=lambda _: None, metrics=app.piko_metrics)
        self.watermarks.bind_runner(runner.run_job, runner.holds, runner.record_final)
        await self.control.tick()

    async def reconcile_once(self) -> None:
        result = await self.control.tick()
        for job_id in result.started:
            spec = self._app.registry.get(job_id)
            if spec is not None and spec.stateful:
                self.watermarks.start_catch_up(spec)

    @contextlib.asynccontextmanager
    async def reconcile_loop(self) -> AsyncIterator[None]:
        stop = asyncio.Event()

        async def loop() -> None:
            interval = self._app.settings.poll_interval_s
            while not await self._app.clock.wait(stop, interval * random.uniform(0.9, 1.1)):
                try:
                    await self.reconcile_once()
                except (PikoError, OSError) as exc:
                    self._app.piko_metrics.config_reconcile_total.labels(result="error").inc()
                    log.warning("reconcile failed, will retry: %s", exc)

        task = asyncio.create_task(loop(), name="piko-reconcile")
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait({task}, timeout=5.0)
            task.cancel()
            await self.watermarks.close()


def build_http(app: PikoApp, s: Settings) -> Any:
    from piko.http.routes import OpsRoutes
    from piko.http.server import HttpServer
    from piko.observability.process import LoopLagMonitor

    stack = contextlib.AsyncExitStack()

    @contextlib.asynccontextmanager
    async def serve() -> AsyncIterator[None]:
        async with stack:
            monitor = await stack.enter_async_context(LoopLagMonitor())
            app.live._lag_monitor = monitor
            server = await stack.enter_async_context(
                HttpServer(OpsRoutes(app.live, app.metrics), s.http_host, s.http_port))
            app.live.http_port = server.port
            host = f"[{s.http_host}]" if ":" in s.http_host else s.http_host
            log.info("ops endpoints on http://%s:%s (/healthz /readyz /metrics)", host, server.port)
            yield

    return serve()


def build_leader(app: PikoApp, s: Settings, holder: str) -> Any:
    if not s.leader_enabled:
        return None
    from piko.core.instances import is_dead_local_instance
    from piko.leader import LeaderElector

    def changed(is_leader: bool) -> None:
        if app.kernel is not None:
            app.kernel.leadership_changed(is_leader)
        log.info("this instance is now %s", "the leader" if is_leader else "a standby")
        if not is_leader and app.runner is not None:
            cancelled = app.runner.cancel_running()  # runs must not go on unfenced after our term ended
            if cancelled:
                log.warning("leadership lost: cancelled %d running job(s)", cancelled)

    return LeaderElector(app.store, name=s.leader_name, holder=holder, lease_s=s.leader_lease_s,
                         renew_interval_s=s.leader_renew_interval_s, clock=app.clock, on_change=changed,
                         metrics=app.piko_metrics, is_holder_dead=is_dead_local_instance)


def build_writer(app: PikoApp) -> Any:
    from piko.persistence.writer import PersistenceWriter

    s = app.settings
    return PersistenceWriter(queue_max=s.persist_queue_max, batch_size=s.persist_batch_size,
                             batch_timeout_s=s.persist_batch_timeout_s, spill_dir=s.persist_spill_dir,
                             durability=s.persist_durability, retry_max=s.persist_retry_max,
                             write_timeout_s=s.persist_write_timeout_s, startup_replay_s=s.persist_startup_replay_s,
                             metrics=app.piko_metrics, clock=app.clock)


def run_blocking(app: PikoApp) -> None:
    """asyncio.run(app.serve()) with signal handling; uvloop when installed."""
    from piko.observability.logging import configure_logging

    s = app.settings
    configure_logging(s.log_level, s.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        first_at: list[float] = []

        def on_signal(signum: int) -> None:
            now = time.monotonic()
            if first_at and now - first_at[0] < SIGNAL_DEBOUNCE_S:
                return  # the same stop, delivered twice (`timeout` signals the child and its group)
            if first_at:
                log.warning("second signal: exiting at once")
                os._exit(128 + signum)
            first_at.append(now)
            log.info("signal %s: stopping (running jobs get up to %.0fs; signal again to exit at once)",
                     signal.Signals(signum).name, s.shutdown_timeout_s)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        await app.serve(stop)

    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None  # run outside the except block, so job tracebacks do not chain this ImportError
    if uvloop is None:
        asyncio.run(main())
    else:
        uvloop.run(main())


