"""Recording runs in the store: claims (lock + row), run ends, after-run bookkeeping.

A claim answers (run id, status): in leader mode the row is written as asked; in cluster
execution the store places it (placement.py): RUNNING here, PENDING for any worker, or SKIPPED
past the job's max_instances in the whole cluster.

Claims and ends made in one loop iteration share one store call (batching.py). A claim the
store does not take means the run did not start: the fire goes back to the kernel
(`requeue`), to be tried again or recorded MISSED. An end the store does not take means the
run DID happen: it waits in PendingWrites and is retried for as long as the process lives,
and so does the bookkeeping after it. Imports no store implementation and not the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from piko.core.batching import Batcher
from piko.core.pending_writes import RETRYABLE, PendingWrites
from piko.core.run_metrics import RunMetrics
from piko.core.types import RunClaim, RunFinish, RunOutcome, RunRecord, RunStatus
from piko.errors import LeaseLost, StoreError
from piko.protocols import Clock, Store

log = logging.getLogger("piko.runner")
MAX_UNRECORDED = 100_000  # fires remembered as "could not be recorded" (to log each once)


Placed = tuple[int | None, RunStatus]  # the run id (None: the time is taken), and the status written


class RunRecorder:
    def __init__(self, store: Store, clock: Clock, metrics: RunMetrics,
                 requeue: Callable[[str, datetime], None] | None = None, *, is_cluster: bool = False) -> None:
        self._store = store
        self._clock = clock
        self._m = metrics
        self._requeue = requeue  # a fire that could not be recorded goes back to the kernel
        # late-bound (lambda): the store's methods are looked up per call, as a test may wrap them
        self._claims: Batcher[RunClaim, Placed] = Batcher(self._send_placements if is_cluster else self._send_claims)
        self._finishes: Batcher[RunFinish, bool] = Batcher(self._send_finishes)
        self._pending = PendingWrites(self._send_pending, clock, on_size=metrics.pending_records,
                                      on_lost=metrics.lost_records)
        self._unrecorded: set[tuple[str, datetime]] = set()

    # -- claims --------------------------------------------------------------------------
    def submit_claim(self, claim: RunClaim) -> asyncio.Future[Placed]:
        """The claim's answer as a plain future (the hot path: no coroutine per fire)."""
        return self._claims.submit(claim, group=claim.fence)

    async def _send_claims(self, claims: Sequence[RunClaim]) -> list[Placed]:
        ids = await self._store.claim_runs(claims)  # late-bound: a test may wrap the store's method
        return [(run_id, claim.status) for run_id, claim in zip(ids, claims, strict=True)]

    async def _send_placements(self, claims: Sequence[RunClaim]) -> list[Placed]:
        return await self._store.place_runs(claims)

    async def claim(self, claim: RunClaim) -> Placed:
        """(run id, status written); run id None if the time is taken or the claim failed (then it
        is requeued)."""
        try:
            placed = await self.submit_claim(claim)
        except (LeaseLost, StoreError, OSError) as exc:
            self.claim_failed(claim, exc)
            return None, claim.status
        if self._unrecorded:
            self._unrecorded.discard((claim.job_id, claim.scheduled_at))
        return placed

    def claim_failed(self, claim: RunClaim, exc: BaseException) -> None:
        key = (claim.job_id, claim.scheduled_at)
        if isinstance(exc, LeaseLost):
            log.warning("job %s at %s not started here: %s", claim.job_id, claim.scheduled_at.isoformat(), exc)
        elif key not in self._unrecorded:  # once per fire, not once per retry
            log.error("job %s at %s could not be recorded, so it did not run yet (will retry): %s",
                      claim.job_id, claim.scheduled_at.isoformat(), exc)
        self._unrecorded.add(key)
        if len(self._unrecorded) > MAX_UNRECORDED:
            self._unrecorded.clear()
        if claim.kind == "schedule" and claim.attempt == 1 and self._requeue is not None:
            self._requeue(claim.job_id, claim.scheduled_at)  # tried again, or recorded as missed, later

    def is_unrecorded(self, claim: RunClaim) -> bool:
        """An earlier claim of this fire made here failed (its row may yet exist: own_lost_claim)."""
        return (claim.job_id, claim.scheduled_at) in self._unrecorded

    async def own_lost_claim(self, claim: RunClaim) -> RunRecord | None:
        """The row of an earlier claim of this fire made here that the store took though its answer
        was lost (the server committed, then went away): found when the fire, tried again, finds its
        time taken. None when the taker is another instance or another attempt."""
        if not self.is_unrecorded(claim):
            return None
        try:
            run = await self._store.latest_run(claim.job_id, claim.scheduled_at)
        except (StoreError, OSError) as exc:
            self.claim_failed(claim, exc)  # still not known: the fire is tried again later
            return None
        self._unrecorded.discard((claim.job_id, claim.scheduled_at))
        if run is None or run.instance_id != claim.instance_id or run.attempt != claim.attempt:
            return None
        log.warning("job %s at %s: its claim was written though the store's answer was lost; run %s is %s",
                    claim.job_id, claim.scheduled_at.isoformat(), run.run_id, run.status.value)
        return run

    async def record_final(self, claim: RunClaim, *, is_quiet: bool = False) -> int | None:
        """A row born final (MISSED, SKIPPED): recorded, logged (unless the caller sums them up), counted."""
        run_id, _ = await self.claim(claim)
        if run_id is not None:
            if not is_quiet:
                log.warning("job %s at %s %s: %s", claim.job_id, claim.scheduled_at.isoformat(), claim.status.value,
                            claim.error_message)
            self._m.count(claim.job_id, claim.status)
        return run_id

    async def drain_claims(self, budget_s: float) -> None:
        await self._claims.drain(budget_s)

    # -- ends and bookkeeping --------------------------------------------------------------
    async def finish(self, run_id: int, outcome: RunOutcome, claim_token: int | None = None) -> None:
        """Record how the run ended; if the store does not take it, it waits in PendingWrites."""
        finish = RunFinish(run_id, outcome.status, self._clock.now(), outcome.error_type, outcome.error_message,
                           outcome.duration_s, error_traceback=outcome.error_traceback, claim_token=claim_token,
                           result=outcome.result_json)
        try:
            if await self._finishes.submit(finish):
                self._refused(finish, outcome.job_id)
        except RETRYABLE as exc:
            self._pending.add_finish(finish, outcome.job_id, outcome.scheduled_at, exc)
        self._m.count(outcome.job_id, outcome.status)

    async def _send_finishes(self, finishes: Sequence[RunFinish]) -> list[bool]:
        """True for each end the store refused (the run had moved on)."""
        refused = set(await self._store.finish_runs(finishes))
        return [f.run_id in refused for f in finishes]

    async def _send_pending(self, finishes: Sequence[RunFinish]) -> None:
        refused = set(await self._store.finish_runs(finishes))
        for f in finishes:
            if f.run_id in refused:
                self._refused(f, None)

    def _refused(self, finish: RunFinish, job_id: str | None) -> None:
        """A late end over a run that is no longer this instance's: refused by the store, said here."""
        log.warning("run %s%s: its end (%s) was not recorded: the run had already ended, or this instance was "
                    "silent past orphan_after_s and the run was handed to a new attempt", finish.run_id,
                    f" (job {job_id})" if job_id else "", finish.status.value)
        self._m.refused_result()

    async def bookkeeping(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        """A write after a run (a watermark, a one-shot's row): now, or queued behind earlier ones."""
        if self._pending.has_writes:  # earlier bookkeeping waits: this one must not overtake it
            self._pending.add_write(what, write, None)
            return
        try:
            await write()
        except RETRYABLE as exc:
            self._pending.add_write(what, write, exc)

    def holds_end(self, job_id: str, scheduled_at: datetime) -> bool:
        """A run of this time ended here and its end still waits for the store."""
        return self._pending.holds(job_id, scheduled_at)

    async def close(self, budget_s: float) -> None:
        """Write what waits for the store within the budget; log the rest."""
        await self._pending.close(budget_s)
