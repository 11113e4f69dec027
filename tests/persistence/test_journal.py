"""Journal: group commit, segment release and rotation, crash recovery into spill files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from piko.clock import SystemClock
from piko.persistence import journal as journal_mod
from piko.persistence import spill
from piko.persistence.journal import Journal, recover_journal
from tests.persistence.conftest import intent


def body(i: int, sink: str = "rec") -> bytes:
    return spill.intent_body(intent(i, sink=sink))


async def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch) -> None:
    syncs = []
    real = journal_mod._sync
    monkeypatch.setattr(journal_mod, "_sync", lambda fd: (syncs.append(fd), real(fd)))
    j = Journal(tmp_path / "journal", SystemClock(), asyncio.to_thread)
    await j.open()
    segments = await asyncio.gather(*(j.append(body(i)) for i in range(200)))
    assert len(syncs) < 50  # 1 for the header, then one per group, not one per append
    assert segments[0].refs == 200
    bodies, bad = spill.read_records(segments[0].path.read_bytes())
    assert (len(bodies), bad) == (201, 0)
    for seg in segments:
        j.release(seg)
    await j.close()
    assert list((tmp_path / "journal").iterdir()) == []  # nothing owed: the segment is deleted


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
    segments = [await j.append(body(i)) for i in range(20)]
    assert len({s.path for s in segments}) > 2
    for seg in segments:
        j.release(seg)
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
    segment.write_bytes(segment.read_bytes()[:-4])  # the last append was torn
    spill_dir = spill.SpillDir(tmp_path / "spill", SystemClock())
    spill_dir.open()
    assert recover_journal(tmp_path / "spill" / "journal", spill_dir) == (5, 1)
    by_sink = {spill_dir.read(p)[0]: len(spill_dir.read(p)[1]) for p in spill_dir.spill_files()}
    assert by_sink == {"a": 2, "b": 3}
    assert list((tmp_path / "spill" / "journal").iterdir()) == []
    spill_dir.close()
