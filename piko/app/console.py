"""The status page's view of the running app (protocols.OpsConsole), over the live state.

Reads come from the store (schedules, runs, instances, queue depths) and from this instance's
kernel (next fire times). Actions do what the CLI does, through the same store and runner
calls: pause and resume write the row's `enabled` (`piko schedule --disable/--enable`) and
reconcile at once, so this instance stops or resumes firing now rather than at its next poll;
run now is a manual run (`piko trigger`) and re-run the next attempt of a failed time (`piko
backfill --rerun-failed`), both queued for a worker in cluster execution; cancel is the
store's cancel request (`piko cancel`), recording who asked. Runs started here are not
awaited: the action answers at once and the run's row tells how it ended.
Imports only live.py of the app package.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from piko.app.live import LiveState
from piko.core.attempts import OnClaim
from piko.core.backfill import rerun_of
from piko.core.lifecycle import RERUNNABLE
from piko.core.types import (
    ActionOutcome,
    ActionResult,
    DataInterval,
    InstanceInfo,
    JobStatus,
    RunOutcome,
    RunRecord,
    RunStatus,
    ScheduleRow,
)
from piko.errors import PikoError
from piko.protocols import Store

log = logging.getLogger("piko.app")
FAILURES = (RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.ABANDONED)
SLICE = 500  # jobs described per turn of the loop
_OK, _STARTED = ActionOutcome.DONE, ActionOutcome.STARTED
_MISSING, _CONFLICT = ActionOutcome.NOT_FOUND, ActionOutcome.CONFLICT


class LiveConsole:
    def __init__(self, live: LiveState) -> None:
        self.live = live
        self._started_runs: set[asyncio.Task[RunOutcome]] = set()  # referenced until they end

    # -- OpsState, as the live state answers it ------------------------------------------------
    def is_started(self) -> bool:
        return self.live.is_started()

    def role(self) -> str:
        return self.live.role()

    def loop_lag_s(self) -> float:
        return self.live.loop_lag_s()

    async def readiness_checks(self) -> dict[str, str | None]:
        return await self.live.readiness_checks()

    # -- reads ---------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.live.clock.now()

    def is_cluster(self) -> bool:
        s = self.live.settings
        return self.live.is_worker_only or (s is not None and s.execution == "cluster")

    def admin_token(self) -> str | None:
        s = self.live.settings
        return s.http_admin_token if s is not None else None

    async def jobs(self) -> list[JobStatus]:
        store = self._store()
        registry = self.live.registry
        rows = {row.job_id: row for row in await store.load_schedules()}
        job_ids = sorted(set(rows) | {spec.job_id for spec in registry})
        last = await store.last_runs(job_ids)
        out: list[JobStatus] = []
        for start in range(0, len(job_ids), SLICE):  # 10,000 jobs: the loop gets a turn between slices
            out += [self._job_status(job_id, rows.get(job_id), last.get(job_id))
                    for job_id in job_ids[start:start + SLICE]]
            await asyncio.sleep(0)
        return out

    def _job_status(self, job_id: str, row: ScheduleRow | None, last: RunRecord | None) -> JobStatus:
        spec = self.live.registry.get(job_id)
        if row is None and spec is not None:  # not stored yet (the app has not started): the code's
            row = spec.default_schedule_row()
        kernel = self.live.kernel
        next_at = kernel.next_fire_at(job_id) if kernel is not None and row is not None and row.enabled else None
        return JobStatus(job_id, row.schedule_type if row else None, row.schedule_expr if row else None,
                         is_enabled=row.enabled if row else False, next_fire_at=next_at, last_run=last,
                         timezone=row.timezone if row else None, problem=self.live.book.problems.get(job_id),
                         is_registered=spec is not None, queue=spec.queue if spec else "default")

    async def runs(self, job_id: str | None, status: RunStatus | None, limit: int) -> list[RunRecord]:
        return await self._store().recent_runs(job_id, limit, status=status)

    async def failures(self, limit: int) -> list[RunRecord]:
        store = self._store()
        found = [run for status in FAILURES for run in await store.recent_runs(None, limit, status=status)]
        return sorted(found, key=lambda run: run.run_id, reverse=True)[:limit]

    async def instances(self) -> list[InstanceInfo]:
        return sorted(await self._store().list_instances(), key=lambda i: i.instance_id)

    async def queue_depths(self) -> dict[str, int]:
        return dict(sorted((await self._store().queue_depths()).items()))

    def _store(self) -> Store:
        if self.live.store is None:
            raise PikoError("the app has not opened its store yet")
        return self.live.store

    # -- actions -------------------------------------------------------------------------------
    async def run_now(self, job_id: str, by: str) -> ActionResult:
        refused = self._refuse_unstarted() or self._refuse_unknown(job_id)
        if refused is not None:
            return refused
        runner = self.live.runner
        if self.is_cluster():
            queued = await runner.queue_run(job_id)
            return ActionResult(_STARTED, f"run {queued.run_id} of {job_id}: {queued.error_message}", queued.run_id)
        run_id = await self._start(lambda on_claim: runner.run_job(job_id, on_claim=on_claim), f"manual run of {job_id}",
                                   by)
        return ActionResult(_STARTED, f"run {run_id} of {job_id} started on this instance", run_id)

    async def set_paused(self, job_id: str, is_paused: bool, by: str) -> ActionResult:
        verb = "pause" if is_paused else "resume"
        if not await self._store().set_schedule_enabled(job_id, not is_paused):
            return ActionResult(_MISSING, f"job {job_id!r} has no schedule row to {verb} (a job without a "
                                          f"schedule runs only when asked)")
        note = "no new fires; runs already going on are not stopped" if is_paused else "fires again"
        if self.live.is_started() and self.live.control is not None:
            try:  # this instance applies it now; the others at their next reconcile (poll_interval_s)
                await self.live.reconcile_once()
            except (PikoError, OSError) as exc:
                log.warning("job %s %sd, but reconciling at once failed (the next poll applies it): %s",
                            job_id, verb, exc)
        return ActionResult(_OK, f"{job_id}: {verb}d ({note})")

    async def cancel_run(self, run_id: int, by: str) -> ActionResult:
        store = self._store()
        run = await store.get_run(run_id)
        if run is None:
            return ActionResult(_MISSING, f"no run {run_id}")
        if run.status.is_final:
            return ActionResult(_CONFLICT, f"run {run_id} already ended {run.status.value}: nothing to cancel")
        cancelled, asked = await store.request_cancel(by=by, now=self.now(), run_id=run_id)
        if cancelled:
            return ActionResult(_OK, f"run {run_id} of {run.job_id} was queued: cancelled", run_id)
        if asked:
            return ActionResult(_OK, f"run {run_id} of {run.job_id} is running on {run.instance_id}: asked to stop "
                                     f"(it ends CANCELLED within about a second)", run_id)
        return ActionResult(_CONFLICT, f"run {run_id} ended meanwhile: nothing to cancel", run_id)

    async def rerun(self, run_id: int, by: str) -> ActionResult:
        refused = self._refuse_unstarted()
        if refused is not None:
            return refused
        store = self._store()
        prev = await store.get_run(run_id)
        if prev is None:
            return ActionResult(_MISSING, f"no run {run_id}")
        if prev.status not in RERUNNABLE:
            allowed = ", ".join(sorted(s.value for s in RERUNNABLE))
            return ActionResult(_CONFLICT, f"run {run_id} is {prev.status.value}: only a run that did not "
                                           f"succeed ({allowed}) is re-run")
        newest = await store.latest_run(prev.job_id, prev.scheduled_at)
        if newest is not None and newest.run_id != prev.run_id:
            return ActionResult(_CONFLICT, f"run {newest.run_id} (attempt {newest.attempt}, {newest.status.value}) "
                                           f"is newer for this time: re-run that one if it did not succeed")
        refused = self._refuse_unknown(prev.job_id)
        if refused is not None:
            return refused
        window = DataInterval(prev.data_start, prev.data_end) if prev.data_start and prev.data_end else None
        options: dict[str, Any] = {"kind": "backfill", "data_interval": window, **rerun_of(prev)}
        runner = self.live.runner
        what = f"run {run_id}'s time ({prev.scheduled_at.isoformat()}) as attempt {prev.attempt + 1}"
        if self.is_cluster():
            new_id = (await runner.queue_run(prev.job_id, prev.scheduled_at, **options)).run_id
            where = "queued for a worker"
        else:
            new_id = await self._start(lambda on_claim: runner.run_job(prev.job_id, prev.scheduled_at, **options,
                                                                       on_claim=on_claim), f"re-run of run {run_id}", by)
            where = "started on this instance"
        if new_id is None:  # the store claims a re-run only of a locked time whose newest run is `prev`
            return ActionResult(_CONFLICT, f"{prev.job_id}: {what} was not claimed: a newer run of that time came "
                                           f"first, or the time holds no run lock (a manual run: use Run now)")
        return ActionResult(_STARTED, f"{prev.job_id}: {what}: run {new_id} {where}", new_id)

    def _refuse_unstarted(self) -> ActionResult | None:
        if self.live.is_started() and self.live.runner is not None:
            return None
        return ActionResult(ActionOutcome.UNAVAILABLE, "the app is not running (not started yet, or stopping)")

    def _refuse_unknown(self, job_id: str) -> ActionResult | None:
        if job_id in self.live.registry:
            return None
        return ActionResult(_MISSING, f"no job {job_id!r} is registered in this app")

    async def _start(self, run: Callable[[OnClaim], Coroutine[Any, Any, RunOutcome]], what: str, by: str) -> int | None:
        """Start a run in the background (the runner records its end; stop() drains or cancels it)
        and wait only for its claim: its run id, or None when the store did not claim it."""
        claimed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        def on_claim(run_id: int | None) -> None:
            if not claimed.done():
                claimed.set_result(run_id)

        task = asyncio.create_task(run(on_claim), name=f"piko-{what.replace(' ', '-')}")
        self._started_runs.add(task)
        task.add_done_callback(lambda t: self._ended(t, what, by))
        either: set[asyncio.Future[Any]] = {claimed, task}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)  # a deadline leaves both running
        if claimed.done():
            return claimed.result()
        return None if task.cancelled() else task.result().run_id  # raises what kept it from a claim

    def _ended(self, task: asyncio.Task[RunOutcome], what: str, by: str) -> None:
        self._started_runs.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s (asked by %s) failed to start: %s: %s", what, by, type(error).__name__, error)
            return
        out = task.result()
        if out.run_id is None:
            log.info("%s (asked by %s): not run, its time was taken meanwhile", what, by)
        else:
            log.info("%s (asked by %s): run %s ended %s", what, by, out.run_id, out.status.value)
