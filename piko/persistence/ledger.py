"""The ledger of accepted intents: lane room and queues, what each run owes, the queue-size gauge.

Rules. An intent takes lane room when accepted and gives it back once it is written, spilled
or dead-lettered (`settle`), or handed to the journal for the next start. `flush()` waits on
the events made here: one per run, and one for "nothing outstanding". The gauge is set on
every change, so a scrape never reads a stale queue size. Runs on the event loop thread;
no I/O. Must not import the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from piko.persistence.journal import Journal
from piko.persistence.lanes import Envelope, Lane


class Ledger:
    """Counts for the writer; `on_held` (if any) gets the new queue size after every change."""

    def __init__(self, monotonic: Callable[[], float], on_held: Callable[[int], None] | None) -> None:
        self._monotonic, self._on_held = monotonic, on_held
        self.held = 0  # intents counted against lane room, all lanes
        self.outstanding = 0  # live envelopes not yet written, spilled, dead-lettered or journaled
        self._by_run: dict[int | str, int] = {}
        self._run_done: dict[int | str, asyncio.Event] = {}
        self._idle: asyncio.Event | None = None

    def take_room(self, lane: Lane) -> None:
        lane.held += 1
        self.held += 1
        if self._on_held is not None:
            self._on_held(self.held)

    def release_room(self, lane: Lane, n: int) -> None:
        lane.held -= n
        self.held -= n
        if self._on_held is not None:
            self._on_held(self.held)
        if lane.held < lane.cap:
            lane.has_room.set()

    def admit(self, lane: Lane, envelope: Envelope) -> None:
        """take_room + push in one call: memory mode's path."""
        lane.held += 1
        self.held += 1
        if self._on_held is not None:
            self._on_held(self.held)
        self.push(lane, envelope)

    def push(self, lane: Lane, envelope: Envelope) -> None:
        """Queue an envelope whose room was taken; wake the lane when a batch is due."""
        lane.pending.append(envelope)
        self.outstanding += 1
        run = envelope.intent.run_id
        if run is not None:
            self._by_run[run] = self._by_run.get(run, 0) + 1
        size = len(lane.pending)
        if size == 1:
            lane.first_at = self._monotonic()
            lane.has_work.set()
        elif size >= lane.batch_max:
            lane.has_work.set()

    def settle(self, lane: Lane | None, envelopes: list[Envelope], journal: Journal | None, *,
               should_release_journal: bool = True) -> None:
        """Envelopes are done: free their room, journal records and flush waiters.

        `should_release_journal` False: they were neither written, spilled nor dead-lettered
        (stop() gave up on them), so what the journal holds of them stays for the next start."""
        live = 0
        for env in envelopes:
            if env.is_done:
                continue
            env.is_done = True
            if env.segment is not None and journal is not None and should_release_journal:
                journal.release(env.segment, env.journal_seq)
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
        self.outstanding -= live
        if lane is not None and live:
            self.release_room(lane, live)
        if self._idle is not None and self.outstanding == 0:
            self._idle.set()
            self._idle = None

    def done_event(self, run: int | str | None) -> asyncio.Event | None:
        """Set once `run` (None: everything) owes nothing; None if it owes nothing now."""
        if run is None:
            if not self.outstanding:
                return None
            self._idle = self._idle or asyncio.Event()
            return self._idle
        if run not in self._by_run:
            return None
        return self._run_done.setdefault(run, asyncio.Event())
