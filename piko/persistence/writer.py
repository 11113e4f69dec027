"""PersistenceWriter: jobs enqueue WriteIntents; per-sink lanes (lanes.py) batch, retry and spill them.

Rules. Each sink has its own lane (queue, worker, health), so a slow or failing sink
never stalls another: persist_queue_max is split evenly between the lanes, enqueue waits
while its lane is full (back-pressure), and when the lane's sink is failing or a write
has hung longer than `stall_s`, the lane's backlog goes to a spill file instead.
Spill files are replayed at start-up, periodically, and as soon as a failing sink recovers.
Enqueue before start() or after stop() raises WriterClosed: nothing is buffered outside a running writer.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from piko.clock import SystemClock
from piko.errors import ConfigError, UnknownSink, WriterClosed, WriterFull
from piko.persistence import spill as spill_files
from piko.persistence.intent import WriteIntent
from piko.persistence.journal import Journal, recover_journal
from piko.persistence.lanes import Envelope, Lane, LaneDriver, LanePolicy, backoff_s
from piko.ports import Clock, Sink

__all__ = ["DURABILITY_MODES", "PersistenceWriter", "UnknownSink", "WriterClosed", "backoff_s", "current_run_id"]

log = logging.getLogger("piko.persistence")
current_run_id: ContextVar[int | str | None] = ContextVar("current_run_id", default=None)
DURABILITY_MODES = ("memory", "journal")


class PersistenceWriter:
    """Takes WriteIntents from any number of jobs and never loses an accepted one."""

    def __init__(self, *, queue_max: int = 10000, batch_size: int = 500, batch_timeout_s: float = 0.2,
                 spill_dir: str | Path = "piko_spill", durability: str = "memory", retry_max: int = 5,
                 retry_base_s: float = 0.2, retry_cap_s: float = 10.0, replay_interval_s: float = 30.0,
                 metrics: Any = None, clock: Clock | None = None, write_timeout_s: float = 30.0,
                 stall_s: float = 2.0) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigError(f"persist_durability must be one of {DURABILITY_MODES}, got {durability!r}")
        if queue_max < 1 or batch_size < 1 or batch_timeout_s <= 0 or retry_max < 0:
            raise ConfigError("persist_queue_max and persist_batch_size must be >= 1, "
                              "persist_batch_timeout_s > 0 and retry_max >= 0")
        self._queue_max, self._batch_size, self._durability = queue_max, batch_size, durability
        self._replay_interval_s, self._stall_s = replay_interval_s, stall_s
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._spill = spill_files.SpillDir(spill_dir, self._clock)
        policy = LanePolicy(batch_timeout_s, retry_max, retry_base_s, retry_cap_s, write_timeout_s, stall_s)
        self._driver = LaneDriver(policy, self._clock, self._spill, metrics, self._finish,
                                  self._wake_replay, self._set_gauge)
        self._lanes: dict[str, Lane] = {}
        self._journal: Journal | None = None
        self._is_running = False
        self._outstanding = 0  # live envelopes not yet written, spilled or dead-lettered
        self._by_run: dict[int | str, int] = {}
        self._run_done: dict[int | str, asyncio.Event] = {}
        self._replay_task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # made by a flush() that waits for everything
        self._replay_now: asyncio.Event | None = None

    # -- registration and enqueue ------------------------------------------------------
    def register_sink(self, sink: Sink) -> None:
        """Add a sink; allowed before and after start()."""
        if sink.name in self._lanes:
            raise ConfigError(f"a sink named {sink.name!r} is already registered; sink names must be unique")
        lane = self._lanes[sink.name] = Lane(sink)
        cap = max(1, self._queue_max // len(self._lanes))
        for each in self._lanes.values():
            each.cap, each.batch_max = cap, max(1, min(self._batch_size, cap // 2))
        if self._is_running:
            lane.activate()
            self._driver.start_worker(lane)

    @property
    def queue_size(self) -> int:
        """Intents held in memory (queued or being written) across all sinks."""
        return sum(lane.held for lane in self._lanes.values())

    async def enqueue(self, intent: WriteIntent) -> None:
        """Accept `intent`; waits while its sink's lane is full. In journal mode, returns after fsync."""
        lane = self._lane(intent)
        while lane.held >= lane.cap:
            if lane.pending and self._driver.is_stalled(lane):
                await self._driver.spill_backlog(lane)
                continue
            lane.has_room.clear()
            await self._clock.wait(lane.has_room, self._stall_s / 2)
            lane = self._lane(intent)  # the writer may have stopped meanwhile
        lane.held += 1
        envelope = Envelope(intent)
        if self._journal is not None:
            try:
                envelope.segment = await self._journal.append(spill_files.intent_body(intent))
            except BaseException:
                self._release_room(lane, 1)
                raise
        self._push(lane, envelope)

    def enqueue_nowait(self, intent: WriteIntent) -> None:
        """Accept `intent` now or raise WriterFull; not available in journal mode."""
        lane = self._lane(intent)
        if self._durability == "journal":
            raise ConfigError("enqueue_nowait cannot wait for the journal's fsync: with "
                              "persist_durability='journal' use `await writer.enqueue(intent)`")
        if lane.held >= lane.cap:
            raise WriterFull(f"the persistence queue of sink {lane.name!r} is full ({lane.cap} intents "
                             "in memory): use `await writer.enqueue(intent)` to wait for room, "
                             "or raise persist_queue_max")
        lane.held += 1
        self._push(lane, Envelope(intent))

    def _lane(self, intent: WriteIntent) -> Lane:
        if not self._is_running or self._driver.is_draining:
            state = "stopping or stopped" if self._driver.is_draining else "not started"
            raise WriterClosed(f"the persistence writer is {state}: intents are accepted only "
                               "between `await writer.start()` and `await writer.stop()`")
        lane = self._lanes.get(intent.sink)
        if lane is None:
            known = ", ".join(sorted(self._lanes)) or "none"
            raise UnknownSink(f"no sink named {intent.sink!r} is registered (registered: {known}); "
                              "call writer.register_sink(...) first")
        return lane

    def _push(self, lane: Lane, envelope: Envelope) -> None:
        lane.pending.append(envelope)
        self._outstanding += 1
        run = envelope.intent.run_id
        if run is not None:
            self._by_run[run] = self._by_run.get(run, 0) + 1
        size = len(lane.pending)
        if size == 1:
            lane.first_at = self._clock.monotonic()
            lane.has_work.set()
        elif size >= lane.batch_max:
            lane.has_work.set()

    # -- flush -------------------------------------------------------------------------
    async def flush(self, run_id: int | str | None = None, timeout: float | None = None) -> None:
        """Wait until every intent of `run_id` (default: the current run) is written or spilled.

        Outside a run, with no run_id, waits until the writer holds nothing. Raises TimeoutError.
        """
        run = run_id if run_id is not None else current_run_id.get()
        if run is None:
            if not self._outstanding:
                return
            done = self._idle = self._idle or asyncio.Event()
        else:
            if run not in self._by_run:
                return
            done = self._run_done.setdefault(run, asyncio.Event())
        self._driver.urgent += 1
        for lane in self._lanes.values():
            lane.has_work.set()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"flush: intents of run {run!r} were not all written or spilled "
                               f"within {timeout} s") from None
        finally:
            self._driver.urgent -= 1

    def _finish(self, lane: Lane | None, envelopes: list[Envelope]) -> None:
        """Mark envelopes written, spilled or dead-lettered: free their room, journal and flush waiters."""
        live = 0
        for env in envelopes:
            if env.is_done:
                continue
            env.is_done = True
            if env.segment is not None and self._journal is not None:
                self._journal.release(env.segment)
            if not env.is_live:
                continue
            live += 1
            run = env.intent.run_id
            if run is not None:
                left = self._by_run[run] - 1
                if left:
                    self._by_run[run] = left
                else:
                    del self._by_run[run]
                    if run in self._run_done:
                        self._run_done.pop(run).set()
        self._outstanding -= live
        if lane is not None:
            self._release_room(lane, live)
        if self._idle is not None and self._outstanding == 0:
            self._idle.set()
            self._idle = None

    def _release_room(self, lane: Lane, n: int) -> None:
        lane.held -= n
        if lane.held < lane.cap:
            lane.has_room.set()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spill directory, recover journal and spill files, start the lanes, replay."""
        if self._is_running:
            raise RuntimeError("the persistence writer is already started")
        await asyncio.to_thread(self._spill.open)
        try:
            recovered, bad = await asyncio.to_thread(self._recover_files)
            if recovered or bad:
                log.warning("persistence: %d journal record(s) recovered, %d bad", recovered, bad)
            for lane in self._lanes.values():
                lane.activate()
                await _call_hook(lane.sink, "open")
            if self._durability == "journal":
                self._journal = Journal(self._spill.path / "journal", self._clock, asyncio.to_thread)
                await self._journal.open()
        except BaseException:
            await asyncio.to_thread(self._spill.close)
            raise
        self._is_running, self._driver.is_draining = True, False
        self._driver.stopping, self._replay_now = asyncio.Event(), asyncio.Event()
        for lane in self._lanes.values():
            self._driver.start_worker(lane)
        await self._replay_once()
        self._replay_task = asyncio.create_task(self._replay_loop(), name="piko-writer-replay")

    def _recover_files(self) -> tuple[int, int]:
        self._spill.recover_tmp()
        journal_dir = self._spill.path / "journal"
        return recover_journal(journal_dir, self._spill) if journal_dir.exists() else (0, 0)

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Drain what the sinks accept within `deadline_s`, spill the rest, close everything."""
        if not self._is_running:
            return
        deadline = self._clock.monotonic() + max(0.0, deadline_s)
        self._driver.is_draining = True
        assert self._driver.stopping is not None
        self._driver.stopping.set()
        for lane in self._lanes.values():
            lane.has_work.set()
            lane.has_room.set()  # producers waiting for room now get WriterClosed
        self._wake_replay()
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        reserve = min(2.0, deadline_s * 0.25)  # time kept for spilling what is left
        drain_s = deadline - reserve - self._clock.monotonic()
        if workers and drain_s > 0:
            await asyncio.wait(workers, timeout=drain_s)
        tasks = [t for t in [*workers, self._replay_task] if t is not None]
        for task in tasks:
            task.cancel()
        # bounded: Python < 3.12 wait_for may swallow a cancel; a late worker only causes duplicates
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.05, reserve / 2))
        for lane in self._lanes.values():
            left = [e for e in [*lane.in_flight, *lane.pending] if not e.is_done]
            lane.pending.clear()
            try:
                await self._driver.spill(lane, left)
            except OSError:  # journal mode still has them on disk; memory mode cannot keep them
                log.exception("persistence: %d intent(s) of sink %r could not be spilled", len(left), lane.name)
        if self._journal is not None:
            await self._journal.close()
            self._journal = None
        for lane in self._lanes.values():
            try:
                await _call_hook(lane.sink, "close")
            except Exception:
                log.exception("persistence: sink %r failed to close", lane.name)
        await asyncio.to_thread(self._spill.close)
        self._is_running = False
        self._set_gauge()

    async def __aenter__(self) -> PersistenceWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- replay ------------------------------------------------------------------------
    async def _replay_loop(self) -> None:
        # Ends on is_draining, not only on cancel: Python < 3.12 wait_for can swallow a cancel.
        assert self._replay_now is not None
        while not self._driver.is_draining:
            await self._clock.wait(self._replay_now, self._replay_interval_s)
            self._replay_now.clear()
            if self._driver.is_draining:
                return
            try:
                await self._replay_once()
            except Exception:
                log.exception("persistence: spill replay failed; trying again later")

    async def _replay_once(self) -> None:
        stats = spill_files.ReplayStats()
        try:
            await spill_files.replay(self._spill, self._replay_deliver, self._types_for,
                                     self._batch_size, asyncio.to_thread, stats)
        finally:  # a pass cut short by stop() still reports what it did
            if stats.replayed or stats.bad:
                log.info("persistence: replayed %d spilled intent(s), %d bad record(s) skipped",
                         stats.replayed, stats.bad)
            if self._metrics is not None:
                self._metrics.persistence_recovery_total.inc(stats.replayed)
                self._metrics.persistence_recovery_failure_total.inc(stats.bad)

    def _types_for(self, sink: str) -> dict[str, type] | None:
        lane = self._lanes.get(sink)
        return None if lane is None or lane.worker is None else lane.types

    async def _replay_deliver(self, sink: str, intents: list[WriteIntent]) -> list[WriteIntent]:
        envelopes = [Envelope(intent, is_live=False) for intent in intents]
        return [e.intent for e in await self._driver.write_round(self._lanes[sink], envelopes)]

    def _wake_replay(self) -> None:
        if self._replay_now is not None:
            self._replay_now.set()

    def _set_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.persistence_queue_size.set(self.queue_size)


async def _call_hook(sink: Sink, name: str) -> None:
    hook = getattr(sink, name, None)
    if callable(hook):
        await hook()
