"""One scheduled time, run: its attempts (each its own row), the handler call, its recorded end.

An attempt claims its row (runs.py claims a fire's first attempt early, on the hot path),
calls the handler (invoke.py), records how it ended (recorder.py), then the after-run
bookkeeping. Failed and timed-out attempts are retried after a capped backoff. In cluster
execution the store places an attempt: it runs here only when placed RUNNING; PENDING means a
worker of its queue runs it; SKIPPED means the job is at its max_instances cluster-wide.
Imports no store implementation, no component and not the app.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from piko.core import pieces
from piko.core.backpressure import DispatchRoom
from piko.core.fanout import Fanout, RunContext
from piko.core.invoke import CancelEvent, Invoker, outcome_of
from piko.core.policy import busy_reason, retry_delay
from piko.core.recorder import RunRecorder
from piko.core.registry import JobSpec
from piko.core.run_metrics import RunMetrics
from piko.core.types import DataInterval, Fence, JobOptions, RunClaim, RunOutcome, RunStatus
from piko.errors import ConfigError, WindowWaits
from piko.observability.logging import run_logger
from piko.protocols import Clock

log = logging.getLogger("piko.runner")
# The leader term a fire was dispatched in: every claim for that fire (its retries too) carries
# it, so a deposed leader cannot record a late retry unfenced. Manual runs read it at claim time.
FIRE_FENCE: contextvars.ContextVar[object] = contextvars.ContextVar("piko_fire_fence")
_UNSET = object()
_RETRIED = (RunStatus.FAILED, RunStatus.TIMEOUT)
ClaimShaper = Callable[[RunClaim, JobOptions], RunClaim]  # cluster execution: run here, or queue it
OnClaim = Callable[[int | None], None]  # a manual caller learns the run id before the run ends


class Attempts:
    def __init__(self, *, recorder: RunRecorder, clock: Clock, instance_id: str, metrics: RunMetrics,
                 invoker: Invoker, room: DispatchRoom, config_for: Callable[[JobSpec, datetime], Any],
                 window_for: Callable[[JobSpec, datetime, str], Awaitable[DataInterval | None]] | None,
                 on_finish: Callable[[JobSpec, RunOutcome, DataInterval | None, str], Awaitable[None]] | None,
                 fence: Callable[[], Fence | None], rng: random.Random, is_closing: Callable[[], bool],
                 shape: ClaimShaper | None = None) -> None:
        self._rec = recorder
        self._clock = clock
        self.instance_id = instance_id
        self._m = metrics
        self.invoker = invoker
        self._room = room
        self._config_for = config_for
        self._window_for = window_for
        self._on_finish = on_finish
        self._fence = fence
        self._rng = rng
        self._is_closing = is_closing
        self._shape = shape  # None: leader mode, an attempt's row is written as asked
        self.running: Counter[str] = Counter()  # fires of each job from claim to last attempt (max_instances)
        self.active: set[asyncio.Task[Any]] = set()  # tasks inside execute (fires, manual and queued runs)
        # cluster execution: tasks whose run is not placed yet (it may yet be queued for another worker)
        self.placing: set[asyncio.Task[Any]] = set()
        self._in_flight: Counter[tuple[str, datetime]] = Counter()  # claimed runs not yet recorded as ended
        self.fanout: Fanout | None = None  # ctx.map, shards and broadcast (set by the runner)

    async def execute(self, spec: JobSpec, opts: JobOptions, scheduled_at: datetime, *, kind: str,
                      take_lock: bool = True, config_value: Any = None, data_interval: DataInterval | None = None,
                      claimed: tuple[RunClaim, int] | None = None,
                      rerun: tuple[frozenset[RunStatus], int] = (frozenset(), 0),
                      piece: tuple[int | None, str | None] = (None, None),
                      on_claim: OnClaim | None = None) -> RunOutcome:
        """One scheduled time: its first attempt, then its retries (each attempt is its own row).

        `claimed`: the first attempt was claimed early (counted in running). `rerun`: (rerun_if, attempts before).
        `piece`: (parent run id, payload) of a piece the parent runs here (core/fanout.py).
        `on_claim`: told the first attempt's run id once its claim is answered (None: not claimed)."""
        job_id = spec.job_id
        if claimed is not None:  # its retries carry the term it was dispatched in (leader mode)
            FIRE_FENCE.set(claimed[0].fence if self._shape is None else None)
        elif kind == "schedule" and self.running[job_id] >= opts.max_instances:  # manual runs are explicit
            reason = busy_reason(opts.max_instances, self.running[job_id], self._m.in_handler[job_id])
            run_id = await self.record_final(spec.job_id, scheduled_at, RunStatus.SKIPPED, "MaxInstances", reason,
                                             take_lock=take_lock)
            return RunOutcome(run_id, job_id, scheduled_at, RunStatus.SKIPPED, "MaxInstances", reason)
        else:
            self.running[job_id] += 1  # from here until the last attempt is over (retry waits count)
        me = asyncio.current_task()
        self.active.add(me)  # type: ignore[arg-type]
        if claimed is None and self._shape is not None:
            self.placing.add(me)  # type: ignore[arg-type]
        try:
            if spec.stateful and data_interval is None and self._window_for is not None:
                try:
                    data_interval = await self._window_for(spec, scheduled_at, kind)
                except WindowWaits as exc:  # CATCH_UP: this window runs after the earlier ones
                    outcome = RunOutcome(await self.record_final(spec.job_id, scheduled_at, RunStatus.SKIPPED,
                                                                 "WindowWaits", str(exc), take_lock=take_lock),
                                         job_id, scheduled_at, RunStatus.SKIPPED, "WindowWaits", str(exc))
                    await self.after_run(spec, opts, outcome, exc.window, kind)  # type: ignore[arg-type]  # catch-up
                    return outcome
            attempt = 1
            while True:
                if claimed is not None:
                    outcome = await self._run(spec, opts, *claimed, config_value, data_interval)
                    claimed = None
                else:
                    outcome = await self._attempt(spec, opts, scheduled_at, kind, attempt + rerun[1], take_lock,
                                                  config_value, data_interval, rerun[0], piece, on_claim)
                    on_claim = None
                if (outcome.run_id is None or outcome.status not in _RETRIED or attempt > opts.retries
                        or self._is_closing() or spec.workflow is not None):  # a workflow's retries: takeovers
                    return outcome
                delay = retry_delay(attempt, opts.retry_backoff_s, opts.retry_backoff_max_s, self._rng.random())
                log.info("job %s run %s %s; retry %d/%d in %.1fs", job_id, outcome.run_id, outcome.status.value,
                         attempt, opts.retries, delay)
                await self._clock.wait(None, delay)
                kind, attempt, take_lock, rerun = "retry", attempt + 1, False, (frozenset(), rerun[1])
        finally:
            self.running[job_id] -= 1
            self.active.discard(me)  # type: ignore[arg-type]
            self.placing.discard(me)  # type: ignore[arg-type]

    async def _attempt(self, spec: JobSpec, opts: JobOptions, scheduled_at: datetime, kind: str, attempt: int,
                       take_lock: bool, config_value: Any, data_interval: DataInterval | None,
                       rerun_if: frozenset[RunStatus] = frozenset(),
                       piece: tuple[int | None, str | None] = (None, None),
                       on_claim: OnClaim | None = None) -> RunOutcome:
        """Claim the run (lock + row), call the handler if it is placed here, record how it ended."""
        job_id = spec.job_id
        # in cluster execution only placing a new fire is the leader's act; retries and re-runs are anyone's
        fence = self.current_fence() if self._shape is None or kind == "schedule" else None
        claim = RunClaim(job_id, scheduled_at, RunStatus.RUNNING, self._clock.now(), self.instance_id,
                         attempt=attempt, kind=kind, take_lock=take_lock, fence=fence,
                         rerun_if=rerun_if, data_start=data_interval.start if data_interval else None,
                         data_end=data_interval.end if data_interval else None,
                         parent_run_id=piece[0], payload=piece[1])
        if self._shape is not None and piece[0] is None:
            claim = self._shape(claim, opts)
        run_id, status = await self._rec.claim(claim)
        if run_id is None:
            claim, run_id, status = await self.find_lost(claim)
        self.placing.discard(asyncio.current_task())  # type: ignore[arg-type]
        if on_claim is not None:
            on_claim(run_id)
        if run_id is None:
            return RunOutcome(None, job_id, scheduled_at, RunStatus.SKIPPED, "Duplicate",
                              "another instance holds this scheduled time")
        if status is not RunStatus.RUNNING:
            return self.not_here(claim, run_id, status)
        return await self._run(spec, opts, claim, run_id, config_value, data_interval)

    async def find_lost(self, claim: RunClaim) -> tuple[RunClaim, int | None, RunStatus]:
        """A claim whose time is taken: if the taker is an earlier claim of this fire made here
        whose answer was lost (and nothing here runs it), its row, to run (RUNNING) or leave to the
        queue (PENDING); otherwise run id None."""
        if (claim.job_id, claim.scheduled_at) not in self._in_flight:
            lost = await self._rec.own_lost_claim(claim)
            if lost is not None and lost.status in (RunStatus.RUNNING, RunStatus.PENDING):
                return replace(claim, claim_token=lost.claim_token), lost.run_id, lost.status  # its written token
        return claim, None, claim.status

    def _parent_spec(self, spec: JobSpec, opts: JobOptions, ctx: dict[str, Any], claim: RunClaim) -> JobSpec:
        """A sharded, broadcast or workflow job's fire runs its pieces (fanout.py, flow.py), not its
        handler; its resources are entered by each piece."""
        assert self.fanout is not None
        if spec.workflow is not None:
            from piko.core.flow import run_workflow

            request = pieces.decode(claim.payload) if claim.payload else None  # piko workflow rerun --from
            if isinstance(request, dict) and request.get("from"):
                ctx["rerun_from"] = tuple(request["from"])
            func: Callable[..., Any] = functools.partial(run_workflow, self.fanout, spec=spec)
        elif opts.broadcast:
            func = functools.partial(self.fanout.broadcast, spec=spec)
        else:
            func = functools.partial(self.fanout.shards, spec=spec, total=opts.shards)
        return replace(spec, func=func, resources={})

    def _piece_result(self, spec: JobSpec, outcome: RunOutcome, step_ctx: dict[str, Any] | None) -> RunOutcome:
        """A piece's return value is stored (its parent reads it back): as JSON, size-capped; a
        workflow step's with the shared dict as the step left it."""
        if outcome.status is not RunStatus.SUCCESS:
            return outcome
        value = outcome.result if step_ctx is None else {"v": outcome.result, "w": step_ctx.get("workflow")}
        try:
            outcome.result_json = pieces.encode_result(spec.job_id, value)
        except pieces.PieceError as exc:
            log.error("job %s run %s FAILED: %s", spec.job_id, outcome.run_id, exc)
            failed = outcome_of(outcome.run_id, spec, outcome.scheduled_at, RunStatus.FAILED, exc)
            failed.duration_s, failed.attempt = outcome.duration_s, outcome.attempt
            return failed
        return outcome

    def not_here(self, claim: RunClaim, run_id: int, status: RunStatus) -> RunOutcome:
        """A run the store placed elsewhere (cluster execution): queued for a worker, or skipped."""
        if status is RunStatus.SKIPPED:
            reason = f"max_instances={claim.max_instances} reached in the cluster"
            log.warning("job %s at %s SKIPPED: %s", claim.job_id, claim.scheduled_at.isoformat(), reason)
            self._m.count(claim.job_id, status)
            return RunOutcome(run_id, claim.job_id, claim.scheduled_at, status, "MaxInstances", reason)
        return RunOutcome(run_id, claim.job_id, claim.scheduled_at, status, "Queued",
                          f"queued for a worker of queue {claim.queue!r}")

    async def _run(self, spec: JobSpec, opts: JobOptions, claim: RunClaim, run_id: int, config_value: Any,
                   data_interval: DataInterval | None) -> RunOutcome:
        """A claimed run: call the handler, record how it ended, then the after-run bookkeeping."""
        # a leader term guards running runs in leader mode; in cluster execution the claim's token does
        job_id, scheduled_at, fence = spec.job_id, claim.scheduled_at, claim.fence if self._shape is None else None
        me = asyncio.current_task()
        no_config: ConfigError | None = None
        stopped: asyncio.CancelledError | None = None
        found = pieces.parse(job_id) if "[" in job_id else None  # a piece: its job's or task's config
        try:
            config = config_value if config_value is not None else self._config_for(
                spec if found is None else replace(spec, job_id=found.handler), self._clock.now())
        except ConfigError as exc:  # no valid config: recorded as failed, the handler is not called
            config, no_config = None, exc
        ctx = RunContext({"run_id": run_id, "job_id": job_id, "attempt": claim.attempt,
                          "scheduled_time": scheduled_at, "config": config, "logger": run_logger(job_id, run_id),
                          "cancel_event": CancelEvent(), "instance_id": self.instance_id}, self.fanout)
        if spec.stateful or (found is not None and data_interval is not None):
            ctx["data_interval"] = data_interval
        if found is not None:
            _piece_context(ctx, found, claim)
        elif (opts.shards or opts.broadcast or spec.workflow is not None) and self.fanout is not None:
            spec = self._parent_spec(spec, opts, ctx, claim)  # this run is the parent of pieces
        started = self._clock.monotonic()
        self._m.running(job_id, +1)
        self._room.leave_store(me)
        key = (job_id, scheduled_at)
        self._in_flight[key] += 1
        try:
            if no_config is not None:
                log.error("job %s run %s not started: %s", job_id, run_id, no_config)
                outcome = RunOutcome(run_id, job_id, scheduled_at, RunStatus.FAILED, "ConfigError", str(no_config))
            elif opts.timeout_s is None and me in self._room.fire_tasks:  # a manual caller's own task is not ours
                outcome = await self.invoker.inline(me, spec, ctx, fence=fence)  # type: ignore[arg-type]
            else:
                try:
                    outcome = await self.invoker.in_task(spec, ctx, opts.timeout_s, fence=fence)
                except asyncio.CancelledError as exc:  # our caller was cancelled: the run ends CANCELLED, recorded
                    stopped = exc
                    outcome = outcome_of(run_id, spec, scheduled_at, RunStatus.CANCELLED, exc)
        finally:
            self._m.running(job_id, -1)
            self._room.enter_store(me)
        took = outcome.duration_s = self._clock.monotonic() - started
        outcome.attempt = claim.attempt
        if found is not None:
            outcome = self._piece_result(spec, outcome, ctx if found.kind == "step" else None)
        self._m.duration(job_id, took)
        try:
            await self._rec.finish(run_id, outcome, claim.claim_token)
        finally:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]
            if found is not None and self.fanout is not None:
                self.fanout.piece_ended.set()  # a parent here waiting on rows looks now
        if stopped is not None:
            raise stopped
        await self.after_run(spec, opts, outcome, data_interval, claim.kind)
        return outcome

    async def after_run(self, spec: JobSpec, opts: JobOptions, outcome: RunOutcome,
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

    def current_fence(self) -> Fence | None:
        value = FIRE_FENCE.get(_UNSET)
        return self._fence() if value is _UNSET else value  # type: ignore[return-value]

    async def record_final(self, job_id: str, at: datetime, status: RunStatus, error_type: str, reason: str | None,
                           window: DataInterval | None = None, *, take_lock: bool = True,
                           is_quiet: bool = False) -> int | None:
        """A row born final (MISSED, SKIPPED) for `at`, under the run lock unless take_lock is False."""
        claim = RunClaim(job_id, at, status, self._clock.now(), self.instance_id, take_lock=take_lock,
                         fence=self.current_fence(), error_type=error_type, error_message=reason,
                         data_start=window.start if window else None, data_end=window.end if window else None)
        return await self._rec.record_final(claim, is_quiet=is_quiet)

    def holds(self, job_id: str, scheduled_at: datetime) -> bool:
        """A run of this time is in progress here, or it ended and its end still waits for the store."""
        return (job_id, scheduled_at) in self._in_flight or self._rec.holds_end(job_id, scheduled_at)


def _piece_context(ctx: dict[str, Any], found: pieces.PieceKey, claim: RunClaim) -> None:
    """What a piece's handler gets besides a run's usual keys."""
    ctx["parent_run_id"] = claim.parent_run_id
    if found.kind == "item":
        ctx["item"] = pieces.decode(claim.payload)
    elif found.kind == "shard":
        ctx["shard"] = pieces.shard_of(claim.job_id)
    elif found.kind == "step":
        given = pieces.decode(claim.payload) or {}
        ctx["step"] = found.key
        ctx["upstream"] = given.get("upstream", {})
        ctx["workflow"] = given.get("workflow", {})
