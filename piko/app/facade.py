"""PikoApp: what users call, and the one place that wires concrete parts together.

Start-up enters each part on one AsyncExitStack, in order: store, ops HTTP, instance
heartbeat, writer, CPU offload (a Dask cluster is connected here; the local pool starts on
first use), leader lease, runner, kernel, reconcile loop. Shutdown leaves
them in reverse under one budget (`shutdown_timeout_s`): stop firing, drain runs, step
down, drain the writer, close the store. A failure while starting unwinds what started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from typing import Any

from piko.app import components
from piko.app.live import LiveState
from piko.app.process import refuse_in_worker_bootstrap, run_blocking, tune_gc
from piko.clock import SystemClock
from piko.core.configs import validate_config
from piko.core.kernel import Kernel
from piko.core.registry import JobSpec, Registry, default_registry
from piko.core.resource import ResourcePool
from piko.core.runs import Runner
from piko.core.types import DataInterval
from piko.errors import ConfigError
from piko.observability.logging import configure_logging
from piko.observability.metrics import MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics
from piko.protocols import Clock, Store
from piko.settings import Settings, load_settings

log = logging.getLogger("piko.app")


class PikoApp:
    def __init__(self, name: str = "piko", *, settings: Settings | None = None, store: Store | None = None,
                 clock: Clock | None = None, registry: Registry | None = None) -> None:
        self.name = name
        self.registry = registry if registry is not None else Registry()
        self.clock: Clock = clock or SystemClock()
        self.metrics = MetricsRegistry()
        self.resources = ResourcePool()
        self._settings = settings
        self._settings_path: str | None = None
        self._overrides: dict[str, Any] = {}
        self._store = store
        self._pm: PikoMetrics | None = None
        self._writer: Any = None
        self._cpu: Any = None
        self._api_app: Any = None
        self.live = LiveState(self.registry, self.clock, self.piko_metrics)
        self.kernel: Kernel | None = None
        self.runner: Runner | None = None
        self.leader: Any = None
        self.worker: Any = None  # cluster execution: this instance's queue worker
        self.is_worker_only = False  # `piko worker`: never leads, only runs queued runs
        self._keeper: Any = None
        self._stack: AsyncExitStack | None = None
        self._manual_lock: asyncio.Lock | None = None
        self._manual_loop: asyncio.AbstractEventLoop | None = None  # where the manual runner's store is open
        self._manual_keeper: asyncio.Task[None] | None = None  # closes that store when its loop ends
        self._writer_lock: asyncio.Lock | None = None
        self._writer_started_late = False
        self._is_started = False
        self._deadline = 0.0

    # -- registration and configuration ------------------------------------------------
    def job(self, job_id: str, **options: Any) -> Any:
        """Register an async job: `@app.job("id", cron="*/5 * * * *")`."""
        return self.registry.job(job_id, **options)

    def workflow(self, name: str, **options: Any) -> Any:
        """Declare a workflow: `wf = app.workflow("daily_etl", cron="0 2 * * *")`, then its steps with
        `@wf.step("load", after=["transform"])`. Its schedule lives in scheduled_job like a job's."""
        return self.registry.workflow(name, **options)

    def task(self, task_id: str, **options: Any) -> Any:
        """Register a map task: `@app.task("per_month") async def per_month(ctx, item)`, run once
        per item by `await ctx.map("per_month", items)` (by any worker in cluster execution)."""
        return self.registry.task(task_id, **options)

    def configure(self, *, settings_path: str | None = None, **overrides: Any) -> None:
        """Re-read settings with a file and/or explicit values (used by the CLI)."""
        if self._is_started:
            raise RuntimeError("configure() must be called before the app starts")
        self._settings_path = settings_path or self._settings_path
        self._overrides.update({k: v for k, v in overrides.items() if v is not None})
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(path=self._settings_path, overrides=self._overrides)
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = components.build_store(self.settings)
        return self._store

    @property
    def piko_metrics(self) -> PikoMetrics:
        if self._pm is None:
            self._pm = PikoMetrics(self.metrics)
        return self._pm

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = components.build_writer(self.settings, self.piko_metrics, self.clock)
            self._writer.autostart = self._start_writer_late
        return self._writer

    async def _start_writer_late(self) -> None:
        """A writer first used after start, or by a manual run: start it now; stop() stops it too."""
        if self._writer_lock is None:
            self._writer_lock = asyncio.Lock()
        async with self._writer_lock:
            is_live = self._is_started or self._manual_keeper is not None
            if is_live and not self._writer.is_running:
                await self._writer.start()
                self._writer_started_late = True

    @property
    def cpu_manager(self) -> Any:
        if self._cpu is None:
            self._cpu = components.build_cpu(self.settings)
        return self._cpu

    @property
    def api_app(self) -> Any:
        """A plain ASGI callable serving /healthz, /readyz, /leader, /metrics, the status page and /api/."""
        if self._api_app is None:
            from piko.http.asgi import OpsAsgiApp

            async def startup() -> None:  # the ASGI server serves the routes: no second server on http_port
                await self.start(serve_http=False)

            self._api_app = OpsAsgiApp(components.build_routes(self.live, self.metrics), on_startup=startup,
                                       on_shutdown=self.stop)
        return self._api_app

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> PikoApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def adopt_default_jobs(self) -> None:
        """Add the jobs registered with the module-level `@job` (the older API) to this app.

        A job id registered both ways by different functions is an error, as within one app.
        """
        if self.registry is default_registry:
            return
        for spec in default_registry:
            self.registry.add(spec)

    async def start(self, *, serve_http: bool = True) -> None:
        """Start every part; `serve_http=False` when an ASGI server serves the ops routes instead."""
        if self._is_started:
            return
        refuse_in_worker_bootstrap()
        self.adopt_default_jobs()
        self.registry.check()
        s = self.settings
        if not logging.getLogger("piko").handlers and not logging.getLogger().handlers:
            configure_logging(s.log_level, s.log_json)  # embedded apps keep their own logging setup
        stack = AsyncExitStack()
        try:
            await self._start_parts(stack, s, serve_http=serve_http)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._is_started = self.live.started = True
        if s.tune_gc:
            tune_gc()
        log.info("piko app %r started with %d job(s); data in %s", self.name, len(self.registry),
                 self.store.description)

    async def _start_parts(self, stack: AsyncExitStack, s: Settings, *, serve_http: bool) -> None:
        from piko.core.instances import InstanceKeeper

        store = self.store
        await store.open()
        stack.push_async_callback(store.close)
        self.live.attach(store, s)
        self.live.is_worker_only = self.is_worker_only
        if s.http_enabled and serve_http:
            await stack.enter_async_context(components.build_http(self.live, self.metrics, s))
        instance = components.describe_instance(self.clock, s, self.registry, is_worker_only=self.is_worker_only)
        keeper = await stack.enter_async_context(InstanceKeeper(
            store, self.clock, instance, heartbeat_s=s.heartbeat_interval_s, orphan_after_s=s.orphan_after_s,
            describe=self._describe, after_sweep=self._after_sweep))
        self._keeper = keeper
        defaults = [row for row in (spec.default_schedule_row() for spec in self.registry) if row is not None]
        await store.insert_schedules_if_absent(defaults)  # the stored row wins where there is one
        if self._writer is not None:  # sinks were registered: start it (it replays earlier spills first)
            writer = self._writer
            await writer.start()
            stack.push_async_callback(lambda: writer.stop(self._remaining()))
        if s.cpu_backend != "local":  # a remote cluster is reached now: a wrong address stops start-up, not a job
            cpu = self.cpu_manager
            await cpu.start()
            stack.push_async_callback(lambda: cpu.close(self._remaining()))
        self.leader = None if self.is_worker_only else components.build_leader(
            store, s, instance.instance_id, self.clock, self.piko_metrics, self._leadership_changed)
        self.live.bind(leader=self.leader)
        if self.leader is not None:
            await stack.enter_async_context(self.leader)
        share = components.build_share(s, instance, keeper, lambda: self.runner.load() if self.runner else 0)
        self.runner = self._build_runner(instance.instance_id, shape=share.shape if share is not None else None)
        stack.push_async_callback(lambda: self.runner.stop(self._remaining()))  # type: ignore[union-attr]
        self.worker = components.build_worker(store, self.clock, self.runner, s, instance, self.live,
                                              self.registry, self.piko_metrics, keeper)
        self.kernel = Kernel(self.clock, self.runner.on_fire, is_leader=self.live.is_leader,
                             standby_window_s=s.leader_lease_s + s.leader_renew_interval_s + s.misfire_grace_s,
                             on_clock_jump=lambda step: self.piko_metrics.clock_jump_total.inc(),
                             on_trigger_error=lambda job_id, exc: self.piko_metrics.trigger_errors_total.labels(
                                 job_id=job_id).inc(),
                             wait_for_room=self.runner.wait_for_room,
                             on_standby_fire=self._hint if self.worker is not None else None)
        self.live.bind(kernel=self.kernel, runner=self.runner, leader=self.leader)
        await self.live.load_resume_points()
        self.live.start_control()
        await self.live.reconcile_once()
        self.live.resume_after.clear()  # only rows running at start resume; one enabled later starts now
        await stack.enter_async_context(self.kernel)
        await stack.enter_async_context(self.live.reconcile_loop())
        await stack.enter_async_context(components.build_cancel_watch(store, self.clock, self.runner,
                                                                      instance.instance_id))
        if self.worker is not None:
            self.runner.on_run_end = self.worker.nudge
            await stack.enter_async_context(self.worker)
        if self.leader is not None and self.leader.is_leader():
            self.kernel.leadership_changed(True)

    def _build_runner(self, instance_id: str, shape: Any = None) -> Runner:
        return Runner(registry=self.registry, store=self.store, clock=self.clock, instance_id=instance_id,
                      resources=self.resources, options_for=self.live.options_for, config_for=self.config_for,
                      window_for=self.live.window_for, on_finish=self.live.on_finish, fence=self.live.fence,
                      metrics=self.piko_metrics, run_hooks=self.live.run_hooks(), requeue=self._requeue, shape=shape,
                      targets=self._broadcast_targets, is_live=self._is_live)

    def _broadcast_targets(self, queue: str) -> list[str]:
        return self._keeper.serving(queue) if self._keeper is not None else []

    def _is_live(self, instance_id: str) -> bool:
        return self._keeper is None or self._keeper.is_live(instance_id)

    def _describe(self, info: Any) -> Any:
        """The heartbeat's row: how many runs this instance has going now."""
        return replace(info, running=self.runner.load() if self.runner is not None else 0)

    async def _after_sweep(self) -> None:
        """Cluster execution, on the leader: re-queue dead instances' runs, report the queue depth."""
        if self.worker is None or not self.live.is_leader() or self.is_worker_only:
            return
        from piko.core.worker import requeue_abandoned

        await requeue_abandoned(self.store, self.clock, self.live.options_for, lambda j: j in self.registry,
                                self._keeper.info.instance_id if self._keeper else "")
        depths = await self.store.queue_depths()
        for queue in {*depths, *(self.worker.queues if self.worker else ())}:
            if not queue.startswith("@"):  # an instance's own queue (broadcast copies) is not a series
                self.piko_metrics.queue_depth.labels(queue=queue).set(depths.get(queue, 0))

    def _hint(self, job_id: str) -> None:
        """A fire is due (this instance is not the leader): the leader places it now; poll soon."""
        spec = self.registry.get(job_id)
        if self.worker is not None and spec is not None and spec.queue in self.worker.queues:
            self.worker.nudge()

    def _leadership_changed(self, is_leader: bool) -> None:
        if self.kernel is not None:
            self.kernel.leadership_changed(is_leader)
        log.info("this instance is now %s", "the leader" if is_leader else "a standby")
        if not is_leader and self.runner is not None and self.worker is None:  # leader mode: term-bound runs
            cancelled = self.runner.cancel_running()  # runs must not go on unfenced after our term ended
            if cancelled:
                log.warning("leadership lost: cancelled %d running job(s)", cancelled)

    def _requeue(self, job_id: str, at: datetime) -> None:
        if self.kernel is not None:
            self.kernel.requeue(job_id, at)

    def _remaining(self) -> float:
        return max(0.0, self._deadline - self.clock.monotonic())

    async def stop(self) -> None:
        """Stop firing, drain runs within shutdown_timeout_s, then close every part."""
        self._deadline = self.clock.monotonic() + self.settings.shutdown_timeout_s
        stack, self._stack = self._stack, None
        self._is_started = self.live.started = False
        keeper = self._manual_keeper
        if keeper is not None and stack is None:  # manual runs only: the keeper closes what they opened
            keeper.cancel()
            await asyncio.wait({keeper})
            return
        if stack is not None:
            await stack.aclose()
        await self._close_late_parts()
        if stack is not None:
            log.info("piko app %r stopped", self.name)

    async def _close_late_parts(self) -> None:
        """What was opened on first use, not on the start-up stack: the writer, the CPU pool."""
        if self._writer_started_late and self._writer is not None:  # not on the stack: started after it
            self._writer_started_late = False
            await self._writer.stop(self._remaining())
        if self._cpu is not None:  # created on first use, often inside a run: closed after runs drained
            await self._cpu.close(self._remaining())
        await self.resources.aclose(self._remaining())

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or forever)."""
        await self.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop()

    def run(self, *, worker_only: bool = False) -> None:
        """Blocking entry point: run until SIGINT/SIGTERM (a second signal exits at once).
        `worker_only` (cluster execution): never lead, only run queued runs (`piko worker`)."""
        refuse_in_worker_bootstrap()
        self.is_worker_only = worker_only
        run_blocking(self.serve, self.settings)

    # -- runs ----------------------------------------------------------------------------
    def config_for(self, spec: JobSpec, now: datetime) -> Any:
        current = self.live.configs.active(spec.job_id, now)
        if current is not None:
            return self.live.configs.value_for_run(spec.job_id, now)
        try:
            return validate_config(spec.schema, {}, job_id=spec.job_id)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (no job_config row applies yet, so the schema got an empty config)") from None

    async def manual_runner(self) -> Runner:
        """The runner, opening just the store when the app is not started (older job_runner API).

        Opened per event loop: each `asyncio.run(...)` of a script gets its own, and it is
        closed when that loop ends (asyncio.run cancels the keeper task below), so pooled
        MySQL connections never outlive their loop.
        """
        loop = asyncio.get_running_loop()
        if self.runner is not None and (self._is_started or self._manual_loop is loop):
            return self.runner
        if self._manual_lock is None or self._manual_loop is not loop:
            self._manual_lock, self._manual_loop = asyncio.Lock(), loop
        async with self._manual_lock:
            if self.runner is None:
                self.adopt_default_jobs()
                await self.store.open()
                self.live.attach(self.store, self.settings)
                from piko.core.instances import new_instance

                runner = self._build_runner(new_instance(self.clock).instance_id)
                self.live.bind(runner=runner)
                await self.live.load_stored_state(runner)  # stored options, schedules and configs apply
                self.runner = runner
                self._manual_keeper = loop.create_task(self._close_manual_at_loop_end(), name="piko-manual-store")
        return self.runner

    async def _close_manual_at_loop_end(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:  # cancelled: the loop is ending (or stop() was called)
            self._deadline = self.clock.monotonic() + self.settings.shutdown_timeout_s
            try:
                if self.runner is not None:  # run ends the store did not take yet: a last try, then logged
                    await self.runner.flush_records(self._remaining())
                await self._close_late_parts()  # a writer a manual run started spills or writes what it holds
            finally:
                self._manual_keeper = None
                self.runner = None
                self.live.bind()
                await self.store.close()

    async def rerun_workflow(self, run_id: int, from_steps: Sequence[str] = (), *, is_queued: bool = False) -> Any:
        """Re-run a workflow run's failed steps (or `from_steps`) and everything downstream of them,
        keeping the results of the steps upstream; see Runner.rerun_workflow."""
        runner = await self.manual_runner()
        return await runner.rerun_workflow(run_id, from_steps, is_queued=is_queued)

    async def run_job(self, job_id: str, scheduled_time: datetime | None = None, config: Any = None, *,
                      data_interval: DataInterval | None = None) -> Any:
        runner = await self.manual_runner()
        return await runner.run_job(job_id, scheduled_time, config, data_interval=data_interval)
