"""PersistenceWriter: jobs enqueue WriteIntents; per-sink lanes (lanes.py) batch, retry and spill them.

Rules. Each sink has its own lane (queue, worker, health), so a slow or failing sink
never stalls another: persist_queue_max is split evenly between the lanes, enqueue waits
while its lane is full (back-pressure), and when the lane's sink is failing or a write
has hung longer than `stall_s`, the lane's backlog goes to a spill file instead.
Spill files are replayed (replay.py) at start-up for at most `startup_replay_s`, the rest
in the background, then periodically and as soon as a failing sink recovers.
Enqueue before start() or after stop() raises WriterClosed: nothing is buffered outside a running
writer. start() is all-or-nothing; stop() always ends stopped, and returns how many accepted
intents it lost (only when the disk failed as well as the sink, and never in journal mode).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from piko.clock import SystemClock
from piko.core.backoff import backoff as backoff_s  # exported under the name it has always had
from piko.errors import ConfigError, UnknownSink, WriterClosed, WriterFull
from piko.persistence import spill as spill_files
from piko.persistence.intent import WriteIntent
from piko.persistence.journal import Journal, recover_journal
from piko.persistence.lanes import (
    Envelope,
    Lane,
    LaneDriver,
    LanePolicy,
    LaneReplayPort,
    call_hook,
    close_sinks,
)
from piko.persistence.ledger import Ledger
from piko.persistence.records import intent_body
from piko.persistence.replay import Replayer, ReplayStats
from piko.protocols import Clock, Sink

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
                 stall_s: float = 2.0, startup_replay_s: float = 5.0) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigError(f"persist_durability must be one of {DURABILITY_MODES}, got {durability!r}")
        if queue_max < 1 or batch_size < 1 or batch_timeout_s <= 0 or retry_max < 0:
            raise ConfigError("persist_queue_max and persist_batch_size must be >= 1, "
                              "persist_batch_timeout_s > 0 and retry_max >= 0")
        if write_timeout_s <= 0 or startup_replay_s < 0:
            raise ConfigError("write_timeout_s must be > 0 and startup_replay_s >= 0")
        self._queue_max, self._batch_size, self._durability = queue_max, batch_size, durability
        self._replay_interval_s = replay_interval_s
        self._startup_replay_s = startup_replay_s
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._spill = spill_files.SpillDir(spill_dir, self._clock)
        policy = LanePolicy(batch_timeout_s, retry_max, retry_base_s, retry_cap_s, write_timeout_s, stall_s)
        self._driver = LaneDriver(policy, self._clock, self._spill, metrics, self._finish,
                                  self._wake_replay, self._set_gauge)
        self._lanes: dict[str, Lane] = {}
        self._replayer = Replayer(self._spill, LaneReplayPort(self._driver, self._lanes), batch_size,
                                  asyncio.to_thread)
        self._journal: Journal | None = None
        self._journal_left: list[Path] = []  # segments start-up could not recover (disk full): retried
        self._is_running = False
        self.autostart: Callable[[], Awaitable[None]] | None = None
        self._is_sealed = False  # stop() has taken what the lanes hold: nothing more may be pushed
        self._ledger = Ledger(self._clock.monotonic, self._set_gauge if metrics is not None else None)
        self._replay_task: asyncio.Task[None] | None = None
        self._first_replay: asyncio.Event | None = None
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
            self._driver.start_worker(lane, should_open=True)
            self._wake_replay()  # its spill files may be waiting

    @property
    def is_running(self) -> bool:
        return self._is_running

    @property
    def queue_size(self) -> int:
        """Intents held in memory (queued or being written) across all sinks."""
        return self._ledger.held

    @property
    def outstanding(self) -> int:
        """Accepted intents this process has not yet written, spilled or dead-lettered."""
        return self._ledger.outstanding

    async def enqueue(self, intent: WriteIntent) -> None:
        """Accept `intent`; waits while its sink's lane is full. In journal mode, returns after fsync.

        Journal mode: an enqueue still waiting for its fsync when stop() has taken what the lanes
        hold returns normally once the intent is durable; it stays in the journal and the next
        start() delivers it (this process no longer counts it as outstanding).
        """
        if not self._is_running and self.autostart is not None:
            await self.autostart()  # the app starts a writer first used after it started (or by a manual run)
        lane = self._lane(intent)
        if lane.held >= lane.cap:  # the writer may stop while it waits: the lane is looked up again
            lane = await self._driver.wait_for_room(lane, lambda: self._lane(intent))
        envelope = Envelope(intent)
        if self._journal is None:
            self._ledger.admit(lane, envelope)
            return
        self._ledger.take_room(lane)
        try:
            envelope.segment, envelope.journal_seq = await self._journal.append(intent_body(intent))
        except BaseException:
            self._ledger.release_room(lane, 1)
            raise
        if self._is_sealed:  # durable; delivered from the journal by the next start()
            self._ledger.release_room(lane, 1)
            return
        self._ledger.push(lane, envelope)

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
        self._ledger.admit(lane, Envelope(intent))

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

    # -- flush -------------------------------------------------------------------------
    async def flush(self, run_id: int | str | None = None, timeout: float | None = None) -> None:
        """Wait until every intent of `run_id` (default: the current run) is written or spilled.

        Outside a run, with no run_id, waits until the writer holds nothing. Raises TimeoutError.
        """
        run = run_id if run_id is not None else current_run_id.get()
        done = self._ledger.done_event(run)
        if done is None:
            return
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
        self._ledger.settle(lane, envelopes, self._journal)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spill directory, recover journal and spill files, start the lanes, replay.

        All or nothing: if any step fails, what already started is stopped and closed again.
        """
        if self._is_running:
            raise RuntimeError("the persistence writer is already started")
        opened: list[Lane] = []
        try:
            await asyncio.to_thread(self._spill.open)
            await asyncio.to_thread(self._recover_files)
            for lane in self._lanes.values():
                lane.activate()
                await call_hook(lane.sink, "open")
                opened.append(lane)
            if self._durability == "journal":
                self._journal = Journal(self._spill.path / "journal", self._clock, asyncio.to_thread)
                await self._journal.open()
            self._is_running, self._is_sealed, self._driver.is_draining = True, False, False
            self._driver.stopping, self._replay_now = asyncio.Event(), asyncio.Event()
            self._first_replay = asyncio.Event()
            for lane in self._lanes.values():
                self._driver.start_worker(lane)
            self._replay_task = asyncio.create_task(self._replay_loop(), name="piko-writer-replay")
            is_replayed = await self._clock.wait(self._first_replay, self._startup_replay_s)
            if not is_replayed and self._startup_replay_s > 0:
                log.warning("persistence: start-up replay took longer than %.1f s; it goes on in the "
                            "background", self._startup_replay_s)
        except BaseException:
            await self._unwind(opened)
            raise

    def _recover_files(self, only: list[Path] | None = None) -> None:
        """Blocking. At start-up (`only` None) tidy .tmp files and recover the journal; later retry
        the segments `only`. A failure leaves files for a later pass: it never stops a start."""
        journal_dir = self._spill.path / "journal"
        try:
            if only is None:
                undone, salvaged = self._spill.recover_tmp()
                if undone or salvaged:
                    log.warning("persistence: %d unfinished spill rewrite(s) undone, %d uncommitted "
                                "file(s) salvaged", undone, salvaged)
            found = recover_journal(journal_dir, self._spill, only) if journal_dir.exists() else None
        except OSError:
            log.exception("persistence: cannot recover the spill directory %s yet", self._spill.path)
            return
        self._journal_left = found.kept if found is not None else []
        if found is not None and (found.records or found.bad or found.kept):
            log.warning("persistence: %d journal record(s) recovered, %d already delivered, %d bad, "
                        "%d segment(s) left for later", found.records, found.acked, found.bad, len(found.kept))
            if self._metrics is not None:
                self._metrics.persistence_recovery_failure_total.inc(found.bad)

    async def _unwind(self, opened: list[Lane]) -> None:
        """Undo a start() that failed part-way."""
        self._driver.is_draining, self._is_sealed = True, True
        if self._driver.stopping is not None:
            self._driver.stopping.set()
        tasks = [t for t in [*(lane.worker for lane in self._lanes.values()), self._replay_task] if t]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for lane in self._lanes.values():
            lane.worker = None
        self._replay_task = None
        try:
            if self._journal is not None:
                await self._journal.close()
        except Exception:
            log.exception("persistence: cannot close the journal")
        self._journal = None
        await close_sinks(opened, 5.0)
        self._spill.close()
        self._is_running, self._driver.is_draining = False, False  # back to "not started"

    async def stop(self, deadline_s: float = 10.0) -> int:
        """Drain what the sinks accept within `deadline_s`, spill the rest, close everything.

        Returns how many accepted intents were lost: neither written nor spilled because the disk
        failed as well (each is also counted and logged as an ERROR). Always ends stopped.
        """
        if not self._is_running:
            return 0
        deadline = self._clock.monotonic() + max(0.0, deadline_s)
        lost = 0
        try:
            await self._drain(deadline_s, deadline)
            self._is_sealed = True
            lost = await self._spill_leftovers()
            if self._journal is not None:
                await self._journal.close()
        except Exception:
            log.exception("persistence: the writer did not stop cleanly")
        finally:
            self._journal = None
            try:
                await close_sinks(list(self._lanes.values()), deadline - self._clock.monotonic())
            finally:
                self._spill.close()  # never blocks: closing the fd releases the flock
                self._is_running = False
                for lane in self._lanes.values():
                    lane.worker = None
                self._set_gauge()
        return lost

    async def _drain(self, deadline_s: float, deadline: float) -> None:
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

    async def _spill_leftovers(self) -> int:
        """Spill what the lanes still hold; count what neither the disk nor the journal keeps."""
        lost = 0
        for lane in self._lanes.values():
            left = [e for e in [*lane.in_flight, *lane.pending] if not e.is_done]
            lane.pending.clear()
            if not left:
                continue
            try:
                await self._driver.spill(lane, left)
            except Exception:
                log.exception("persistence: cannot spill %d intent(s) of sink %r", len(left), lane.name)
            left = [e for e in left if not e.is_done]
            journaled = [e for e in left if e.segment is not None]
            if journaled:
                log.warning("persistence: %d intent(s) of sink %r stay in the journal for the next start",
                            len(journaled), lane.name)
            self._ledger.settle(lane, left, self._journal, should_release_journal=False)
            lost += len(left) - len(journaled)
        if lost:
            log.error("persistence: %d accepted intent(s) LOST at shutdown: their sink did not take them "
                      "and the spill directory %s could not hold them", lost, self._spill.path)
            if self._metrics is not None:
                self._metrics.persistence_lost_total.inc(lost)
        return lost

    async def __aenter__(self) -> PersistenceWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- replay ------------------------------------------------------------------------
    async def _replay_loop(self) -> None:
        # Ends on is_draining, not only on cancel: Python < 3.12 wait_for can swallow a cancel.
        assert self._replay_now is not None and self._first_replay is not None
        try:
            await self._replay_once()
        finally:
            self._first_replay.set()
        while not self._driver.is_draining:
            await self._clock.wait(self._replay_now, self._replay_interval_s)
            self._replay_now.clear()
            if self._driver.is_draining:
                return
            await self._replay_once()

    async def _replay_once(self) -> None:
        stats = ReplayStats()
        try:
            if self._journal_left:
                await asyncio.to_thread(self._recover_files, self._journal_left)
            await self._replayer.run_pass(stats)
        except Exception:
            log.exception("persistence: spill replay failed; trying again later")
        finally:  # a pass cut short by stop() still reports what it did
            if stats.replayed or stats.bad:
                log.info("persistence: replayed %d spilled intent(s), %d bad record(s) set aside",
                         stats.replayed, stats.bad)
            if self._metrics is not None:
                self._metrics.persistence_recovery_total.inc(stats.replayed)
                self._metrics.persistence_recovery_failure_total.inc(stats.bad)

    def _wake_replay(self) -> None:
        if self._replay_now is not None:
            self._replay_now.set()

    def _set_gauge(self, held: int | None = None) -> None:
        if self._metrics is not None:
            self._metrics.persistence_queue_size.set(self._ledger.held if held is None else held)

