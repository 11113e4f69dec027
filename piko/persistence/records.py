"""The on-disk record format shared by spill files and the journal, and intents as record bodies.

A file is an 8-byte file magic with the version, then records of REC_MAGIC | length u32 |
crc32 u32 | body. A record with a bad checksum or cut short is skipped and counted, and the
reader resynchronises on the next REC_MAGIC; a damaged file magic counts as one bad record
and the records after it are still read, so one bad byte never costs more than its record.
An intent body is JSON (see `intent_body`); its sink can be read without decoding the payload.
What a file holds and when it is written is policy, kept in spill.py and journal.py; this
module imports neither (only codec and intent), so both can import it.
"""

from __future__ import annotations

import json
import os
import reprlib
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from piko.persistence import codec
from piko.persistence.intent import WriteIntent

FILE_MAGIC = b"PIKOSPL\x01"
REC_MAGIC = b"\xa5PR\x01"
_REC_HEAD = struct.Struct(">II")
_HEAD_SIZE = len(REC_MAGIC) + _REC_HEAD.size
MAX_RECORD_BYTES = 0xFFFFFFFF  # what the 32-bit length holds: whatever is written can be read back


def frame(body: bytes) -> bytes:
    """One record: magic, length, CRC32 of the body, body."""
    if len(body) > MAX_RECORD_BYTES:
        raise codec.CodecError(f"a record of {len(body)} bytes is over the spill format's {MAX_RECORD_BYTES}")
    return REC_MAGIC + _REC_HEAD.pack(len(body), zlib.crc32(body)) + body


def frame_head(prefix: bytes, body: bytes) -> bytes:
    """The record of `prefix + body` up to the end of `prefix`: written before `body`, it frames
    both without copying `body` (the journal's hot path: a record per intent)."""
    size = len(prefix) + len(body)
    if size > MAX_RECORD_BYTES:
        raise codec.CodecError(f"a record of {size} bytes is over the spill format's {MAX_RECORD_BYTES}")
    return REC_MAGIC + _REC_HEAD.pack(size, zlib.crc32(body, zlib.crc32(prefix))) + prefix


def read_records(data: bytes) -> tuple[list[bytes], int]:
    """(good record bodies, count of bad or torn records) of a file's bytes."""
    bodies: list[bytes] = []
    bad = 0
    pos, end = len(FILE_MAGIC), len(data)
    if not data.startswith(FILE_MAGIC):  # a damaged magic, or not our file: records decide
        bad = 1
        found = data.find(REC_MAGIC)
        pos = end if found < 0 else found
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
        record["e"] = f"{type(error).__name__}: {_safe_repr(error, str)}"
    try:
        return codec.dumps(record)
    except codec.CodecError as exc:
        if error is None:
            raise
        record["p"] = _safe_repr(intent.payload)  # a dead letter keeps what it can, and says why
        record["e"] += f" (payload stored as repr: {exc})"
    try:
        return codec.dumps(record)
    except codec.CodecError:  # another field cannot be stored either: every field as its repr
        error_text = str(record["e"]).encode("utf-8", "backslashreplace").decode("utf-8")
        return codec.dumps({k: error_text if k == "e" else _safe_repr(v) for k, v in record.items()})


def _safe_repr(value: Any, show: Callable[[Any], str] = repr) -> str:
    """repr that never raises: a cycle or deep nesting falls back to reprlib's bounded form."""
    try:
        return show(value)
    except Exception:
        try:
            return reprlib.repr(value)
        except Exception:
            return f"<{type(value).__qualname__} object that cannot be shown>"


def body_sink(body: bytes) -> str:
    """The sink name of an intent record, without decoding the payload (ValueError if unreadable)."""
    try:
        return str(json.loads(body)["s"])
    except RecursionError:
        raise ValueError("record nested too deeply to read") from None


def intent_from_body(body: bytes, types: Mapping[str, type]) -> WriteIntent:
    """The intent of a record body; CodecError for anything that is not a whole, valid intent."""
    try:
        d = json.loads(body)
        return WriteIntent(
            sink=d["s"], key=d["k"], payload=codec.decode(d["p"], types), job_id=d["j"], run_id=d["r"],
            scheduled_time=codec.decode(d["t"]), idempotency_key=d["i"], op_type=d["o"])
    except codec.CodecError:
        raise
    except RecursionError:
        raise codec.CodecError("stored intent is nested too deeply to decode") from None
    except (ValueError, KeyError, TypeError) as exc:  # ConfigError (a bad field) is a ValueError
        raise codec.CodecError(f"stored intent cannot be decoded: {type(exc).__name__}: {exc}") from exc


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
