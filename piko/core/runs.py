"""One fire, start to finish: misfire and max_instances policy, lock, record, retries, finish.

Each fire first claims the (job_id, scheduled_time) lock and its RUNNING row in one store
call (claims made in one loop iteration share one call), so a time runs once however many
instances fire it. invoke.py then calls the handler; its outcome is always recorded. A run
that could not start is recorded too (MISSED, SKIPPED): nothing is dropped silently.
Imports no component and not the app.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from piko.core.configs import validate_config
from piko.core.invoke import CANCEL_GRACE_S, Invoker, RunHook
from piko.core.policy import FireDecision, busy_reason, decide_fires, grace_of, retry_delay
from piko.core.recorder import RunRecorder
from piko.core.registry import JobSpec, Registry
from piko.core.resource import ResourcePool
from piko.core.run_metrics import RunMetrics
from piko.core.types import DataInterval, Fence, JobOptions, RunClaim, RunOutcome, RunStatus
from piko.errors import ConfigError, StoreError, UnknownJobError, WindowWaits
from piko.observability.logging import run_logger
from piko.protocols import Clock, Store

log = logging.getLogger("piko.runner")
# The leader term a fire was dispatched in: every claim for that fire (its retries too) carries
# it, so a deposed leader cannot record a late retry unfenced. Manual runs read it at claim time.
_FIRE_FENCE: contextvars.ContextVar[object] = contextvars.ContextVar("piko_fire_fence")
_UNSET = object()
_RETRIED = (RunStatus.FAILED, RunStatus.TIMEOUT)
MAX_ON_STORE = 1024  # fires waiting on the store before the kernel pauses a burst


class Runner:
    def __init__(self, *, registry: Registry, store: Store, clock: Clock, instance_id: str,
                 resources: ResourcePool, options_for: Callable[[str], JobOptions],
                 config_for: Callable[[JobSpec, datetime], Any],
                 window_for: Callable[[JobSpec, datetime, str], Awaitable[DataInterval | None]] | None = None,
                 on_finish: Callable[[JobSpec, RunOutcome, DataInterval | None, str], Awaitable[None]] | None = None,
                 fence: Callable[[], Fence | None] = lambda: None, metrics: Any = None,
                 run_hooks: Sequence[RunHook] = (), rng: random.Random | None = None,
                 requeue: Callable[[str, datetime], None] | None = None) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self.instance_id = instance_id
        self._options_for = options_for
        self._config_for = config_for
        self._window_for = window_for
        self._on_finish = on_finish
        self._fence = fence
        self._m = RunMetrics(metrics)
        self._rec = RunRecorder(store, clock, self._m, requeue)
        self._rng = rng or random.Random()
        self._running: Counter[str] = Counter()  # fires of each job from claim to finish
        self._in_flight: Counter[tuple[str, datetime]] = Counter()  # claimed runs not yet recorded as ended
        self._fire_tasks: set[asyncio.Task[Any]] = set()
        self._on_store: set[asyncio.Task[Any]] = set()  # fire tasks waiting for a claim or a finish record
        self._claiming = 0  # fires claimed early (no task yet) whose claim has not answered
        self._room = asyncio.Event()
        self._room.set()
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._fenced_tasks: set[asyncio.Task[Any]] = set()  # runs started under a leader term
        self._active: set[asyncio.Task[Any]] = set()  # tasks inside _execute (fires and manual runs)
        self._invoker = Invoker(resources, list(run_hooks), self._job_tasks, self._fenced_tasks, fence)
        self._is_closing = False

    # -- entry points ------------------------------------------------------------------
    def on_fire(self, job_id: str, due: list[datetime], overflow: bool) -> None:
        """Kernel callback: handle the due fire times of one job in the background."""
        if self._is_closing:
            return
        spec = self._registry.get(job_id)
        if spec is not None and not overflow and not spec.stateful and self._claim_early(spec, due):
            return
        task = asyncio.create_task(self._handle_fire(job_id, due, overflow), name=f"piko-fire-{job_id}")
        self._fire_tasks.add(task)
        self._wait_on_store(task)
        task.add_done_callback(self._fire_done)

    def _claim_early(self, spec: JobSpec, due: list[datetime]) -> bool:
        """The common fire (one due time, in time, below max_instances) is claimed right here.

        Its claim joins this loop iteration's others in one store call, and its task starts only
        once the claim answered: no task, coroutine or timer per fire while the store works. Every
        other fire (a backlog, a misfire, a busy or stateful job) takes _handle_fire's path.
        """
        job_id = spec.job_id
        opts = self._options_for(job_id)
        now = self._clock.now()
        decisions = decide_fires(due, now, grace_of(opts.misfire_grace_s), opts.coalesce)
        if (len(decisions) != 1 or decisions[0].status is not RunStatus.RUNNING
                or self._running[job_id] >= opts.max_instances):
            return False
        at = decisions[0].scheduled_at
        self._m.lateness(job_id, now - at)
        fence = self._fence()
        claim = RunClaim(job_id, at, RunStatus.RUNNING, now, self.instance_id, fence=fence)
        self._running[job_id] += 1
        self._claiming += 1
        self._update_room()
        self._rec.submit_claim(claim).add_done_callback(functools.partial(self._claimed, spec, opts, claim))
        return True

    def _claimed(self, spec: JobSpec, opts: JobOptions, claim: RunClaim, answer: asyncio.Future[int | None]) -> None:
        self._claiming -= 1
        self._update_room()
        run_id = None
        error = StoreError("the claim was cancelled") if answer.cancelled() else answer.exception()
        if error is not None:
            self._rec.claim_failed(claim, error)
        else:
            run_id = answer.result()
        if run_id is None:  # not recorded (requeued) or another instance holds the time
            self._running[spec.job_id] -= 1
            return
        task = asyncio.create_task(self._execute(spec, opts, claim.scheduled_at, kind="schedule",
                                                 claimed=(claim, run_id)), name=f"piko-fire-{spec.job_id}")
        self._fire_tasks.add(task)
        task.add_done_callback(self._fire_done)

    async def wait_for_room(self) -> None:
        """For the kernel, between slices of a burst: wait while too many fires wait on the store.

        A fire waiting for its claim or its finish record holds a task and a pending store call;
        bounding them keeps a burst of 10,000 from living in memory at once (the cyclic GC would
        rescan them all, over and over) and paces dispatch to what the store records. A fire
        inside its handler does not count: long jobs never hold dispatch up.
        """
        if len(self._on_store) + self._claiming >= MAX_ON_STORE:
            await self._room.wait()
        else:
            await asyncio.sleep(0)

    def _update_room(self) -> None:
        waiting = len(self._on_store) + self._claiming
        if waiting >= MAX_ON_STORE:
            self._room.clear()
        elif waiting <= MAX_ON_STORE // 2:
            self._room.set()

    def _wait_on_store(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and task in self._fire_tasks:
            self._on_store.add(task)
            self._update_room()

    def _leave_store(self, task: asyncio.Task[Any] | None) -> None:
        self._on_store.discard(task)  # type: ignore[arg-type]
        self._update_room()

    def _fire_done(self, task: asyncio.Task[Any]) -> None:
        self._fire_tasks.discard(task)
        self._leave_store(task)

    async def run_job(self, job_id: str, scheduled_time: datetime | None = None, config: Any = None, *,
                      kind: str = "manual", data_interval: DataInterval | None = None,
                      take_lock: bool | None = None, rerun_if: frozenset[RunStatus] = frozenset(),
                      attempt: int = 1) -> RunOutcome:
        """Run a job now; idempotent with a scheduled_time (locked on it). Re-runs: RunClaim.rerun_if."""
        spec = self._registry.get(job_id)
        if spec is None:
            raise UnknownJobError(f"no job registered with id {job_id!r}")
        if scheduled_time is not None and scheduled_time.tzinfo is None:
            raise ValueError("scheduled_time must be timezone-aware")
        config_value = None if config is None else validate_config(spec.schema, config, job_id=job_id)
        at = scheduled_time or self._clock.now()
        lock = scheduled_time is not None if take_lock is None else take_lock
        return await self._execute(spec, self._options_for(job_id), at, kind=kind, take_lock=lock,
                                   config_value=config_value, data_interval=data_interval,
                                   rerun=(rerun_if, attempt - 1))

    def cancel_running(self) -> int:
        """Cancel every run started under the lost leader term; each is recorded CANCELLED."""
        tasks = list(self._fenced_tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def is_idle(self) -> bool:
        """No fire is being handled and no run is in progress."""
        return not self._active and not self._fire_tasks and not self._claiming

    def running_count(self, job_id: str | None = None) -> int:
        return sum(self._running.values()) if job_id is None else self._running[job_id]

    async def stop(self, budget_s: float) -> None:
        """Stop taking fires; let runs finish within the budget, then cancel and record the rest."""
        self._is_closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, budget_s)
        await self._rec.drain_claims(budget_s)  # early claims answer: their runs start, and are waited for below
        me = asyncio.current_task()
        pending = (self._fire_tasks | self._active) - {me}
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            if still:
                log.warning("shutdown: cancelling %d run(s) still going after %.1fs", len(self._job_tasks), budget_s)
                for task in list(self._job_tasks):
                    task.cancel()
                await asyncio.wait(still, timeout=CANCEL_GRACE_S + 1.0)
        await self.flush_records(deadline - loop.time())

    async def flush_records(self, budget_s: float) -> None:
        """Write what waits for the store (run ends, watermarks) within the budget; log the rest."""
        await self._rec.close(budget_s)

    def holds(self, job_id: str, scheduled_at: datetime) -> bool:
        """A run of this time is in progress here, or it ended and its end still waits for the store:
        whatever its row says (another instance may have marked it ABANDONED), it is not to be re-run."""
        return (job_id, scheduled_at) in self._in_flight or self._rec.holds_end(job_id, scheduled_at)

    # -- one fire ----------------------------------------------------------------------
    async def _handle_fire(self, job_id: str, due: list[datetime], overflow: bool) -> None:
        spec = self._registry.get(job_id)
        if spec is None:
            log.error("fire for job %r, which no code registers; ignored", job_id)
            return
        opts = self._options_for(job_id)
        _FIRE_FENCE.set(self._fence())
        now = self._clock.now()
        decisions = decide_fires(due, now, grace_of(opts.misfire_grace_s), opts.coalesce)
        for decision in decisions:
            self._m.lateness(job_id, now - decision.scheduled_at)
        missed = [d for d in decisions if d.status is RunStatus.MISSED]
        if missed:  # the older fires of a backlog: recorded together, in one store call
            await self._record_missed(spec, opts, missed)
        for decision in decisions:
            if decision.status is not RunStatus.MISSED:
                await self._execute(spec, opts, decision.scheduled_at, kind="schedule")

    async def _record_missed(self, spec: JobSpec, opts: JobOptions, missed: list[FireDecision]) -> None:
        """MISSED rows for fires that do not run; one log line for them all (a restart after a long
        downtime records hundreds), naming the range and why."""
        job_id = spec.job_id
        run_ids = await asyncio.gather(*(self.record_final(job_id, d.scheduled_at, RunStatus.MISSED, "Misfire",
                                                       d.reason, is_quiet=len(missed) > 1) for d in missed))
        recorded = [d for d, run_id in zip(missed, run_ids, strict=True) if run_id is not None]
        if len(recorded) > 1:
            coalesced = sum(1 for d in recorded if (d.reason or "").startswith("coalesced"))
            log.warning("job %s: %d fires recorded MISSED from %s to %s (%d coalesced into a newer fire, %d later "
                        "than misfire_grace_time)", job_id, len(recorded), recorded[0].scheduled_at.isoformat(),
                        recorded[-1].scheduled_at.isoformat(), coalesced, len(recorded) - coalesced)
        for d, run_id in zip(missed, run_ids, strict=True):
            if run_id is not None and opts.is_one_shot:  # a one-shot's one fire is over
                await self._after_run(spec, opts, RunOutcome(run_id, job_id, d.scheduled_at, RunStatus.MISSED,
                                                             "Misfire", d.reason), None, "schedule")

    async def _execute(self, spec: JobSpec, opts: JobOptions, scheduled_at: datetime, *, kind: str,
                       take_lock: bool = True, config_value: Any = None, data_interval: DataInterval | None = None,
                       claimed: tuple[RunClaim, int] | None = None,
                       rerun: tuple[frozenset[RunStatus], int] = (frozenset(), 0)) -> RunOutcome:
        """One scheduled time: its first attempt, then its retries (each attempt is its own row).

        `claimed`: the first attempt was claimed early (counted in _running). `rerun`: (rerun_if, attempts before)."""
        job_id = spec.job_id
        if claimed is not None:
            _FIRE_FENCE.set(claimed[0].fence)  # its retries carry the term it was dispatched in
        elif kind == "schedule" and self._running[job_id] >= opts.max_instances:  # manual runs are explicit
            reason = busy_reason(opts.max_instances, self._running[job_id], self._m.in_handler[job_id])
            run_id = await self.record_final(spec.job_id, scheduled_at, RunStatus.SKIPPED, "MaxInstances", reason,
                                              take_lock=take_lock)
            return RunOutcome(run_id, job_id, scheduled_at, RunStatus.SKIPPED, "MaxInstances", reason)
        else:
            self._running[job_id] += 1  # from here until the last attempt is over (retry waits count)
        me = asyncio.current_task()
        self._active.add(me)  # type: ignore[arg-type]
        try:
            if spec.stateful and data_interval is None and self._window_for is not None:
                try:
                    data_interval = await self._window_for(spec, scheduled_at, kind)
                except WindowWaits as exc:  # CATCH_UP: this window runs after the earlier ones
                    outcome = RunOutcome(await self.record_final(spec.job_id, scheduled_at, RunStatus.SKIPPED,
                                                                 "WindowWaits", str(exc), take_lock=take_lock),
                                         job_id, scheduled_at, RunStatus.SKIPPED, "WindowWaits", str(exc))
                    await self._after_run(spec, opts, outcome, exc.window, kind)  # type: ignore[arg-type]  # catch-up
                    return outcome
            attempt = 1
            while True:
                if claimed is not None:
                    outcome = await self._run(spec, opts, *claimed, config_value, data_interval)
                    claimed = None
                else:
                    outcome = await self._attempt(spec, opts, scheduled_at, kind, attempt + rerun[1], take_lock,
                                                  config_value, data_interval, rerun[0])
                if (outcome.run_id is None or outcome.status not in _RETRIED or attempt > opts.retries
                        or self._is_closing):
                    return outcome
                delay = retry_delay(attempt, opts.retry_backoff_s, opts.retry_backoff_max_s, self._rng.random())
                log.info("job %s run %s %s; retry %d/%d in %.1fs", job_id, outcome.run_id, outcome.status.value,
                         attempt, opts.retries, delay)
                await self._clock.wait(None, delay)
                kind, attempt, take_lock, rerun = "retry", attempt + 1, False, (frozenset(), rerun[1])
        finally:
            self._running[job_id] -= 1
            self._active.discard(me)  # type: ignore[arg-type]

    async def _attempt(self, spec: JobSpec, opts: JobOptions, scheduled_at: datetime, kind: str, attempt: int,
                       take_lock: bool, config_value: Any, data_interval: DataInterval | None,
                       rerun_if: frozenset[RunStatus] = frozenset()) -> RunOutcome:
        """Claim the run (lock + RUNNING row), call the handler, record how it ended."""
        job_id = spec.job_id
        fence = self._current_fence()
        claim = RunClaim(job_id, scheduled_at, RunStatus.RUNNING, self._clock.now(), self.instance_id,
                         attempt=attempt, kind=kind, take_lock=take_lock, fence=fence, rerun_if=rerun_if,
                         data_start=data_interval.start if data_interval else None,
                         data_end=data_interval.end if data_interval else None)
        run_id = await self._rec.claim(claim)
        if run_id is None:
            return RunOutcome(None, job_id, scheduled_at, RunStatus.SKIPPED, "Duplicate",
                              "another instance holds this scheduled time")
        return await self._run(spec, opts, claim, run_id, config_value, data_interval)

    async def _run(self, spec: JobSpec, opts: JobOptions, claim: RunClaim, run_id: int, config_value: Any,
                   data_interval: DataInterval | None) -> RunOutcome:
        """A claimed run: call the handler, record how it ended, then the after-run bookkeeping."""
        job_id, scheduled_at, fence = spec.job_id, claim.scheduled_at, claim.fence
        me = asyncio.current_task()
        no_config: ConfigError | None = None
        try:
            config = config_value if config_value is not None else self._config_for(spec, self._clock.now())
        except ConfigError as exc:  # no valid config: recorded as failed, the handler is not called
            config, no_config = None, exc
        ctx: dict[str, Any] = {"run_id": run_id, "job_id": job_id, "attempt": claim.attempt,
                               "scheduled_time": scheduled_at, "config": config, "logger": run_logger(job_id, run_id)}
        if spec.stateful:
            ctx["data_interval"] = data_interval
        started = self._clock.monotonic()
        self._m.running(job_id, +1)
        self._leave_store(me)
        key = (job_id, scheduled_at)
        self._in_flight[key] += 1
        try:
            if no_config is not None:
                log.error("job %s run %s not started: %s", job_id, run_id, no_config)
                outcome = RunOutcome(run_id, job_id, scheduled_at, RunStatus.FAILED, "ConfigError", str(no_config))
            elif opts.timeout_s is None and me in self._fire_tasks:  # a manual caller's own task is not ours
                outcome = await self._invoker.inline(me, spec, ctx, fence=fence)  # type: ignore[arg-type]
            else:
                outcome = await self._invoker.in_task(spec, ctx, opts.timeout_s, fence=fence)
        finally:
            self._m.running(job_id, -1)
            self._wait_on_store(me)
        outcome.duration_s = self._clock.monotonic() - started
        self._m.duration(job_id, outcome.duration_s)
        try:
            await self._rec.finish(run_id, outcome)
        finally:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]
        await self._after_run(spec, opts, outcome, data_interval, claim.kind)
        return outcome

    async def _after_run(self, spec: JobSpec, opts: JobOptions, outcome: RunOutcome,
                         window: DataInterval | None, kind: str) -> None:
        """Watermarks and one-shot bookkeeping; only stateful and date jobs have any. What the store
        does not take now waits, in order, with the run ends (PendingWrites)."""
        on_finish = self._on_finish
        if on_finish is None or not (spec.stateful or opts.is_one_shot):
            return
        what = f"the bookkeeping after run {outcome.run_id} (job {spec.job_id}, {outcome.status.value})"

        def write() -> Awaitable[None]:
            return on_finish(spec, outcome, window, kind)

        try:
            await self._rec.bookkeeping(what, write)
        except Exception:  # bookkeeping after a run must not turn it into a failure
            log.exception("job %s: after-run bookkeeping failed", spec.job_id)

    def _current_fence(self) -> Fence | None:
        value = _FIRE_FENCE.get(_UNSET)
        return self._fence() if value is _UNSET else value  # type: ignore[return-value]

    async def record_final(self, job_id: str, at: datetime, status: RunStatus, error_type: str, reason: str | None,
                           window: DataInterval | None = None, *, take_lock: bool = True,
                           is_quiet: bool = False) -> int | None:
        """A row born final (MISSED, SKIPPED) for `at`, under the run lock unless take_lock is False."""
        claim = RunClaim(job_id, at, status, self._clock.now(), self.instance_id, take_lock=take_lock,
                         fence=self._current_fence(), error_type=error_type, error_message=reason,
                         data_start=window.start if window else None, data_end=window.end if window else None)
        return await self._rec.record_final(claim, is_quiet=is_quiet)
