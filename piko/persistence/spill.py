"""Spill and dead-letter files, their record format, and replay of spilled intents.

Format (append-only, shared with the journal): an 8-byte file magic with the version,
then records of REC_MAGIC | length u32 | crc32 u32 | body; the first record is a JSON
header ({"kind", "sink"}), the others are intents (JSON, see `intent_body`). A record
with a bad checksum or cut short is skipped and counted, and the reader resynchronises
on the next REC_MAGIC, so one bad byte never costs more than its record.
Rules: a file is written whole to `name.tmp`, fsynced, renamed, and the directory
fsynced; files are 0600 in a 0700 directory that one process holds (flock). Replay
deletes a spill file only when its sink has taken or dead-lettered every record; a file
with bad records is kept as `.corrupt` after its good records are saved to a new file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piko.errors import ConfigError
from piko.persistence import codec
from piko.persistence.intent import WriteIntent
from piko.ports import Clock

FILE_MAGIC = b"PIKOSPL\x01"
REC_MAGIC = b"\xa5PR\x01"
_REC_HEAD = struct.Struct(">II")
_HEAD_SIZE = len(REC_MAGIC) + _REC_HEAD.size
MAX_RECORD_BYTES = 256 * 1024 * 1024
SPILL_SUFFIX, DEAD_SUFFIX, TMP_SUFFIX, CORRUPT_SUFFIX = ".spill", ".dead", ".tmp", ".corrupt"


def frame(body: bytes) -> bytes:
    """One record: magic, length, CRC32 of the body, body."""
    return REC_MAGIC + _REC_HEAD.pack(len(body), zlib.crc32(body)) + body


def read_records(data: bytes) -> tuple[list[bytes], int]:
    """(good record bodies, count of bad or torn records) of a file's bytes."""
    if not data.startswith(FILE_MAGIC):
        return [], 1
    bodies: list[bytes] = []
    bad = 0
    pos, end = len(FILE_MAGIC), len(data)
    while pos < end:
        body_at = pos + _HEAD_SIZE
        if data[pos:pos + len(REC_MAGIC)] == REC_MAGIC and body_at <= end:
            length, crc = _REC_HEAD.unpack_from(data, pos + len(REC_MAGIC))
            body = data[body_at:body_at + length]
            if length <= MAX_RECORD_BYTES and len(body) == length and zlib.crc32(body) == crc:
                bodies.append(body)
                pos = body_at + length
                continue
        bad += 1
        found = data.find(REC_MAGIC, pos + 1)
        pos = end if found < 0 else found
    return bodies, bad


def intent_body(intent: WriteIntent, error: BaseException | None = None) -> bytes:
    """An intent (and, for dead letters, its error) as a record body."""
    record: dict[str, Any] = {
        "s": intent.sink, "k": intent.key, "p": intent.payload, "j": intent.job_id,
        "r": intent.run_id, "t": intent.scheduled_time, "i": intent.idempotency_key, "o": intent.op_type,
    }
    if error is not None:
        record["e"] = f"{type(error).__name__}: {error}"
    try:
        return codec.dumps(record)
    except codec.CodecError as exc:
        if error is None:
            raise
        record["p"] = repr(intent.payload)  # a dead letter keeps what it can, and says why
        record["e"] += f" (payload stored as repr: {exc})"
        return codec.dumps(record)


def body_sink(body: bytes) -> str:
    """The sink name of an intent record, without decoding the payload."""
    return str(json.loads(body)["s"])


def intent_from_body(body: bytes, types: Mapping[str, type]) -> WriteIntent:
    d = json.loads(body)
    return WriteIntent(
        sink=d["s"], key=d["k"], payload=codec.decode(d["p"], types), job_id=d["j"], run_id=d["r"],
        scheduled_time=codec.decode(d["t"]), idempotency_key=d["i"], op_type=d["o"])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "_"


class SpillDir:
    """The spill directory: writes spill and dead-letter files, lists and reads them."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock) -> None:
        self.path = Path(path)
        self.dead_path = self.path / "dead"
        self._clock = clock
        self._seq = itertools.count()
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directories (0700) and take the directory's lock; blocking."""
        for d in (self.path, self.dead_path):
            if not d.exists():
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
        except ImportError:  # no flock on Windows: one process per directory is then on trust
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigError(f"spill directory {self.path} is in use by another process; "
                              "give each process its own persist_spill_dir") from exc

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def new_path(self, sink: str, suffix: str) -> Path:
        """A fresh file name; names sort in creation order."""
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S%f")
        where = self.dead_path if suffix == DEAD_SUFFIX else self.path
        return where / f"{stamp}-{os.getpid()}-{next(self._seq):06d}.{_safe(sink)}{suffix}"

    def write(self, path: Path, kind: str, sink: str, bodies: Iterable[bytes]) -> Path:
        """Write a whole file atomically and durably (tmp, fsync, rename, fsync dir)."""
        header = json.dumps({"kind": kind, "sink": sink, "version": 1}).encode()
        data = FILE_MAGIC + frame(header) + b"".join(frame(b) for b in bodies)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return path

    def spill(self, sink: str, bodies: list[bytes]) -> Path:
        return self.write(self.new_path(sink, SPILL_SUFFIX), "spill", sink, bodies)

    def dead_letter(self, sink: str, bodies: list[bytes]) -> Path:
        return self.write(self.new_path(sink, DEAD_SUFFIX), "dead", sink, bodies)

    def recover_tmp(self) -> int:
        """At start-up only: promote half-written files so their good records replay."""
        found = sorted(self.path.glob(f"*{TMP_SUFFIX}")) + sorted(self.dead_path.glob(f"*{TMP_SUFFIX}"))
        for tmp in found:
            os.replace(tmp, tmp.with_name(tmp.name[: -len(TMP_SUFFIX)]))
        return len(found)

    def spill_files(self) -> list[Path]:
        return sorted(self.path.glob(f"*{SPILL_SUFFIX}"))

    def dead_files(self) -> list[Path]:
        return sorted(self.dead_path.glob(f"*{DEAD_SUFFIX}"))

    @staticmethod
    def read(path: Path) -> tuple[str | None, list[bytes], int]:
        """(sink name or None if unreadable, intent record bodies, bad record count)."""
        bodies, bad = read_records(path.read_bytes())
        header = _header(bodies[0]) if bodies else None
        if header is not None:
            sink = header.get("sink")
            return (sink if isinstance(sink, str) else None), bodies[1:], bad
        for body in bodies:  # the header record was damaged: the records name their sink
            try:
                return body_sink(body), bodies, bad
            except (ValueError, KeyError, TypeError):
                continue
        return None, bodies, bad


def _header(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "kind" in data else None


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- replay ------------------------------------------------------------------------------

Deliver = Callable[[str, list[WriteIntent]], Awaitable[list[WriteIntent]]]
"""Write intents to a sink: written and dead-lettered ones are done; returns the unwritten."""


@dataclass
class ReplayStats:
    replayed: int = 0  # records a sink took or the dead-letter file holds
    bad: int = 0  # torn, corrupt or undecodable records
    kept_files: int = 0  # files left for a later pass (sink down or not registered)


async def replay(spill: SpillDir, deliver: Deliver, types_for: Callable[[str], Mapping[str, type] | None],
                 batch_size: int, run_io: Callable[..., Awaitable[Any]],
                 stats: ReplayStats | None = None) -> ReplayStats:
    """One pass over the spill files, oldest first; a sink that fails is skipped until the next pass.

    `stats` is updated as the pass goes, so a pass cut short still tells what it did.
    """
    stats = stats if stats is not None else ReplayStats()
    down: set[str] = set()
    for path in spill.spill_files():
        sink, bodies, bad = await run_io(spill.read, path)
        if sink is None:  # nothing readable is left in it
            stats.bad += max(bad, 1)
            await run_io(os.replace, path, path.with_name(path.name + CORRUPT_SUFFIX))
            continue
        types = types_for(sink)
        if sink in down or types is None:
            stats.kept_files += 1
            continue
        items = _decode(bodies, types)
        bad += len(bodies) - len(items)
        if bad:
            stats.bad += bad
            path = await run_io(_quarantine, spill, path, sink, [b for b, _ in items])
        left = await _deliver_file(deliver, sink, items, batch_size, stats)
        if not left:
            await run_io(path.unlink, True)
            continue
        down.add(sink)
        stats.kept_files += 1
        if len(left) < len(items):  # progress: keep only what is still owed
            await run_io(spill.write, path, "spill", sink, [b for b, _ in left])
    return stats


def _decode(bodies: list[bytes], types: Mapping[str, type]) -> list[tuple[bytes, WriteIntent]]:
    items = []
    for body in bodies:
        try:
            items.append((body, intent_from_body(body, types)))
        except (ValueError, KeyError, TypeError):
            continue
    return items


def _quarantine(spill: SpillDir, path: Path, sink: str, good: list[bytes]) -> Path:
    """Save the good records to a new file, then keep the damaged one as `.corrupt`."""
    fresh = spill.spill(sink, good)
    os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
    return fresh


async def _deliver_file(deliver: Deliver, sink: str, items: list[tuple[bytes, WriteIntent]],
                        batch_size: int, stats: ReplayStats) -> list[tuple[bytes, WriteIntent]]:
    """Deliver in batches; on the first batch the sink cannot take, return all that is left."""
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        unwritten = await deliver(sink, [intent for _, intent in chunk])
        stats.replayed += len(chunk) - len(unwritten)
        if unwritten:
            failed = {id(i) for i in unwritten}
            return [it for it in chunk if id(it[1]) in failed] + items[start + batch_size:]
    return []
