"""One fire, many pieces: `ctx.map`, static shards and broadcast copies, driven by the parent run.

The parent run makes its pieces (core/pieces.py names them) and waits for them; it owns
their retries (a piece runs with retries=0 and the parent places a failed one again, up to
the task's `retries`), so whatever runs a piece, the rule is one. In cluster execution a piece
is a PENDING row any worker of its queue may claim (a broadcast copy: only its instance), and
the parent polls the pieces' rows; in leader mode the parent runs them here, in tasks, up to
`concurrency` at a time. Either way every piece is a row.

A re-run parent (a retry, its instance died, `backfill --rerun-failed`) finds the pieces by
key: done ones are reused, live ones awaited, failed ones placed again as a new attempt. So
finished work is not redone. Results come back in item order. Imports no store
implementation, no component and not the app.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piko.core import pieces
from piko.core.lifecycle import RERUNNABLE
from piko.core.registry import JobSpec
from piko.core.types import DataInterval, RunClaim, RunOutcome, RunRecord, RunStatus
from piko.errors import PikoError
from piko.protocols import Clock, Store

log = logging.getLogger("piko.runner")
ON_ERROR = ("fail_fast", "collect")
POLL_MIN_S = 0.02
POLL_MAX_S = 1.0
_RETRIED = RERUNNABLE | {RunStatus.CANCELLED}


class MapFailed(PikoError):
    """A piece failed after its retries (fail_fast), or some did (shards, broadcast)."""

    def __init__(self, message: str, failures: Sequence[ItemFailed] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@dataclass(frozen=True)
class ItemFailed:
    """What `ctx.map(..., on_error="collect")` puts in place of a failed item's result."""

    index: int
    run_id: int | None
    status: str
    error_type: str | None
    error_message: str | None

    def __str__(self) -> str:
        return f"item {self.index} {self.status}: {self.error_type}: {self.error_message}"


@dataclass(frozen=True)
class Piece:
    slot: str
    index: int
    payload: str | None
    queue: str


RunLocal = Callable[[JobSpec, Piece, RunClaim], Coroutine[Any, Any, RunOutcome]]


class RunContext(dict):  # type: ignore[type-arg]
    """The `ctx` a handler gets: the dict it always was, plus map/reduce over pieces."""

    def __init__(self, values: dict[str, Any], fanout: Fanout | None = None) -> None:
        super().__init__(values)
        self._fanout = fanout
        self._map_calls = 0

    async def map(self, task: str, items: Sequence[Any], *, concurrency: int | None = None,
                  on_error: str = "fail_fast") -> list[Any]:
        """Run registered task `task` once per item (as child runs any worker may take), and return
        their results in item order. on_error="fail_fast" raises MapFailed at the first item that
        failed after its retries; "collect" puts an ItemFailed in its place and goes on."""
        if self._fanout is None:
            raise PikoError("ctx.map is available inside a run of a started app")
        self._map_calls += 1
        return await self._fanout.map(self, task, list(items), call=self._map_calls, concurrency=concurrency,
                                      on_error=on_error)

    @staticmethod
    def reduce(function: Callable[[Any, Any], Any], results: Sequence[Any], *initial: Any) -> Any:
        """functools.reduce over results (plain Python: nothing is stored)."""
        return functools.reduce(function, results, *initial)


class Fanout:
    def __init__(self, *, store: Store, clock: Clock, instance_id: str, resolve: Callable[[str], JobSpec | None],
                 run_local: RunLocal, is_cluster: bool, targets: Callable[[str], list[str]] = lambda q: [],
                 is_live: Callable[[str], bool] = lambda i: True, nudge: Callable[[], None] = lambda: None,
                 counted: Callable[[str, str, RunStatus], None] = lambda job_id, kind, status: None) -> None:
        self._store, self._clock, self.instance_id = store, clock, instance_id
        self._resolve, self._run_local = resolve, run_local
        self.is_cluster = is_cluster
        self._targets, self._is_live, self._nudge, self._counted = targets, is_live, nudge, counted
        self.piece_ended = asyncio.Event()  # a piece ran here: parents waiting on rows poll now

    # -- the three shapes ----------------------------------------------------------------
    async def map(self, ctx: dict[str, Any], task: str, items: list[Any], *, call: int,
                  concurrency: int | None, on_error: str) -> list[Any]:
        if on_error not in ON_ERROR:
            raise ValueError(f"ctx.map: on_error={on_error!r} must be one of {', '.join(ON_ERROR)}")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError(f"ctx.map: concurrency={concurrency!r} must be a whole number of 1 or more")
        spec = self._resolve(task)
        if spec is None or not spec.is_task:
            raise pieces.PieceError(f"ctx.map: no task registered as {task!r} (register it with @app.task({task!r}))")
        prefix = pieces.item_prefix(task, ctx["job_id"], call)  # the parent's slot: a shard's items are its own
        made = [Piece(pieces.item_slot(prefix, i), i, pieces.encode_item(task, i, item), spec.queue)
                for i, item in enumerate(items)]
        return await self._run(ctx, spec, prefix, made, concurrency, on_error, "item")

    async def shards(self, ctx: dict[str, Any], scheduled_time: datetime, *, spec: JobSpec, total: int) -> None:
        """The parent of a sharded fire: its shards, each `ctx["shard"] == (index, total)`."""
        made = [Piece(pieces.shard_slot(spec.job_id, i, total), i, f"[{i},{total}]", spec.queue) for i in range(total)]
        await self._run(ctx, spec, spec.job_id + pieces.OPEN, made, None, "wait_all", "shard")

    async def broadcast(self, ctx: dict[str, Any], scheduled_time: datetime, *, spec: JobSpec) -> None:
        """The parent of a broadcast fire: one copy on every live instance serving the job's queue."""
        targets = self._targets(spec.queue) if self.is_cluster else [self.instance_id]
        if not targets:
            raise MapFailed(f"broadcast {spec.job_id}: no live instance serves queue {spec.queue!r}")
        made = [Piece(pieces.broadcast_slot(spec.job_id, target), i, None, pieces.private_queue(target))
                for i, target in enumerate(sorted(targets))]
        await self._run(ctx, spec, spec.job_id + pieces.OPEN + "@", made, None, "wait_all", "broadcast")

    # -- the parent's loop ---------------------------------------------------------------
    async def _run(self, ctx: dict[str, Any], spec: JobSpec, prefix: str, made: list[Piece],
                   concurrency: int | None, on_error: str, kind: str) -> list[Any]:
        job = _Job(self, ctx, spec, prefix, made, concurrency, on_error, kind)
        return await job.run()


class _Job:
    """One parent's pieces: place, wait, retry, collect (a small state machine per piece)."""

    def __init__(self, fanout: Fanout, ctx: dict[str, Any], spec: JobSpec, prefix: str, made: list[Piece],
                 concurrency: int | None, on_error: str, kind: str) -> None:
        self.f, self.ctx, self.spec, self.prefix, self.made = fanout, ctx, spec, prefix, made
        self.limit = concurrency or (len(made) if fanout.is_cluster else min(100, len(made)) or 1)
        self.on_error, self.kind = on_error, kind
        self.retries = _retries(spec)
        self.at: datetime = ctx["scheduled_time"]
        self.window: DataInterval | None = ctx.get("data_interval")
        self.results: dict[int, Any] = {}
        self.failures: dict[int, ItemFailed] = {}
        self.tries: dict[int, int] = {}  # placements made by this parent call, per index
        self.todo: deque[tuple[Piece, RunRecord | None]] = deque()
        self.watched: dict[str, Piece] = {}  # slots whose rows are polled (placed in the queue, or live before)
        self.local: dict[asyncio.Task[RunOutcome], Piece] = {}
        self.run_ids: dict[str, int] = {}  # slot -> its newest run seen

    async def run(self) -> list[Any]:
        by_slot = {p.slot: p for p in self.made}
        found = {r.job_id: r for r in await self.f._store.pieces(self.prefix, self.at) if r.job_id in by_slot}
        reused = 0
        for piece in self.made:
            rec = found.get(piece.slot)
            if rec is not None and rec.status is RunStatus.SUCCESS:
                self.results[piece.index] = pieces.decode(rec.result)
                reused += 1
            elif rec is not None and not rec.status.is_final:
                self.watched[piece.slot] = piece
            else:
                self.todo.append((piece, rec))
        if reused:
            log.info("%s run %s: %d of %d %s piece(s) already done, reused", self.ctx["job_id"], self.ctx["run_id"],
                     reused, len(self.made), self.kind)
        try:
            await self._loop()
        except asyncio.CancelledError:  # the parent was cancelled (a cancel request, shutdown): so are its pieces
            await asyncio.shield(self._cancel_watched())
            raise
        finally:
            for task in self.local:
                task.cancel()
            if self.local:
                await asyncio.wait(set(self.local))
        failures = [self.failures[i] for i in sorted(self.failures)]
        if failures and self.on_error != "collect":
            raise MapFailed(self._failed_message(failures), failures)
        return [self.failures.get(i, self.results.get(i)) for i in range(len(self.made))]

    def _failed_message(self, failures: list[ItemFailed]) -> str:
        shown = "; ".join(str(f) for f in failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        return f"{len(failures)} of {len(self.made)} {self.kind} piece(s) of {self.ctx['job_id']} failed: {shown}"

    async def _loop(self) -> None:
        poll_s = POLL_MIN_S
        while not self._finished():
            if self.failures and self.on_error == "fail_fast":
                return
            await self._place()
            if self.local:
                done, _ = await asyncio.wait(set(self.local), timeout=poll_s if self.watched else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    piece = self.local.pop(task)
                    self._ended(piece, task.result())
            if self.watched:
                if not self.local:
                    self.f.piece_ended.clear()
                    await self.f._clock.wait(self.f.piece_ended, poll_s)
                before = len(self.watched)
                await self._poll()
                progressed = len(self.watched) < before
                poll_s = POLL_MIN_S if progressed else min(POLL_MAX_S, poll_s * 1.5)

    def _finished(self) -> bool:
        return len(self.results) + len(self.failures) >= len(self.made)

    def _retries_of(self, piece: Piece) -> int:
        return self.retries

    def _accept(self, piece: Piece, result_json: str | None) -> None:
        self.results[piece.index] = pieces.decode(result_json)

    def _live(self) -> int:
        return len(self.local) + len(self.watched)

    async def _place(self) -> None:
        batch: list[tuple[Piece, RunClaim]] = []
        while self.todo and self._live() + len(batch) < self.limit:
            piece, before = self.todo.popleft()
            self.tries[piece.index] = self.tries.get(piece.index, 0) + 1
            claim = self._claim(piece, before)
            if self.f.is_cluster:
                batch.append((piece, claim))
            else:
                task = asyncio.create_task(self.f._run_local(self.spec, piece, claim), name=f"piko-piece-{piece.slot}")
                self.local[task] = piece
        if batch:
            placed = await self.f._store.place_runs([claim for _, claim in batch])
            for (piece, _), _placed in zip(batch, placed, strict=True):
                self.watched[piece.slot] = piece  # placed, or placed meanwhile by another parent: its row says
            self.f._nudge()

    def _claim(self, piece: Piece, before: RunRecord | None) -> RunClaim:
        status = RunStatus.PENDING if self.f.is_cluster else RunStatus.RUNNING
        attempt = 1 if before is None else before.attempt + 1
        rerun = frozenset() if before is None else frozenset({before.status})
        return RunClaim(piece.slot, self.at, status, self.f._clock.now(), self.f.instance_id, attempt=attempt,
                        kind="piece", take_lock=before is None, rerun_if=rerun, queue=piece.queue,
                        data_start=self.window.start if self.window else None,
                        data_end=self.window.end if self.window else None,
                        parent_run_id=self.ctx["run_id"], payload=piece.payload)

    async def _poll(self) -> None:
        rows = {r.job_id: r for r in await self.f._store.pieces(self.prefix, self.at) if r.job_id in self.watched}
        for slot, piece in list(self.watched.items()):
            rec = rows.get(slot)
            if rec is None:
                continue
            self.run_ids[slot] = rec.run_id
            if rec.status.is_final:
                del self.watched[slot]
                self._ended(piece, RunOutcome(rec.run_id, slot, self.at, rec.status, rec.error_type,
                                              rec.error_message), rec)
            elif rec.status is RunStatus.PENDING and self.kind == "broadcast" and not self._target_live(piece):
                await self.f._store.request_cancel(by=f"piko: the instance of {slot} stopped before it ran its copy",
                                                   now=self.f._clock.now(), run_id=rec.run_id)

    async def _cancel_watched(self) -> None:
        ids = [run_id for slot, run_id in self.run_ids.items() if slot in self.watched]
        try:
            for run_id in ids:
                await self.f._store.request_cancel(by=f"piko: its parent run {self.ctx['run_id']} was cancelled",
                                                   now=self.f._clock.now(), run_id=run_id)
        except (PikoError, OSError) as exc:
            log.warning("%s: could not cancel the pieces of run %s: %s", self.ctx["job_id"], self.ctx["run_id"], exc)

    def _target_live(self, piece: Piece) -> bool:
        found = pieces.parse(piece.slot)
        return found is None or self.f._is_live(found.key)

    def _ended(self, piece: Piece, outcome: RunOutcome, rec: RunRecord | None = None) -> None:
        if outcome.run_id is None:  # its slot was taken meanwhile (another parent attempt placed it): watch it
            self.watched[piece.slot] = piece
            return
        self.f._counted(pieces.handler_of(self.ctx["job_id"]), self.kind, outcome.status)
        if outcome.status is RunStatus.SUCCESS:
            self._accept(piece, rec.result if rec is not None else outcome.result_json)
            return
        retries = self._retries_of(piece)
        if outcome.status in _RETRIED and self.tries.get(piece.index, 0) <= retries and self.kind != "broadcast":
            log.info("%s: %s %s, placed again (%d/%d)", self.ctx["job_id"], piece.slot, outcome.status.value,
                     self.tries.get(piece.index, 0), retries)
            newest = rec or RunRecord(outcome.run_id or 0, piece.slot, self.at, outcome.status,
                                      self._attempt_of(outcome), "piece", "", None, None, None, None, None)
            self.todo.append((piece, newest))
            return
        self.failures[piece.index] = ItemFailed(piece.index, outcome.run_id, outcome.status.value, outcome.error_type,
                                                outcome.error_message)

    def _attempt_of(self, outcome: RunOutcome) -> int:
        return outcome.attempt or 1


def _retries(spec: JobSpec) -> int:
    return int(spec.retries or 0)
