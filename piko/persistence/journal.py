"""The journal durability mode: an intent is on disk before enqueue returns.

Group commit: records that arrive while a write+fsync is in flight are written together
by the next one, so a burst of producers pays one fsync, not one each. Each intent record
carries a sequence number; once an intent is written, spilled or dead-lettered (`release`)
its number goes into an ack record, appended with the next commit or within
`ack_interval_s` (no fsync of its own: a lost ack only costs a duplicate). Segments rotate
at `segment_bytes`; a segment that is no longer active is deleted once every intent in it
was released. At start-up, the unacknowledged intents of left-over segments become
per-sink spill files, which replay then delivers: at-least-once, so after a kill -9 only
intents in flight or acknowledged within the last ack interval arrive twice.
Segments use records.py's format: a JSON header, then version 2 records (intents `I` + seq
u64 + body, acks `A` + JSON ranges); version 1 segments (plain intent bodies) still recover.
A segment is zero-filled ahead of its records (`FILL_AHEAD_BYTES` at a time), so a commit
overwrites blocks the file already has and its fdatasync flushes data alone, not the file's
new size as well (on ext4 about half the time). Records never end in a zero byte (their bodies
end in JSON), so readers drop a segment's zero tail; an older piko counts it as one bad record.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import struct
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from piko.persistence.records import FILE_MAGIC, body_sink, frame, frame_head, fsync_dir, read_records
from piko.persistence.spill import SpillDir
from piko.protocols import Clock

SEGMENT_SUFFIX = ".journal"
VERSION = 2
_INTENT, _ACK = b"I", b"A"
_SEQ = struct.Struct(">Q")
_INTENT_SEQ = struct.Struct(">cQ")  # an intent record's prefix: kind, seq
_sync = getattr(os, "fdatasync", os.fsync)  # written data and the file's length are all we need
FILL_AHEAD_BYTES = 1024 * 1024  # zeros written past a segment's records (at most its segment_bytes)
log = logging.getLogger("piko.persistence")


class Segment:
    """One journal file; `refs` counts its intents not yet written, spilled or dead-lettered."""

    __slots__ = ("path", "fd", "size", "filled", "fill_ahead", "refs", "is_active", "is_deleted", "carried")

    def __init__(self, path: Path, fd: int, fill_ahead: int = FILL_AHEAD_BYTES) -> None:
        self.path, self.fd = path, fd
        self.size, self.refs = 0, 0  # size: where the records end
        self.filled, self.fill_ahead = 0, fill_ahead  # filled: where the zeros written ahead end
        self.is_active, self.is_deleted = True, False
        self.carried: list[tuple[Segment, int]] = []  # acks it holds for other segments' intents


@dataclass
class JournalRecovery:
    records: int = 0  # unacknowledged intents turned into spill files
    acked: int = 0  # intents skipped because an ack record says they were delivered
    bad: int = 0  # torn or unreadable records
    kept: list[Path] = field(default_factory=list)  # segments that could not be recovered (disk full?)


def recover_journal(directory: Path, spill: SpillDir, only: Iterable[Path] | None = None) -> JournalRecovery:
    """Turn left-over segments into spill files, then delete them; a segment that fails is kept."""
    result = JournalRecovery()
    paths = sorted(only) if only is not None else sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))
    groups: dict[str, list[tuple[Path, list[bytes]]]] = defaultdict(list)
    for path in paths:
        try:
            bodies, bad = read_segment(path)
        except OSError:
            log.exception("persistence: cannot read journal segment %s; it is kept", path)
            result.kept.append(path)
            continue
        instance, version, bodies = _split_header(path, bodies)
        if version > VERSION:  # written by a newer piko: never delete what this one cannot read
            log.error("persistence: journal segment %s has format version %d (newer than %d); it is kept",
                      path, version, VERSION)
            result.kept.append(path)
            continue
        result.bad += bad
        groups[instance].append((path, bodies))
    for segments in groups.values():  # acks of one journal may be in any of its segments
        acked = {seq for _, bodies in segments for seq in _acked_seqs(bodies)}
        for path, bodies in segments:
            _recover_segment(path, bodies, acked, spill, result)
    return result


def read_segment(path: Path) -> tuple[list[bytes], int]:
    """(record bodies, bad records) of a segment file; its zero-filled tail is not a record."""
    return read_records(path.read_bytes().rstrip(b"\0"))


def _split_header(path: Path, bodies: list[bytes]) -> tuple[str, int, list[bytes]]:
    """(the journal instance that wrote the segment, its format version, its other records)."""
    if bodies:
        try:
            header = json.loads(bodies[0])
        except (ValueError, RecursionError):
            header = None
        if isinstance(header, dict) and header.get("kind") == "journal":
            version = header.get("version")
            return (str(header.get("instance", path.name)), version if isinstance(version, int) else 1,
                    bodies[1:])
    return path.name, VERSION, bodies  # a damaged header: the segment's own acks still apply


def _acked_seqs(bodies: list[bytes]) -> Iterable[int]:
    for body in bodies:
        if body[:1] == _ACK:
            try:
                for low, high in json.loads(body[1:]):
                    yield from range(int(low), int(high) + 1)
            except (ValueError, TypeError):
                continue


def _recover_segment(path: Path, bodies: list[bytes], acked: set[int], spill: SpillDir,
                     result: JournalRecovery) -> None:
    by_sink: dict[str, list[bytes]] = defaultdict(list)
    bad = acked_here = 0
    for body in bodies:
        kind = body[:1]
        if kind == _ACK:
            continue
        if kind == _INTENT:  # version 2; a version 1 record is the intent body itself
            if len(body) < 1 + _SEQ.size:
                bad += 1
                continue
            if _SEQ.unpack_from(body, 1)[0] in acked:
                acked_here += 1
                continue
            body = body[1 + _SEQ.size:]
        try:
            by_sink[body_sink(body)].append(body)
        except (ValueError, KeyError, TypeError):
            bad += 1
    try:
        for sink, sink_bodies in by_sink.items():
            spill.spill(sink, sink_bodies)
        path.unlink()
    except OSError:  # keep the segment: a later recovery delivers it (what was spilled, twice)
        log.exception("persistence: cannot recover journal segment %s; it is kept", path)
        result.kept.append(path)
        return
    result.records += sum(len(b) for b in by_sink.values())
    result.acked += acked_here
    result.bad += bad


class Journal:
    """Append-only segments with group commit and ack records; asyncio parts are made in `open()`."""

    def __init__(self, directory: Path, clock: Clock, run_io: Callable[..., Awaitable[Any]], *,
                 segment_bytes: int = 16 * 1024 * 1024, ack_interval_s: float = 0.2) -> None:
        self.directory = directory
        self._clock = clock
        self._run_io = run_io
        self._segment_bytes, self._ack_interval_s = segment_bytes, ack_interval_s
        self._instance = uuid.uuid4().hex
        self._file_seq = itertools.count()
        self._intent_seq = itertools.count(1)
        self._active: Segment | None = None
        self._frames: list[bytes] = []
        self._waiters: list[asyncio.Future[Segment]] = []
        self._acks: list[tuple[Segment, int]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._is_closing = False

    async def open(self) -> None:
        """Start the commit loop; a first segment that cannot be made (disk full) is retried on append."""
        try:
            self._active = await self._run_io(self._new_segment)
        except OSError as exc:
            log.error("persistence: cannot create a journal segment in %s (%s); enqueue fails until "
                      "it can", self.directory, exc)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._commit_loop(), name="piko-journal-commit")

    async def append(self, body: bytes) -> tuple[Segment, int]:
        """Return (segment, seq) once `body` is durable; the caller must `release` them later."""
        if self._wakeup is None:
            raise RuntimeError("the journal is not open")
        seq = next(self._intent_seq)
        prefix = _INTENT_SEQ.pack(_INTENT, seq)
        fut: asyncio.Future[Segment] = asyncio.get_running_loop().create_future()
        self._frames += (frame_head(prefix, body), body)  # joined once per commit, never per intent
        self._waiters.append(fut)
        self._wakeup.set()
        return await fut, seq

    def release(self, segment: Segment, seq: int) -> None:
        """The intent `seq` was written, spilled or dead-lettered: it need never be recovered."""
        segment.refs -= 1
        if segment.refs <= 0 and not segment.is_active:
            self._delete(segment)
        elif not segment.is_deleted:
            self._acks.append((segment, seq))

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
            if active.refs <= 0 and all(seg.is_deleted for seg, _ in active.carried):
                self._delete(active)
            else:  # still owed, or it holds the acks of an older segment that is
                os.close(active.fd)

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            is_woken = await self._clock.wait(self._wakeup, self._ack_interval_s)
            self._wakeup.clear()
            while self._frames:  # acks ride along with the intents
                try:
                    await self._commit()
                except Exception:  # its waiters got the error; later appends try again
                    pass
            if self._acks and (not is_woken or self._is_closing):  # idle: acks go alone, unsynced
                try:
                    await self._commit()
                except Exception:  # a lost ack only costs a duplicate after a crash
                    pass
            if self._is_closing:
                return

    async def _commit(self) -> None:
        frames, waiters, acks = self._frames, self._waiters, self._acks
        self._frames, self._waiters, self._acks = [], [], []
        try:
            if self._active is None:
                self._active = await self._run_io(self._new_segment)
            segment = self._active
            acks = [(seg, seq) for seg, seq in acks if not seg.is_deleted]
            frames.append(_ack_frame(seq for _, seq in acks))
            await self._run_io(self._write, segment, b"".join(frames), len(frames) > 1)
            segment.carried += [(seg, seq) for seg, seq in acks if seg is not segment]
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
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{stamp}-{os.getpid()}-{next(self._file_seq):06d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        segment = Segment(path, fd, min(FILL_AHEAD_BYTES, self._segment_bytes))
        header = json.dumps({"kind": "journal", "version": VERSION, "instance": self._instance})
        try:
            self._write(segment, FILE_MAGIC + frame(header.encode()), True)
            fsync_dir(self.directory)
        except BaseException:
            self._delete(segment)
            raise
        return segment

    @staticmethod
    def _write(segment: Segment, data: bytes, is_durable: bool) -> None:
        """Write `data` after the segment's records (zero-filling ahead first when it would pass
        the zeros), then fdatasync if `is_durable`. A failed write is overwritten by the next."""
        end = segment.size + len(data)
        if end > segment.filled:  # this one fdatasync also covers the new length; the next ones not
            _write_at(segment.fd, bytes(segment.fill_ahead), end)
            segment.filled = end + segment.fill_ahead
        _write_at(segment.fd, data, segment.size)
        if is_durable:
            _sync(segment.fd)
        segment.size = end

    def _delete(self, segment: Segment) -> None:
        """Remove a segment nothing is owed from; acks it carried for live segments are written again."""
        segment.is_deleted = True
        self._acks += [(seg, seq) for seg, seq in segment.carried if not seg.is_deleted]
        try:
            os.close(segment.fd)
        except OSError:
            pass
        segment.path.unlink(missing_ok=True)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _ack_frame(seqs: Iterable[int]) -> bytes:
    """One ack record naming `seqs` as inclusive ranges, or b"" when there are none."""
    ranges: list[list[int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return frame(_ACK + json.dumps(ranges, separators=(",", ":")).encode()) if ranges else b""
