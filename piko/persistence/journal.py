"""The journal durability mode: an intent is on disk before enqueue returns.

Group commit: records that arrive while a write+fsync is in flight are written together
by the next one, so a burst of producers pays one fsync, not one each. Segments rotate
at `segment_bytes`; a segment is deleted once it is no longer the active one and every
intent in it was written, spilled or dead-lettered (`release`). At start-up, segments
left by a crash are turned into per-sink spill files, which replay then delivers:
at-least-once, so an intent already written before a kill -9 may arrive twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from piko.persistence.spill import FILE_MAGIC, SpillDir, body_sink, frame, fsync_dir, read_records
from piko.ports import Clock

SEGMENT_SUFFIX = ".journal"
_HEADER_BODY = b'{"kind":"journal","version":1}'
_sync = getattr(os, "fdatasync", os.fsync)  # appended data and its length are all we need


class Segment:
    """One journal file; `refs` counts its intents not yet written, spilled or dead-lettered."""

    __slots__ = ("path", "fd", "size", "refs", "is_active")

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.size, self.refs, self.is_active = 0, 0, True


def recover_journal(directory: Path, spill: SpillDir) -> tuple[int, int]:
    """Turn left-over segments into spill files, then delete them: (records, bad records)."""
    records = bad = 0
    for path in sorted(directory.glob(f"*{SEGMENT_SUFFIX}")):
        bodies, bad_here = read_records(path.read_bytes())
        if bodies and bodies[0] == _HEADER_BODY:
            bodies = bodies[1:]
        by_sink: dict[str, list[bytes]] = defaultdict(list)
        for body in bodies:
            try:
                by_sink[body_sink(body)].append(body)
            except (ValueError, KeyError, TypeError):
                bad_here += 1
        for sink, sink_bodies in by_sink.items():
            spill.spill(sink, sink_bodies)
            records += len(sink_bodies)
        bad += bad_here
        path.unlink()
    return records, bad


class Journal:
    """Append-only segments with group commit; asyncio parts are created in `open()`."""

    def __init__(self, directory: Path, clock: Clock, run_io: Callable[..., Awaitable[Any]],
                 *, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self._clock = clock
        self._run_io = run_io
        self._segment_bytes = segment_bytes
        self._seq = itertools.count()
        self._active: Segment | None = None
        self._frames: list[bytes] = []
        self._waiters: list[asyncio.Future[Segment]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._is_closing = False

    async def open(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._active = await self._run_io(self._new_segment)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._commit_loop(), name="piko-journal-commit")

    async def append(self, body: bytes) -> Segment:
        """Return once `body` is durable on disk; the caller must `release` the segment later."""
        if self._wakeup is None:
            raise RuntimeError("the journal is not open")
        fut: asyncio.Future[Segment] = asyncio.get_running_loop().create_future()
        self._frames.append(frame(body))
        self._waiters.append(fut)
        self._wakeup.set()
        return await fut

    def release(self, segment: Segment) -> None:
        segment.refs -= 1
        if segment.refs <= 0 and not segment.is_active:
            self._delete(segment)

    async def close(self) -> None:
        """Commit what is pending, stop, and delete the active segment if nothing in it is owed."""
        if self._task is None or self._wakeup is None:
            return
        self._is_closing = True
        self._wakeup.set()
        await self._task  # the loop commits what is pending first
        self._task = self._wakeup = None
        active, self._active = self._active, None
        if active is not None:
            active.is_active = False
            if active.refs <= 0:
                self._delete(active)
            else:
                os.close(active.fd)

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._frames:
                try:
                    await self._commit()
                except Exception:  # its waiters got the error; later appends try again
                    pass
            if self._is_closing:
                return

    async def _commit(self) -> None:
        frames, waiters = self._frames, self._waiters
        self._frames, self._waiters = [], []
        segment = self._active
        assert segment is not None
        try:
            await self._run_io(self._write, segment, b"".join(frames))
        except Exception as exc:
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        for fut in waiters:
            if not fut.done():  # a cancelled enqueue was never accepted: it holds no reference
                segment.refs += 1
                fut.set_result(segment)
        if segment.size >= self._segment_bytes:
            await self._rotate(segment)

    async def _rotate(self, old: Segment) -> None:
        self._active = await self._run_io(self._new_segment)
        old.is_active = False
        if old.refs <= 0:
            self._delete(old)

    def _new_segment(self) -> Segment:
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{stamp}-{os.getpid()}-{next(self._seq):06d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        segment = Segment(path, fd)
        self._write(segment, FILE_MAGIC + frame(_HEADER_BODY))
        fsync_dir(self.directory)
        return segment

    @staticmethod
    def _write(segment: Segment, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(segment.fd, view):]
        _sync(segment.fd)
        segment.size += len(data)

    @staticmethod
    def _delete(segment: Segment) -> None:
        try:
            os.close(segment.fd)
        except OSError:
            pass
        segment.path.unlink(missing_ok=True)
