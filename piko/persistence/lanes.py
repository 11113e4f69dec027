"""Per-sink lanes: batch a sink's intents, write them, retry, spill, dead-letter.

Rules. A lane's worker sends a batch when it is full, its oldest intent is old enough, or
a flush/stop is waiting. A failing batch is halved level by level; once part of it gets
through, the rest is bisected until each intent that fails alone is dead-lettered. A batch
of which nothing gets through in PROBE_PARTS parts, or a write that timed out (never split:
each part would wait as long), means the sink is down: capped exponential backoff with jitter, then spill. Only live batches decide
whether a lane is failing or stalled; replayed ones never divert live traffic to disk.
The writer owns the queue bookkeeping and is told through `finish`; this module must not
import piko.persistence.writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from piko.core.backoff import backoff
from piko.persistence import spill as spill_files
from piko.persistence.codec import CodecError
from piko.persistence.intent import WriteIntent
from piko.persistence.journal import Segment
from piko.persistence.records import intent_body
from piko.persistence.replay import Delivery
from piko.persistence.sink_base import RejectedIntents
from piko.protocols import Clock, Sink

_DRAIN_PAUSE_S = 0.5  # between tries to spill while stopping, when neither the sink nor the disk takes
PROBE_PARTS = 4  # failed parts, none through, that make a sink look down rather than poisoned
log = logging.getLogger("piko.persistence")
_FOREVER = 3600.0


class Envelope:
    """An accepted intent; `is_live` ones hold lane room and count for flush()."""

    __slots__ = ("intent", "segment", "journal_seq", "is_live", "is_done")

    def __init__(self, intent: WriteIntent, is_live: bool = True) -> None:
        self.intent = intent
        self.segment: Segment | None = None  # journal mode: where the intent is durable
        self.journal_seq = 0
        self.is_live = is_live
        self.is_done = False


class Lane:
    """One sink's queue, worker and health; asyncio parts are made by `activate()`."""

    def __init__(self, sink: Sink) -> None:
        self.sink, self.name = sink, sink.name
        registered = getattr(sink, "registered_types", None)
        self.types: dict[str, type] = registered() if callable(registered) else {}
        self.pending: deque[Envelope] = deque()
        self.in_flight: list[Envelope] = []
        self.held = 0  # pending + in flight + being spilled: what counts against `cap`
        self.cap = self.batch_max = 1
        self.first_at: float | None = None  # monotonic arrival of the oldest pending intent
        self.write_started: float | None = None  # a live batch began (waiting for the lock counts)
        self.is_failing = False  # the latest live batch failed and nothing succeeded since
        self.ok_writes = 0  # successful write calls, live or replayed: evidence the sink is up
        self.is_backing_off = False  # the worker waits before retrying a failed batch
        self.worker: asyncio.Task[None] | None = None

    def activate(self) -> None:
        self.has_work, self.has_room = asyncio.Event(), asyncio.Event()
        self.room_turn = asyncio.Lock()  # producers waiting for room, one watching at a time
        self.write_lock = asyncio.Lock()


@dataclass(frozen=True)
class LanePolicy:
    """How long lanes wait, how often they retry and when a write counts as hung."""

    batch_timeout_s: float
    retry_max: int
    retry_base_s: float
    retry_cap_s: float
    write_timeout_s: float
    stall_s: float


Finish = Callable[[Lane, list[Envelope]], None]


class LaneDriver:
    """Runs every lane's worker and carries its envelopes to the sink, a spill file or the dead letters.

    `is_draining` (stop() has begun), `urgent` (flush() calls waiting) and `stopping` are set
    by the writer; `finish` marks envelopes done, `on_recovered` says a failing sink is back.
    """

    def __init__(self, policy: LanePolicy, clock: Clock, spill: spill_files.SpillDir, metrics: Any,
                 finish: Finish, on_recovered: Callable[[], None], on_change: Callable[[], None]) -> None:
        self._policy, self._clock, self._spill, self._metrics = policy, clock, spill, metrics
        self._finish, self._on_recovered, self._on_change = finish, on_recovered, on_change
        self.is_draining = False
        self.urgent = 0  # lanes send what they have without waiting for age
        self.stopping: asyncio.Event | None = None

    def is_stalled(self, lane: Lane) -> bool:
        """Producers should spill rather than wait: a live write hangs, or the worker waits to retry
        a failed batch. A write under way, or one about to start, is worth waiting for."""
        started = lane.write_started
        if started is not None:
            return self._clock.monotonic() - started > self._policy.stall_s
        return lane.is_backing_off

    async def wait_for_room(self, lane: Lane, look_up: Callable[[], Lane]) -> Lane:
        """Wait until `lane` has room, spilling its backlog if it stalled. One producer at a time
        watches; the rest queue on `room_turn`, so room freed by a batch wakes one, not all."""
        async with lane.room_turn:
            lane = look_up()
            while lane.held >= lane.cap:
                if lane.pending and self.is_stalled(lane):
                    await self.spill_backlog(lane)
                    continue
                lane.has_room.clear()
                await self._clock.wait(lane.has_room, self._policy.stall_s / 2)
                lane = look_up()
        return lane

    # -- the lane worker ---------------------------------------------------------------
    def start_worker(self, lane: Lane, *, should_open: bool = False) -> None:
        """Run the lane's worker; `should_open` for a sink registered after start (not opened yet)."""
        lane.worker = asyncio.create_task(self._lane_loop(lane, should_open), name=f"piko-writer-{lane.name}")

    async def _lane_loop(self, lane: Lane, should_open: bool) -> None:
        if should_open:
            try:
                await call_hook(lane.sink, "open")
            except Exception:  # its writes will fail and spill until it can work
                log.exception("persistence: sink %r failed to open", lane.name)
        is_disk_failing = False
        while batch := await self._next_batch(lane):
            lane.in_flight = batch
            try:
                await self._deliver(lane, batch)
                is_disk_failing = False
            except Exception as exc:  # the disk failed us too: keep the intents queued and wait
                if not is_disk_failing:  # once per outage, not once per retry
                    log.exception("persistence: cannot spill or dead-letter for sink %r; retrying", lane.name)
                else:
                    log.debug("persistence: still cannot spill for sink %r: %r", lane.name, exc)
                is_disk_failing = True
                self._requeue(lane, batch)
                lane.in_flight = []  # back in pending: counted once while we wait
                # while stopping, `stopping` is set: pause anyway, or the retries spin until the budget ends
                await self._clock.wait(None if self.is_draining else self.stopping,
                                       min(self._policy.retry_cap_s, _DRAIN_PAUSE_S) if self.is_draining
                                       else self._policy.retry_cap_s)
            lane.in_flight = []
            self._on_change()

    def _requeue(self, lane: Lane, envelopes: list[Envelope]) -> None:
        lane.pending.extendleft(reversed([e for e in envelopes if not e.is_done]))
        lane.first_at = lane.first_at or self._clock.monotonic()

    async def _next_batch(self, lane: Lane) -> list[Envelope]:
        """Wait until the lane has a full batch, its oldest intent is old enough, or a flush/stop."""
        while True:
            size = len(lane.pending)
            if size >= lane.batch_max or (size and (self.is_draining or self.urgent)):
                break
            if not size and self.is_draining:
                return []
            now = self._clock.monotonic()
            wait = (lane.first_at or now) + self._policy.batch_timeout_s - now if size else _FOREVER
            if wait <= 0:
                break
            lane.has_work.clear()
            await self._clock.wait(lane.has_work, wait)
        take = min(size, lane.batch_max)
        batch = [lane.pending.popleft() for _ in range(take)]
        if not lane.pending:
            lane.first_at = None
        return batch

    # -- delivery ----------------------------------------------------------------------
    async def _deliver(self, lane: Lane, batch: list[Envelope]) -> None:
        """Write with retries and capped exponential backoff; spill what the sink never takes."""
        policy = self._policy
        attempt = 0
        while batch:
            batch, _ = await self.write_round(lane, batch)
            if not batch:
                return
            attempt += 1
            if attempt > policy.retry_max or self.is_draining:
                await self.spill(lane, batch)
                return
            if self._metrics is not None:
                self._metrics.persistence_retried_total.labels(sink=lane.name).inc()
            delay_s = backoff(attempt, policy.retry_base_s, policy.retry_cap_s,
                              draw=random.random(), jitter=(0.5, 1.0))  # jitter: no herd
            lane.is_backing_off = True
            try:
                await self._clock.wait(self.stopping, delay_s)
            finally:
                lane.is_backing_off = False

    async def write_round(self, lane: Lane, batch: list[Envelope]) -> tuple[list[Envelope], Exception | None]:
        """Write once, isolating poison intents: ([], None), or (the batch, error) if the sink looks down.

        A failed batch is halved, level by level, until some part gets through (the sink is up:
        every part that failed holds poison, bisected to the intents that fail alone) or
        PROBE_PARTS parts failed with none through (the sink looks down; at most 7 calls), so a
        few poison intents spread over the batch are isolated too, not only one."""
        error = await self._attempt(lane, batch)
        if error is None:
            return [], None
        if len(batch) == 1 or isinstance(error, TimeoutError):
            return batch, error
        failed: list[tuple[list[Envelope], Exception]] = [(batch, error)]
        try:
            while True:
                level: list[tuple[list[Envelope], Exception | None]] = []
                for part, err in failed:
                    if len(part) == 1:  # cannot be split: keeps its error
                        level.append((part, err))
                        continue
                    mid = len(part) // 2
                    for half in (part[:mid], part[mid:]):
                        level.append((half, await self._attempt(lane, half)))
                hung = next((err for _, err in level if isinstance(err, TimeoutError)), None)
                if hung is not None:
                    raise hung
                failed = [(part, err) for part, err in level if err is not None]
                if len(failed) < len(level):  # some part got through: the failed ones hold poison
                    for part, err in failed:
                        await self.isolate(lane, part, err)
                    return [], None
                if len(failed) >= PROBE_PARTS or all(len(part) == 1 for part, _ in failed):
                    return batch, failed[0][1]
        except TimeoutError as exc:  # it hung meanwhile: what is not done yet waits like a down sink's
            return [e for e in batch if not e.is_done], exc

    async def isolate(self, lane: Lane, part: list[Envelope], error: Exception) -> None:
        """`part` failed with `error` while the sink is up: bisect it, dead-letter what fails alone.

        A timeout stops it (raises the TimeoutError): a hung sink would make every part wait."""
        if isinstance(error, TimeoutError):
            raise error
        if len(part) == 1:
            await self._dead_letter(lane, [(part[0], error)])
            return
        mid = len(part) // 2
        for half in (part[:mid], part[mid:]):
            err = await self._attempt(lane, half)
            if err is not None:
                await self.isolate(lane, half, err)

    async def _attempt(self, lane: Lane, batch: list[Envelope]) -> Exception | None:
        """One write_batch call: None when the batch is done (rejected intents are dead-lettered)."""
        rejected: dict[int, Exception] = {}
        is_live = batch[0].is_live
        if is_live:
            lane.write_started = self._clock.monotonic()
        try:
            async with lane.write_lock:
                try:
                    await asyncio.wait_for(lane.sink.write_batch([e.intent for e in batch]),
                                           self._policy.write_timeout_s)
                except RejectedIntents as exc:
                    rejected = {id(intent): _as_error(err) for intent, err in exc.rejected}
                except asyncio.CancelledError as exc:
                    error = _sink_cancelled(exc)  # raises when it is our own task being cancelled
                    self._note_failure(lane, len(batch), error, is_live)
                    return error
                except Exception as exc:
                    self._note_failure(lane, len(batch), exc, is_live)
                    return exc
        finally:
            if is_live:
                lane.write_started = None
        lane.ok_writes += 1
        written = [e for e in batch if id(e.intent) not in rejected] if rejected else batch
        self._finish(lane, written)
        if self._metrics is not None:
            self._metrics.persistence_written_total.labels(sink=lane.name).inc(len(written))
        if lane.is_failing:
            lane.is_failing = False
            self._on_recovered()  # the sink is back: deliver its spill files now
        if rejected:
            await self._dead_letter(lane, [(e, rejected[id(e.intent)]) for e in batch if id(e.intent) in rejected])
        return None

    def _note_failure(self, lane: Lane, size: int, exc: Exception, is_live: bool) -> None:
        if self._metrics is not None:
            self._metrics.persistence_sink_failure_total.labels(sink=lane.name).inc()
        if not is_live:  # replay reports its own outcome; a poison spill file must not divert live traffic
            log.debug("persistence: sink %r failed a replayed batch of %d: %r", lane.name, size, exc)
            return
        level = logging.DEBUG if lane.is_failing else logging.WARNING  # once per outage
        lane.is_failing = True
        log.log(level, "persistence: sink %r failed a batch of %d: %r", lane.name, size, exc)

    # -- spill and dead letters --------------------------------------------------------
    async def spill_backlog(self, lane: Lane) -> None:
        """A stalled lane's queue goes to disk, so its producers go on (they wait if the disk fails)."""
        backlog = list(lane.pending)
        lane.pending.clear()
        lane.first_at = None
        try:
            await self.spill(lane, backlog)
        except Exception:  # the disk failed: nothing was marked done, the producers wait instead
            log.exception("persistence: cannot spill the backlog of sink %r", lane.name)
            self._requeue(lane, backlog)
            await self._clock.wait(self.stopping, self._policy.retry_cap_s)

    async def spill(self, lane: Lane, envelopes: list[Envelope]) -> None:
        """Write envelopes to a spill file (OSError if the disk fails: nothing is marked done)."""
        bodies: list[bytes] = []
        spilled: list[Envelope] = []
        unencodable: list[tuple[Envelope, Exception]] = []
        for env in envelopes:
            try:
                bodies.append(intent_body(env.intent))
                spilled.append(env)
            except CodecError as exc:  # a dead letter keeps its repr and says why
                unencodable.append((env, exc))
        if bodies:
            await asyncio.to_thread(self._spill.spill, lane.name, bodies)
        self._finish(lane, spilled)
        if self._metrics is not None:
            self._metrics.persistence_fallback_total.inc(len(spilled))
        if unencodable:
            await self._dead_letter(lane, unencodable)
        self._on_change()

    async def _dead_letter(self, lane: Lane, items: list[tuple[Envelope, Exception]]) -> None:
        bodies = [intent_body(env.intent, err) for env, err in items]
        for env, err in items:
            log.error("persistence: sink %r cannot take intent %r, dead-lettered: %r",
                      lane.name, env.intent.key, err)
        await asyncio.to_thread(self._spill.dead_letter, lane.name, bodies)
        self._finish(lane, [env for env, _ in items])


class LaneReplayPort:
    """The lanes as replay sees them (replay.ReplayTarget): replayed envelopes hold no lane room."""

    def __init__(self, driver: LaneDriver, lanes: Mapping[str, Lane]) -> None:
        self._driver, self._lanes = driver, lanes

    def types_for(self, sink: str) -> Mapping[str, type] | None:
        lane = self._lanes.get(sink)
        return None if lane is None or lane.worker is None else lane.types

    async def deliver(self, sink: str, intents: list[WriteIntent]) -> Delivery:
        envelopes = [Envelope(intent, is_live=False) for intent in intents]
        unwritten, error = await self._driver.write_round(self._lanes[sink], envelopes)
        return Delivery([e.intent for e in unwritten], error, isinstance(error, TimeoutError))

    async def isolate(self, sink: str, intents: list[WriteIntent], error: Exception) -> None:
        await self._driver.isolate(self._lanes[sink], [Envelope(i, is_live=False) for i in intents], error)

    def health(self, sink: str) -> tuple[int, bool]:
        lane = self._lanes.get(sink)
        return (0, False) if lane is None else (lane.ok_writes, lane.is_failing)


async def close_sinks(lanes: list[Lane], timeout_s: float) -> None:
    """Call the sinks' close() hooks together, at most `timeout_s`: a hung one is cancelled and logged."""
    hooks = {asyncio.create_task(call_hook(lane.sink, "close")): lane for lane in lanes}
    if not hooks:
        return
    done, hung = await asyncio.wait(hooks, timeout=max(0.1, timeout_s))
    for task in hung:
        task.cancel()
        log.error("persistence: sink %r did not close within the shutdown budget", hooks[task].name)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("persistence: sink %r failed to close: %r", hooks[task].name, task.exception())


async def call_hook(sink: Sink, name: str) -> None:
    hook = getattr(sink, name, None)
    if callable(hook):
        await hook()


def _sink_cancelled(exc: asyncio.CancelledError) -> Exception:
    """A CancelledError out of write_batch: ours to propagate when our own task is being
    cancelled (shutdown), else the sink's failure like any other (a lane must not die of it)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+; 3.10 cannot tell, so propagates
    if task is None or cancelling is None or cancelling():
        raise exc
    return RuntimeError(f"the sink raised CancelledError({exc})")


def _as_error(err: BaseException) -> Exception:
    return err if isinstance(err, Exception) else RuntimeError(repr(err))
