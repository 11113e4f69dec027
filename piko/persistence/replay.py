"""Replay of spill files: deliver spilled intents to their sinks, isolate poison, survive damage.

Rules. A pass reads each spill file's sink from its header and runs one task per sink, in
parallel, each taking its sink's files oldest first. A file is deleted only when its sink
took, or the dead-letter file holds, every record; on partial progress only what is still
owed is kept. A chunk that fails whole is a *suspect*, not proof of an outage (a lone poison
intent looks the same): its file is kept and the sink's next file is tried. Three suspects
with no successful write in between, or one write timeout, mean the sink is down for the
rest of the pass. A suspect that fails whole again after the sink took other writes (live
or replayed) since, while live writes are not failing, is bisected like a live batch: each
record that fails alone is dead-lettered with its error (suspects are retried at the end
of their sink's pass, and in later passes). A file that cannot be read or decoded is
counted and kept as `.corrupt`; a non-regular file is skipped.
Must not import the writer or the lanes: the writer is reached through `ReplayTarget`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from piko.persistence import spill as spill_files
from piko.persistence.intent import WriteIntent
from piko.persistence.records import intent_from_body

log = logging.getLogger("piko.persistence")
RunIo = Callable[..., Awaitable[Any]]
Item = tuple[bytes, WriteIntent]


@dataclass
class Delivery:
    """What one write round of a chunk left: the unwritten intents (all or none) and why."""

    unwritten: list[WriteIntent]
    error: Exception | None = None
    is_timeout: bool = False


class ReplayTarget(Protocol):
    """The writer as replay sees it."""

    def types_for(self, sink: str) -> Mapping[str, type] | None:
        """The sink's model types, or None if it is not registered or not running."""

    async def deliver(self, sink: str, intents: list[WriteIntent]) -> Delivery:
        """One write round (poison isolated as on the live path when part of it gets through)."""

    async def isolate(self, sink: str, intents: list[WriteIntent], error: Exception) -> None:
        """Bisect a chunk that failed whole; dead-letter each intent that fails alone."""

    def health(self, sink: str) -> tuple[int, bool]:
        """(successful writes to the sink so far, whether it is failing live traffic now)."""


@dataclass
class ReplayStats:
    replayed: int = 0  # records a sink took or the dead-letter file holds
    bad: int = 0  # torn, corrupt or undecodable records, and unreadable files
    kept_files: int = 0  # files left for a later pass (sink down, suspect, or not registered)
    skipped: int = 0  # entries named like spill files that are not regular files


class _Outcome(enum.Enum):
    DONE = "done"  # delivered, dead-lettered or set aside: nothing of it is left to replay
    KEPT = "kept"
    SUSPECT = "suspect"


SUSPECTS_FOR_DOWN = 3  # suspects in a row, nothing written in between: the sink is down for this pass


@dataclass
class _SinkPass:
    """One sink's state during one pass."""

    is_down: bool = False
    suspects_in_row: int = 0
    suspect_writes: int = -1  # the sink's write count when the latest suspect failed
    suspects: list[Path] = field(default_factory=list)


class Replayer:
    """Replays the spill directory through a `ReplayTarget`; remembers suspects between passes."""

    def __init__(self, spill: spill_files.SpillDir, target: ReplayTarget, batch_size: int,
                 run_io: RunIo) -> None:
        self._spill, self._target, self._batch_size, self._run_io = spill, target, batch_size, run_io
        self._failed_at: dict[str, int] = {}  # suspect file name -> sink's write count when it failed
        self._skipped_logged: set[str] = set()

    async def run_pass(self, stats: ReplayStats | None = None) -> ReplayStats:
        """One pass over every spill file; `stats` is updated as it goes (a cut-short pass still tells)."""
        stats = stats if stats is not None else ReplayStats()
        by_sink, unsorted = await self._group(stats)
        passes = {sink: _SinkPass() for sink in by_sink}
        outcomes = await asyncio.gather(*(self._replay_sink(sink, paths, passes[sink], stats)
                                          for sink, paths in by_sink.items()), return_exceptions=True)
        for sink, outcome in zip(by_sink, outcomes, strict=True):  # one sink's trouble never ends the others' pass
            if isinstance(outcome, Exception):
                log.error("persistence: replay for sink %r failed: %r", sink, outcome, exc_info=outcome)
        for path in unsorted:  # the header was damaged: only a full read names the sink
            await self._replay_file(path, passes, stats)
        return stats

    async def _group(self, stats: ReplayStats) -> tuple[dict[str, list[Path]], list[Path]]:
        by_sink: dict[str, list[Path]] = {}
        unsorted: list[Path] = []
        for path in await self._run_io(self._spill.spill_files):
            if not await self._run_io(path.is_file):
                stats.skipped += 1
                if path.name not in self._skipped_logged:
                    self._skipped_logged.add(path.name)
                    log.warning("persistence: %s is not a regular file; replay skips it", path)
                continue
            try:
                sink = await self._run_io(self._spill.peek_sink, path)
            except OSError:
                sink = None  # the full read will tell, and set the file aside if it cannot be read
            if sink is None:
                unsorted.append(path)
            else:
                by_sink.setdefault(sink, []).append(path)
        return by_sink, unsorted

    async def _replay_sink(self, sink: str, paths: list[Path], state: _SinkPass, stats: ReplayStats) -> None:
        if self._target.types_for(sink) is None:  # not registered (yet): its files wait
            stats.kept_files += len(paths)
            return
        passes = {sink: state}
        for path in paths:
            if state.is_down:
                stats.kept_files += 1
            else:
                await self._replay_file(path, passes, stats)
        written, _ = self._target.health(sink)
        again = [p for p in state.suspects if written > self._failed_at.get(p.name, written)]
        for path in again:  # the sink took writes after these failed: now their poison is isolated
            if not state.is_down:
                stats.kept_files -= 1
                await self._replay_file(path, passes, stats)

    async def _replay_file(self, path: Path, passes: dict[str, _SinkPass], stats: ReplayStats) -> None:
        loaded = await self._load(path, stats)
        if loaded is None:
            return
        path, sink, items = loaded  # a damaged file's good records are in a new file now
        state = passes.setdefault(sink, _SinkPass())
        if state.is_down or self._target.types_for(sink) is None:
            stats.kept_files += 1
            return
        try:
            outcome = await self._deliver_file(path, sink, items, state, stats)
        except Exception:  # the disk failed us (dead letters, rewrite): keep it, try next pass
            log.exception("persistence: replay of %s stopped; the file is kept", path)
            state.is_down, outcome = True, _Outcome.KEPT
        if outcome is not _Outcome.DONE:
            stats.kept_files += 1
        if outcome is _Outcome.SUSPECT:
            state.suspects.append(path)

    async def _load(self, path: Path, stats: ReplayStats) -> tuple[Path, str, list[Item]] | None:
        """(file, sink, decodable records), damaged records set aside; None if nothing is left."""
        try:
            sink, bodies, bad = await self._run_io(self._spill.read, path)
        except OSError as exc:
            log.error("persistence: cannot read spill file %s (%s); setting it aside", path, exc)
            stats.bad += 1
            await self._set_aside(path)
            return None
        if sink is None:  # nothing readable is left in it
            stats.bad += max(bad, 1)
            await self._set_aside(path)
            return None
        items = _decode(bodies, self._target.types_for(sink) or {})
        bad += len(bodies) - len(items)
        if bad:
            stats.bad += bad
            try:
                path = await self._run_io(_quarantine, self._spill, path, sink, [b for b, _ in items])
            except OSError:
                log.exception("persistence: cannot set aside the damaged records of %s", path)
        return (path, sink, items) if items else None

    async def _set_aside(self, path: Path) -> None:
        try:
            await self._run_io(os.replace, path, path.with_name(path.name + spill_files.CORRUPT_SUFFIX))
        except OSError:
            log.exception("persistence: cannot set aside %s", path)

    async def _deliver_file(self, path: Path, sink: str, items: list[Item], state: _SinkPass,
                            stats: ReplayStats) -> _Outcome:
        """Deliver in chunks; stop at a suspect or when the sink is down, keeping what is owed."""
        done = 0
        outcome = _Outcome.DONE
        while done < len(items):
            chunk = items[done:done + self._batch_size]
            written_before, _ = self._target.health(sink)
            result = await self._target.deliver(sink, [intent for _, intent in chunk])
            if result.unwritten:
                error = result.error
                if result.is_timeout or error is None or not self._is_isolatable(path, written_before, sink):
                    outcome = self._suspect(path, sink, state, is_timeout=result.is_timeout)
                    break
                await self._target.isolate(sink, result.unwritten, error)
            stats.replayed += len(chunk)
            done += len(chunk)
        if done >= len(items):
            self._failed_at.pop(path.name, None)
            await self._run_io(path.unlink, True)
            return _Outcome.DONE
        if done:  # progress: keep only what is still owed, under the same name
            await self._run_io(self._spill.write, path, "spill", sink, [b for b, _ in items[done:]])
        return outcome

    def _is_isolatable(self, path: Path, written_before: int, sink: str) -> bool:
        """Failed whole before, and the sink has taken writes since and is not failing live traffic."""
        failed_at = self._failed_at.get(path.name)
        _, is_failing = self._target.health(sink)
        return failed_at is not None and written_before > failed_at and not is_failing

    def _suspect(self, path: Path, sink: str, state: _SinkPass, *, is_timeout: bool) -> _Outcome:
        if is_timeout:  # a hung sink: never bisected (each part would wait as long), not again this pass
            state.is_down = True
            return _Outcome.KEPT
        written, _ = self._target.health(sink)
        state.suspects_in_row = state.suspects_in_row + 1 if written == state.suspect_writes else 1
        state.suspect_writes = self._failed_at[path.name] = written
        if state.suspects_in_row >= SUSPECTS_FOR_DOWN:
            state.is_down = True  # nothing got through for several files: spare the sink till next pass
            return _Outcome.KEPT
        return _Outcome.SUSPECT


def _decode(bodies: list[bytes], types: Mapping[str, type]) -> list[Item]:
    items = []
    for body in bodies:
        try:
            items.append((body, intent_from_body(body, types)))
        except Exception:  # CodecError, or anything a model's validator raises: a bad record
            continue
    return items


def _quarantine(spill: spill_files.SpillDir, path: Path, sink: str, good: list[bytes]) -> Path:
    """Save the good records to a new file, then keep the damaged one as `.corrupt`."""
    fresh = spill.spill(sink, good) if good else path
    os.replace(path, path.with_name(path.name + spill_files.CORRUPT_SUFFIX))
    return fresh
