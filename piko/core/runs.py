"""Fires to runs: misfire and coalescing decisions, the early claim, manual and queued runs.

Each fire first claims the (job_id, scheduled_time) lock and its row in one store call
(claims made in one loop iteration share one call), so a time runs once however many
instances fire it; attempts.py then runs it and records how it ended. A fire that does not
run is recorded too (MISSED, SKIPPED): nothing is dropped silently. In cluster execution a
claim is shaped first (the run may start here or be queued for any worker of its queue), and
runs a worker claimed from the queue come in through `execute_claimed`.
Imports no store implementation, no component and not the app.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from piko.core.attempts import FIRE_FENCE, Attempts, ClaimShaper, OnClaim
from piko.core.backpressure import DispatchRoom
from piko.core.configs import validate_config
from piko.core.fanout import Fanout, Piece
from piko.core.invoke import CANCEL_GRACE_S, Invoker, RunHook
from piko.core.policy import FireDecision, decide_fires, grace_of
from piko.core.recorder import Placed, RunRecorder
from piko.core.registry import JobSpec, Registry
from piko.core.resource import ResourcePool
from piko.core.run_metrics import RunMetrics
from piko.core.types import DataInterval, Fence, JobOptions, RunClaim, RunOutcome, RunRecord, RunStatus
from piko.errors import StoreError, UnknownJobError
from piko.protocols import Clock, Store

log = logging.getLogger("piko.runner")


class Runner:
    def __init__(self, *, registry: Registry, store: Store, clock: Clock, instance_id: str,
                 resources: ResourcePool, options_for: Callable[[str], JobOptions],
                 config_for: Callable[[JobSpec, datetime], Any],
                 window_for: Callable[[JobSpec, datetime, str], Awaitable[DataInterval | None]] | None = None,
                 on_finish: Callable[[JobSpec, RunOutcome, DataInterval | None, str], Awaitable[None]] | None = None,
                 fence: Callable[[], Fence | None] = lambda: None, metrics: Any = None,
                 run_hooks: Sequence[RunHook] = (), rng: random.Random | None = None,
                 requeue: Callable[[str, datetime], None] | None = None, shape: ClaimShaper | None = None,
                 targets: Callable[[str], list[str]] = lambda queue: [],
                 is_live: Callable[[str], bool] = lambda instance_id: True) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self.instance_id = instance_id
        self._options_for = options_for
        self._fence = fence
        self._shape = shape  # cluster execution: run a fire here, or queue it
        self._m = RunMetrics(metrics)
        self._rec = RunRecorder(store, clock, self._m, requeue, is_cluster=shape is not None)
        self._room = DispatchRoom()
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._fenced_tasks: set[asyncio.Task[Any]] = set()  # runs started under a leader term
        invoker = Invoker(resources, list(run_hooks), self._job_tasks, self._fenced_tasks, fence)
        self._attempts = Attempts(recorder=self._rec, clock=clock, instance_id=instance_id, metrics=self._m,
                                  invoker=invoker, room=self._room, config_for=config_for, window_for=window_for,
                                  on_finish=on_finish, fence=fence, rng=rng or random.Random(),
                                  is_closing=lambda: self._is_closing, shape=shape)
        self.fanout = Fanout(store=store, clock=clock, instance_id=instance_id, resolve=registry.resolve,
                             run_local=self._run_piece, is_cluster=shape is not None, targets=targets,
                             is_live=is_live, nudge=lambda: self.on_run_end() if self.on_run_end is not None else None,
                             counted=lambda job_id, kind, status: self._m.piece(job_id, kind, status))
        self._attempts.fanout = self.fanout
        self._is_closing = False
        self._queuing = 0  # early claims in flight that place their run in the queue, not here
        self.on_run_end: Callable[[], None] | None = None  # a worker hears of freed capacity

    # -- entry points ------------------------------------------------------------------
    def on_fire(self, job_id: str, due: list[datetime], overflow: bool) -> None:
        """Kernel callback: handle the due fire times of one job in the background."""
        if self._is_closing:
            return
        spec = self._registry.get(job_id)
        if spec is not None and not overflow and not spec.stateful and self._claim_early(spec, due):
            return
        task = asyncio.create_task(self._handle_fire(job_id, due, overflow), name=f"piko-fire-{job_id}")
        self._room.add_fire(task, is_on_store=True)

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
        running = self._attempts.running
        if len(decisions) != 1 or decisions[0].status is not RunStatus.RUNNING or running[job_id] >= opts.max_instances:
            return False
        at = decisions[0].scheduled_at
        self._m.lateness(job_id, now - at)
        claim = RunClaim(job_id, at, RunStatus.RUNNING, now, self.instance_id, fence=self._fence())
        if self._shape is not None:
            claim = self._shape(claim, opts)
        running[job_id] += 1
        self._queuing += claim.status is RunStatus.PENDING
        self._room.claim_sent(+1)
        self._rec.submit_claim(claim).add_done_callback(functools.partial(self._claimed, spec, opts, claim))
        return True

    def _claimed(self, spec: JobSpec, opts: JobOptions, claim: RunClaim, answer: asyncio.Future[Placed]) -> None:
        self._room.claim_sent(-1)
        self._queuing -= claim.status is RunStatus.PENDING
        run_id, status = None, claim.status
        error = StoreError("the claim was cancelled") if answer.cancelled() else answer.exception()
        if error is not None:
            self._rec.claim_failed(claim, error)
        else:
            run_id, status = answer.result()
            if run_id is None and self._rec.is_unrecorded(claim):  # taken: maybe by its own lost claim
                finder = asyncio.create_task(self._find_lost(spec, opts, claim), name=f"piko-fire-{spec.job_id}")
                self._room.add_fire(finder, is_on_store=True)
                return
        if run_id is None or status is not RunStatus.RUNNING:  # not recorded (requeued), taken, queued, skipped
            self._attempts.running[spec.job_id] -= 1
            if run_id is not None:
                self._attempts.not_here(claim, run_id, status)
            return
        task = asyncio.create_task(self._attempts.execute(spec, opts, claim.scheduled_at, kind="schedule",
                                                          claimed=(claim, run_id)), name=f"piko-fire-{spec.job_id}")
        self._room.add_fire(task, is_on_store=False)

    async def _find_lost(self, spec: JobSpec, opts: JobOptions, claim: RunClaim) -> None:
        claim, run_id, status = await self._attempts.find_lost(claim)
        if run_id is None or status is not RunStatus.RUNNING:
            self._attempts.running[spec.job_id] -= 1
            return
        await self._attempts.execute(spec, opts, claim.scheduled_at, kind="schedule", claimed=(claim, run_id))

    async def wait_for_room(self) -> None:
        """For the kernel, between slices of a burst: wait while too many fires wait on the store."""
        await self._room.wait_for_room()

    async def run_job(self, job_id: str, scheduled_time: datetime | None = None, config: Any = None, *,
                      kind: str = "manual", data_interval: DataInterval | None = None,
                      take_lock: bool | None = None, rerun_if: frozenset[RunStatus] = frozenset(),
                      attempt: int = 1, on_claim: OnClaim | None = None) -> RunOutcome:
        """Run a job now; idempotent with a scheduled_time (locked on it). Re-runs: RunClaim.rerun_if.
        `on_claim(run_id)` is called once the run is claimed (None: its time was taken or the re-run refused)."""
        spec = self._spec(job_id)
        if scheduled_time is not None and scheduled_time.tzinfo is None:
            raise ValueError("scheduled_time must be timezone-aware")
        config_value = None if config is None else validate_config(spec.schema, config, job_id=job_id)
        at = scheduled_time or self._clock.now()
        lock = (scheduled_time is not None or spec.workflow is not None) if take_lock is None else take_lock
        return await self._attempts.execute(spec, self._options_for(job_id), at, kind=kind, take_lock=lock,
                                            config_value=config_value, data_interval=data_interval,
                                            rerun=(rerun_if, attempt - 1), on_claim=on_claim)

    async def queue_run(self, job_id: str, scheduled_time: datetime | None = None, *, kind: str = "manual",
                        data_interval: DataInterval | None = None, take_lock: bool | None = None,
                        rerun_if: frozenset[RunStatus] = frozenset(), attempt: int = 1) -> RunOutcome:
        """Cluster execution: queue a run for any worker of its job's queue (PENDING); run_id None when
        its time is taken. `wait_run` waits for its end."""
        spec = self._spec(job_id)
        at = scheduled_time or self._clock.now()
        claim = RunClaim(job_id, at, RunStatus.PENDING, self._clock.now(), self.instance_id, attempt=attempt,
                         kind=kind, take_lock=(scheduled_time is not None or spec.workflow is not None)
                         if take_lock is None else take_lock,
                         rerun_if=rerun_if, queue=spec.queue,
                         data_start=data_interval.start if data_interval else None,
                         data_end=data_interval.end if data_interval else None)
        ((run_id, status),) = await self._store.place_runs([claim])
        if run_id is None:
            return RunOutcome(None, job_id, at, RunStatus.SKIPPED, "Duplicate", "another run holds this time")
        return RunOutcome(run_id, job_id, at, status, "Queued", f"queued for a worker of queue {spec.queue!r}")

    async def rerun_workflow(self, run_id: int, from_steps: Sequence[str] = (), *, is_queued: bool) -> RunOutcome:
        """A workflow run again, as the next attempt of its time: the steps that did not succeed (or
        `from_steps`, succeeded or not) and everything downstream; steps done are kept. Only the
        newest attempt of a time may be re-run, once (the store's re-run check): asking twice does
        not run it twice. `is_queued`: for any worker (cluster execution), else here."""
        run = await self._store.get_run(run_id)
        if run is None:
            raise UnknownJobError(f"no run with id {run_id}")
        spec = self._spec(run.job_id)
        if spec.workflow is None:
            raise UnknownJobError(f"run {run_id} is of {run.job_id!r}, which is not a workflow")
        unknown = [s for s in from_steps if s not in spec.workflow.steps]
        if unknown:
            raise UnknownJobError(f"workflow {run.job_id!r} has no step {', '.join(map(repr, unknown))} "
                                  f"(its steps: {', '.join(spec.workflow.steps)})")
        newest = await self._store.latest_run(run.job_id, run.scheduled_at)
        if newest is not None and newest.run_id != run.run_id:
            raise StoreError(f"run {run_id} is not the newest attempt of {run.job_id} at "
                             f"{run.scheduled_at.isoformat()}: run {newest.run_id} ({newest.status.value}) is")
        if not run.status.is_final or (run.status is RunStatus.SUCCESS and not from_steps):
            raise StoreError(f"run {run_id} is {run.status.value}: re-run a failed workflow run, or name "
                             f"the steps to run again with --from")
        payload = json.dumps({"from": list(from_steps)}) if from_steps else None
        rerun_if = frozenset({run.status})
        window = DataInterval(run.data_start, run.data_end) if run.data_start and run.data_end else None
        if not is_queued:
            return await self._attempts.execute(spec, self._options_for(run.job_id), run.scheduled_at, kind="manual",
                                                take_lock=False, data_interval=window, rerun=(rerun_if, run.attempt),
                                                piece=(None, payload))
        claim = RunClaim(run.job_id, run.scheduled_at, RunStatus.PENDING, self._clock.now(), self.instance_id,
                         attempt=run.attempt + 1, kind="manual", take_lock=False, rerun_if=rerun_if, queue=spec.queue,
                         data_start=run.data_start, data_end=run.data_end, payload=payload)
        ((new_id, status),) = await self._store.place_runs([claim])
        if new_id is None:
            return RunOutcome(None, run.job_id, run.scheduled_at, RunStatus.SKIPPED, "Duplicate",
                              "it was re-run already")
        return RunOutcome(new_id, run.job_id, run.scheduled_at, status, "Queued", "queued for a worker")

    async def wait_run(self, run_id: int, poll_s: float = 0.2) -> RunOutcome:
        """Poll a (queued) run's row until it has ended."""
        while True:
            run = await self._store.get_run(run_id)
            if run is not None and run.status.is_final:
                return RunOutcome(run.run_id, run.job_id, run.scheduled_at, run.status, run.error_type,
                                  run.error_message, duration_s=run.duration_s, error_traceback=run.error_traceback)
            await self._clock.wait(None, poll_s)

    def execute_claimed(self, run: RunRecord) -> asyncio.Task[RunOutcome]:
        """Run what a worker claimed from the queue (RUNNING under its claim token) in a task."""
        spec = self._spec(run.job_id)
        claim = RunClaim(run.job_id, run.scheduled_at, RunStatus.RUNNING, run.started_at or self._clock.now(),
                         self.instance_id, attempt=run.attempt, kind=run.kind, take_lock=False,
                         data_start=run.data_start, data_end=run.data_end, queue=run.queue,
                         claim_token=run.claim_token, parent_run_id=run.parent_run_id, payload=run.payload)
        window = DataInterval(run.data_start, run.data_end) if run.data_start and run.data_end else None
        self._attempts.running[run.job_id] += 1
        task = asyncio.create_task(self._attempts.execute(spec, self._options_for(run.job_id), run.scheduled_at,
                                                          kind=run.kind, claimed=(claim, run.run_id),
                                                          data_interval=window), name=f"piko-run-{run.job_id}")
        task.add_done_callback(lambda _: self.on_run_end() if self.on_run_end is not None else None)
        return task

    async def _run_piece(self, handler: JobSpec, piece: Piece, claim: RunClaim) -> RunOutcome:
        """Leader mode: a piece its parent runs here (one attempt; the parent places a failed one again)."""
        spec = self._spec(claim.job_id)
        window = DataInterval(claim.data_start, claim.data_end) if claim.data_start and claim.data_end else None
        return await self._attempts.execute(spec, self._options_for(claim.job_id), claim.scheduled_at, kind="piece",
                                            take_lock=claim.take_lock, data_interval=window,
                                            rerun=(claim.rerun_if, claim.attempt - 1),
                                            piece=(claim.parent_run_id, claim.payload))

    def _spec(self, job_id: str) -> JobSpec:
        spec = self._registry.resolve(job_id)
        if spec is None:
            raise UnknownJobError(f"no job registered with id {job_id!r}")
        return spec

    def cancel_running(self) -> int:
        """Cancel every run started under the lost leader term; each is recorded CANCELLED."""
        tasks = list(self._fenced_tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def cancel_run(self, run_id: int, by: str) -> bool:
        """A cancel request for a run of this instance: it ends CANCELLED, saying who asked."""
        return self._attempts.invoker.cancel(run_id, f"cancelled by {by}" if by else "cancelled on request")

    def is_idle(self) -> bool:
        """No fire is being handled and no run is in progress."""
        return not self._attempts.active and not self._room.fire_tasks and not self._room.claiming

    def running_count(self, job_id: str | None = None) -> int:
        running = self._attempts.running
        return sum(running.values()) if job_id is None else running[job_id]

    def load(self) -> int:
        """Runs this instance executes or will (cluster capacity): running_count without the fires
        still being placed, which may yet be queued for another worker (a burst of 200 fires on
        the leader is not 200 runs here)."""
        return self.running_count() - len(self._attempts.placing) - self._queuing

    async def stop(self, budget_s: float) -> None:
        """Stop taking fires; let runs finish within the budget, then cancel and record the rest."""
        self._is_closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, budget_s)
        await self._rec.drain_claims(budget_s)  # early claims answer: their runs start, and are waited for below
        me = asyncio.current_task()
        pending = (self._room.fire_tasks | self._attempts.active) - {me}
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            if still:
                log.warning("shutdown: cancelling %d run(s) still going after %.1fs", len(self._job_tasks), budget_s)
                self._attempts.invoker.flag_all()
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
        return self._attempts.holds(job_id, scheduled_at)

    async def record_final(self, job_id: str, at: datetime, status: RunStatus, error_type: str, reason: str | None,
                           window: DataInterval | None = None, *, take_lock: bool = True,
                           is_quiet: bool = False) -> int | None:
        """A row born final (MISSED, SKIPPED) for `at`, under the run lock unless take_lock is False."""
        return await self._attempts.record_final(job_id, at, status, error_type, reason, window,
                                                 take_lock=take_lock, is_quiet=is_quiet)

    # -- one fire ----------------------------------------------------------------------
    async def _handle_fire(self, job_id: str, due: list[datetime], overflow: bool) -> None:
        spec = self._registry.get(job_id)
        if spec is None:
            log.error("fire for job %r, which no code registers; ignored", job_id)
            return
        opts = self._options_for(job_id)
        FIRE_FENCE.set(self._fence())
        now = self._clock.now()
        decisions = decide_fires(due, now, grace_of(opts.misfire_grace_s), opts.coalesce)
        for decision in decisions:
            self._m.lateness(job_id, now - decision.scheduled_at)
        missed = [d for d in decisions if d.status is RunStatus.MISSED]
        if missed:  # the older fires of a backlog: recorded together, in one store call
            await self._record_missed(spec, opts, missed)
        for decision in decisions:
            if decision.status is not RunStatus.MISSED:
                await self._attempts.execute(spec, opts, decision.scheduled_at, kind="schedule")

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
                await self._attempts.after_run(spec, opts, RunOutcome(run_id, job_id, d.scheduled_at,
                                                                      RunStatus.MISSED, "Misfire", d.reason),
                                               None, "schedule")
