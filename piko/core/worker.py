"""Cluster execution on one instance: its worker, its share of what it places, re-queued runs.

QueueWorker claims queued runs of its queues up to its free capacity, about its share of what
is queued per claim (queued / live workers of its queues, so the workers a fire wakes all get
some), and runs them here. Its polling adapts: after a full claim it polls again at once, after one that
found work within `poll_min_s` (5 ms); an empty poll doubles the wait up to `poll_max_s`
(0.5 s: at most 2 queries/s per idle worker). A hint restarts the fast polls: a fire due now
(the kernel sees every schedule, leader or not), a run queued by this instance, a run ended here.
LocalShare decides which of the fires this instance places it starts itself: about its share
of the queue's live workers, only with free capacity; the others are queued (PENDING).
After each sweep the leader re-queues runs of dead instances that have retries left.
Imports no store implementation, no component and not the app.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from piko.core.placement import JobLimits
from piko.core.runs import Runner
from piko.core.types import JobOptions, RunClaim, RunStatus
from piko.errors import PikoError
from piko.protocols import Clock, Store

log = logging.getLogger("piko.worker")
POLL_MIN_S = 0.005
REQUEUE_WITHIN = timedelta(minutes=10)  # an abandoned run older than this is left as it is


def new_token() -> int:
    """A claim's token: random, positive, never 0."""
    return secrets.randbits(62) | 1


class LocalShare:
    """Shapes this instance's claims in cluster execution (attempts.ClaimShaper)."""

    def __init__(self, queues: tuple[str, ...], capacity: int, running: Callable[[], int],
                 consumers: Callable[[str], int]) -> None:
        self._queues, self._capacity = set(queues), capacity
        self._running, self._consumers = running, consumers
        self._turn: Counter[str] = Counter()

    def shape(self, claim: RunClaim, opts: JobOptions) -> RunClaim:
        queue = opts.queue
        if claim.kind in ("manual", "backfill"):  # explicit runs run where they are asked, uncounted
            return replace(claim, queue=queue)
        has_room = queue in self._queues and self._running() < self._capacity
        if claim.kind == "schedule" and has_room:  # a new fire: every n-th one of n live workers
            turn = self._turn[queue]
            self._turn[queue] += 1
            has_room = turn % max(1, self._consumers(queue)) == 0
        if has_room:
            return replace(claim, status=RunStatus.RUNNING, queue=queue, max_instances=opts.max_instances,
                           claim_token=new_token())
        return replace(claim, status=RunStatus.PENDING, queue=queue, max_instances=opts.max_instances,
                       claim_token=None)


class QueueWorker:
    def __init__(self, store: Store, clock: Clock, runner: Runner, *, instance_id: str, queues: tuple[str, ...],
                 capacity: int, options_for: Callable[[str], JobOptions], knows: Callable[[str], bool],
                 metrics: Any = None, poll_max_s: float = 0.5, poll_min_s: float = POLL_MIN_S,
                 consumers: Callable[[], int] = lambda: 1) -> None:
        self._store, self._clock, self._runner = store, clock, runner
        self.instance_id, self.queues, self.capacity = instance_id, queues, capacity
        self._options_for, self._knows = options_for, knows
        self._metrics = metrics
        self._poll_min, self._poll_max = poll_min_s, poll_max_s
        self._interval = poll_min_s
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumers = consumers  # live workers of its queues: a claim takes about its share
        self._rng = random.Random()
        self._errors = 0
        self.claimed = 0

    def nudge(self) -> None:
        """Work may be waiting: poll soon, and fast for a while."""
        self._interval = self._poll_min
        self._wake.set()

    def limits_for(self, job_id: str) -> JobLimits | None:
        if not self._knows(job_id):
            return None
        opts = self._options_for(job_id)
        grace = None if opts.misfire_grace_s is None else timedelta(seconds=opts.misfire_grace_s)
        return JobLimits(opts.max_instances, grace)

    async def __aenter__(self) -> QueueWorker:
        self._task = asyncio.create_task(self._claim_loop(), name="piko-worker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5.0)
            self._task.cancel()

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            free = 0
            try:
                free = self.capacity - self._runner.load()
                if free > 0:
                    await self.claim_once(free)
            except Exception:  # a bug must not stop this instance from taking work: say it, slow down, go on
                log.exception("worker: claiming queued runs failed unexpectedly; retrying")
                self._interval = self._poll_max
            self._wake.clear()
            await self._clock.wait(self._wake, self._interval if free > 0 else self._poll_max)

    async def claim_once(self, free: int) -> int:
        """One claim of up to `free` runs; how many started here. Sets the next poll's wait."""
        try:
            got = await self._store.claim_queued(self.instance_id, self.queues, free, new_token(), self.limits_for,
                                                 self._clock.now(), share=max(1, self._consumers()))
        except (PikoError, OSError) as exc:
            self._errors += 1
            if self._errors in (1, 10) or self._errors % 100 == 0:
                log.warning("worker: claiming queued runs failed (%d time(s)), retrying: %s", self._errors, exc)
            self._interval = self._poll_max
            return 0
        self._errors = 0
        for run in got.started:
            self._runner.execute_claimed(run)
            self._observe(run)
        for run in got.missed:
            log.warning("job %s at %s MISSED: %s", run.job_id, run.scheduled_at.isoformat(), run.error_message)
            if self._metrics is not None:
                self._metrics.job_run_total.labels(job_id=run.job_id, status=RunStatus.MISSED.value).inc()
        self.claimed += len(got.started)
        if got.started and len(got.started) >= free:  # a full batch: more may wait; a breath lets the others in
            self._interval = self._rng.uniform(0.0, self._poll_min)
        elif got.started or got.missed:
            self._interval = self._poll_min * self._rng.uniform(0.5, 1.5)
        else:  # jittered, so the workers one fire woke do not poll in step
            self._interval = min(max(self._interval * 2, self._poll_min) * self._rng.uniform(0.8, 1.2),
                                 self._poll_max)
        return len(got.started)

    def _observe(self, run: Any) -> None:
        if self._metrics is None:
            return
        self._metrics.runs_claimed_total.labels(instance=self.instance_id).inc()
        if run.enqueued_at is not None:
            late = (self._clock.now() - run.enqueued_at).total_seconds()
            self._metrics.run_claim_latency_seconds.observe(max(0.0, late))


async def requeue_abandoned(store: Store, clock: Clock, options_for: Callable[[str], JobOptions],
                            knows: Callable[[str], bool], instance_id: str) -> int:
    """Runs of dead instances with retries left go back on the queue as their next attempt (once:
    the store's re-run check refuses a second one; the old row loses its claim token)."""
    now = clock.now()
    claims = []
    for run in await store.recent_runs(status=RunStatus.ABANDONED, limit=1000):
        if (run.claim_token is None or not knows(run.job_id) or run.finished_at is None
                or now - run.finished_at > REQUEUE_WITHIN or run.attempt > options_for(run.job_id).retries):
            continue
        claims.append(RunClaim(run.job_id, run.scheduled_at, RunStatus.PENDING, now, instance_id, attempt=run.attempt + 1,
                               kind="retry", take_lock=False, rerun_if=frozenset({RunStatus.ABANDONED}),
                               data_start=run.data_start, data_end=run.data_end, queue=run.queue))
    if not claims:
        return 0
    placed = [run_id for run_id, _ in await store.place_runs(claims) if run_id is not None]
    if placed:
        log.warning("re-queued %d run(s) of stopped instances as their next attempt", len(placed))
    return len(placed)


class CancelWatch:
    """Reads the cancel requests for runs of this instance every `every_s` while any runs here."""

    def __init__(self, store: Store, clock: Clock, runner: Runner, instance_id: str, every_s: float = 1.0) -> None:
        self._store, self._clock, self._runner = store, clock, runner
        self._instance_id, self._every_s = instance_id, every_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CancelWatch:
        self._task = asyncio.create_task(self._watch_loop(), name="piko-cancel-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5.0)
            self._task.cancel()

    async def _watch_loop(self) -> None:
        while not await self._clock.wait(self._stop, self._every_s):
            if not self._runner.running_count():
                continue
            try:
                for run_id, by in await self._store.cancel_requests(self._instance_id):
                    if self._runner.cancel_run(run_id, by):
                        log.warning("run %s: cancelled on request (%s)", run_id, by or "no name given")
            except (PikoError, OSError) as exc:
                log.debug("reading cancel requests failed: %s", exc)


__all__ = ["CancelWatch", "LocalShare", "QueueWorker", "new_token", "requeue_abandoned"]
