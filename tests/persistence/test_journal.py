"""Journal: group commit, acks, segment release and rotation, crash recovery into spill files."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest

from piko.clock import SystemClock
from piko.persistence import journal as journal_mod
from piko.persistence import spill
from piko.persistence.journal import Journal, recover_journal
from piko.persistence.records import FILE_MAGIC, frame, intent_body, read_records
from tests.persistence.conftest import intent


def body(i: int, sink: str = "rec") -> bytes:
    return intent_body(intent(i, sink=sink))


async def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch) -> None:
    syncs = []
    real = journal_mod._sync
    monkeypatch.setattr(journal_mod, "_sync", lambda fd: (syncs.append(fd), real(fd)))
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread)
    await j.open()
    tickets = await asyncio.gather(*(j.append(body(i)) for i in range(200)))
    assert len(syncs) < 50  # 1 for the header, then one per group, not one per append
    segment = tickets[0][0]
    assert segment.refs == 200 and sorted(seq for _, seq in tickets) == list(range(1, 201))
    bodies, bad = journal_mod.read_segment(segment.path)
    assert (len(bodies), bad) == (201, 0)
    for seg, seq in tickets:
        j.release(seg, seq)
    await j.close()
    assert list((tmp_path / "journal").iterdir()) == []  # nothing owed: the segment is deleted


async def test_segments_are_zero_filled_ahead_so_commits_overwrite_blocks_the_file_has(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread, segment_bytes=64 * 1024)
    await j.open()
    segment, _ = await j.append(body(1))
    first_size = os.stat(segment.path).st_size
    assert first_size == segment.filled > segment.size  # zeros after the header and the first commit
    assert 64 * 1024 < first_size < 65 * 1024  # fill-ahead capped at segment_bytes
    await asyncio.gather(*(j.append(body(i)) for i in range(2, 40)))
    assert os.stat(segment.path).st_size == first_size  # later commits stayed inside the zeros
    await j.close()
    assert journal_mod.read_segment(segment.path)[1] == 0  # the zero tail is not a bad record
    assert read_records(segment.path.read_bytes())[1] == 1  # what an older piko reads: one bad record


async def test_a_commit_larger_than_the_zeros_ahead_extends_them(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread, segment_bytes=1024)
    await j.open()
    big = intent_body(intent(1, payload={"blob": "x" * 5000}))
    segment, _ = await j.append(big)
    assert segment.size > 5000 and os.stat(segment.path).st_size == segment.filled == segment.size + 1024
    bodies, bad = journal_mod.read_segment(segment.path)
    assert bad == 0 and bodies[-1].endswith(big)
    await j.close()


async def test_a_segment_with_unreleased_intents_survives_close(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread)
    await j.open()
    await j.append(body(1))
    await j.close()
    [left] = (tmp_path / "journal").iterdir()
    assert oct(os.stat(left).st_mode & 0o777) == "0o600"


async def test_rotated_segments_are_deleted_when_released(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread, segment_bytes=500)
    await j.open()
    tickets = [await j.append(body(i)) for i in range(20)]
    assert len({seg.path for seg, _ in tickets}) > 2
    for seg, seq in tickets:
        j.release(seg, seq)
    await j.close()
    assert list((tmp_path / "journal").iterdir()) == []


def test_left_over_segments_become_per_sink_spill_files(tmp_path: Path) -> None:
    async def write() -> None:
        j = Journal(tmp_path / "spill" / "journal", SystemClock(), asyncio.to_thread)
        await j.open()
        for i in range(6):
            await j.append(body(i, sink="a" if i % 2 else "b"))
        await j.close()  # never released: as after a kill -9

    asyncio.run(write())
    [segment] = (tmp_path / "spill" / "journal").iterdir()
    data = segment.read_bytes()
    end = len(data.rstrip(b"\0"))
    segment.write_bytes(data[:end - 4] + bytes(len(data) - end + 4))  # the last append was torn
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    found = recover_journal(tmp_path / "spill" / "journal", spill_dir)
    assert (found.records, found.bad, found.kept) == (5, 1, [])
    by_sink = {spill_dir.read(p)[0]: len(spill_dir.read(p)[1]) for p in spill_dir.spill_files()}
    assert by_sink == {"a": 2, "b": 3}
    assert list((tmp_path / "spill" / "journal").iterdir()) == []
    spill_dir.close()


def crash_with_journal(journal_dir: Path, n: int, released: set[int], ack_interval_s: float = 0.01) -> None:
    """Append n intents, release some, let an ack flush pass, then stop as a kill -9 would."""
    async def run() -> None:
        j = Journal(journal_dir, SystemClock(), asyncio.to_thread, ack_interval_s=ack_interval_s)
        await j.open()
        tickets = [await j.append(body(i)) for i in range(n)]
        for i in sorted(released):
            j.release(*tickets[i])
        await asyncio.sleep(ack_interval_s * 5)
        assert j._task is not None
        j._task.cancel()  # no close(): nothing more reaches the file

    asyncio.run(run())


def test_released_intents_are_not_recovered_after_a_crash(tmp_path: Path) -> None:
    journal_dir = tmp_path / "spill" / "journal"
    crash_with_journal(journal_dir, 10, released={0, 1, 2, 5, 9})
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    found = recover_journal(journal_dir, spill_dir)
    [path] = spill_dir.spill_files()
    keys = [json.loads(b)["k"] for b in spill_dir.read(path)[1]]
    assert keys == ["3", "4", "6", "7", "8"] and (found.records, found.acked, found.bad) == (5, 5, 0)
    spill_dir.close()


def test_acks_in_a_later_segment_apply_to_an_earlier_one(tmp_path: Path) -> None:
    journal_dir = tmp_path / "spill" / "journal"

    async def run() -> None:
        j = Journal(journal_dir, SystemClock(), asyncio.to_thread, segment_bytes=400, ack_interval_s=0.01)
        await j.open()
        tickets = [await j.append(body(i)) for i in range(8)]
        first = tickets[0][0]
        assert tickets[1][0] is first and tickets[-1][0] is not first  # 0 and 1 share the first segment
        for ticket in tickets[1:]:  # the first segment stays (0 is owed); 1's ack goes to a later one
            j.release(*ticket)
        await asyncio.sleep(0.05)
        assert j._task is not None
        j._task.cancel()

    asyncio.run(run())
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    found = recover_journal(journal_dir, spill_dir)
    [path] = spill_dir.spill_files()
    assert [json.loads(b)["k"] for b in spill_dir.read(path)[1]] == ["0"] and found.acked >= 1
    spill_dir.close()


def test_version_1_segments_are_still_recovered(tmp_path: Path) -> None:
    journal_dir = tmp_path / "spill" / "journal"
    journal_dir.mkdir(parents=True)
    header = frame(b'{"kind":"journal","version":1}')
    (journal_dir / "old.journal").write_bytes(FILE_MAGIC + header + b"".join(frame(body(i)) for i in range(3)))
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    assert recover_journal(journal_dir, spill_dir).records == 3
    assert list(journal_dir.iterdir()) == []
    spill_dir.close()


def test_a_segment_of_a_newer_format_is_kept_untouched(tmp_path: Path) -> None:
    journal_dir = tmp_path / "spill" / "journal"
    journal_dir.mkdir(parents=True)
    data = FILE_MAGIC + frame(b'{"kind":"journal","version":99}') + frame(b"Zfuture")
    (journal_dir / "new.journal").write_bytes(data)
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    found = recover_journal(journal_dir, spill_dir)
    assert found.kept == [journal_dir / "new.journal"] and (journal_dir / "new.journal").read_bytes() == data
    spill_dir.close()


def test_a_segment_that_cannot_be_spilled_is_kept_for_later(tmp_path: Path, monkeypatch) -> None:
    journal_dir = tmp_path / "spill" / "journal"
    crash_with_journal(journal_dir, 3, released=set())
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    monkeypatch.setattr(spill_dir, "spill", disk_full)
    found = recover_journal(journal_dir, spill_dir)
    assert len(found.kept) == 1 and found.records == 0
    monkeypatch.undo()
    assert recover_journal(journal_dir, spill_dir, found.kept).records == 3
    spill_dir.close()


async def test_a_journal_opened_on_a_full_disk_fails_appends_until_there_is_room(tmp_path: Path, monkeypatch) -> None:
    real_write = Journal._write
    is_full = True

    def write(segment: journal_mod.Segment, data: bytes, is_durable: bool) -> None:
        if is_full:
            disk_full()
        real_write(segment, data, is_durable)

    monkeypatch.setattr(Journal, "_write", staticmethod(write))
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread)
    await j.open()  # degraded, not failed
    assert list((tmp_path / "journal").iterdir()) == []  # the half-made segment was removed
    with pytest.raises(OSError, match="No space left"):
        await j.append(body(1))
    is_full = False
    segment, seq = await j.append(body(2))
    j.release(segment, seq)
    await j.close()


def disk_full(*_: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")
