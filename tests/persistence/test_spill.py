"""Spill files: checksummed records, atomic 0600 files, recovery that survives damage."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from piko.clock import SystemClock
from piko.errors import ConfigError
from piko.persistence import spill
from piko.persistence.intent import WriteIntent
from tests.persistence.conftest import intent


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [spill.intent_body(intent(i)) for i in range(start, start + n)]


@pytest.fixture
def spill_dir(tmp_path: Path) -> spill.SpillDir:
    d = spill.SpillDir(tmp_path / "spill", SystemClock())
    d.open()
    yield d
    d.close()


def test_records_round_trip() -> None:
    data = spill.FILE_MAGIC + b"".join(spill.frame(b) for b in [b"a", b"", b"ccc"])
    assert spill.read_records(data) == ([b"a", b"", b"ccc"], 0)


def test_a_corrupt_record_is_skipped_and_counted_and_later_records_survive() -> None:
    records = [spill.frame(b"first"), spill.frame(b"second"), spill.frame(b"third")]
    damaged = bytearray(spill.FILE_MAGIC + b"".join(records))
    damaged[len(spill.FILE_MAGIC) + len(records[0]) + 14] ^= 0xFF  # a byte inside "second"
    assert spill.read_records(bytes(damaged)) == ([b"first", b"third"], 1)


def test_a_corrupt_length_field_resynchronises_on_the_next_record() -> None:
    records = [spill.frame(b"first"), spill.frame(b"second"), spill.frame(b"third")]
    damaged = bytearray(spill.FILE_MAGIC + b"".join(records))
    damaged[len(spill.FILE_MAGIC) + len(records[0]) + 4] = 0x7F  # length of "second" now huge
    assert spill.read_records(bytes(damaged)) == ([b"first", b"third"], 1)


def test_a_truncated_tail_keeps_every_whole_record() -> None:
    data = spill.FILE_MAGIC + spill.frame(b"whole") + spill.frame(b"cut short")[:-3]
    assert spill.read_records(data) == ([b"whole"], 1)


def test_a_file_without_the_magic_is_one_bad_record() -> None:
    assert spill.read_records(b"garbage") == ([], 1)


def test_files_are_0600_in_a_0700_directory_and_no_tmp_file_is_left(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(3))
    assert stat.S_IMODE(os.stat(spill_dir.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert spill_dir.read(path) == ("rec", bodies(3), 0)
    assert [p.name for p in spill_dir.path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_second_process_cannot_share_the_directory(spill_dir: spill.SpillDir) -> None:
    other = spill.SpillDir(spill_dir.path, SystemClock())
    with pytest.raises(ConfigError, match="in use by another process"):
        other.open()


def test_half_written_tmp_files_are_promoted_at_start_up(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(2))
    tmp = path.with_name("later.rec.spill.tmp")
    tmp.write_bytes(path.read_bytes()[:-5])
    path.unlink()
    assert spill_dir.recover_tmp() == 1
    [promoted] = spill_dir.spill_files()
    assert spill_dir.read(promoted) == ("rec", bodies(1), 1)


def test_a_damaged_header_still_yields_the_sink_from_the_records(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(2))
    data = bytearray(path.read_bytes())
    data[len(spill.FILE_MAGIC) + 14] ^= 0xFF  # inside the header record
    path.write_bytes(bytes(data))
    assert spill_dir.read(path) == ("rec", bodies(2), 1)


class Target:
    """A replay target: takes intents unless down; optionally only the first `limit` batches."""

    def __init__(self, limit: int | None = None) -> None:
        self.keys: list[str] = []
        self.limit = limit

    async def deliver(self, sink: str, intents: list[WriteIntent]) -> list[WriteIntent]:
        if self.limit is not None:
            if self.limit == 0:
                return intents
            self.limit -= 1
        self.keys += [str(i.key) for i in intents]
        return []


def replay(spill_dir: spill.SpillDir, target: Target, batch_size: int = 10,
           known: tuple[str, ...] = ("rec",)) -> spill.ReplayStats:
    async def run() -> spill.ReplayStats:
        return await spill.replay(spill_dir, target.deliver, lambda s: {} if s in known else None,
                                  batch_size, asyncio.to_thread)
    return asyncio.run(run())


def test_replay_deletes_a_file_only_after_every_record_was_taken(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("rec", bodies(25))
    target = Target(limit=1)
    stats = replay(spill_dir, target)
    assert (stats.replayed, stats.kept_files) == (10, 1)
    [kept] = spill_dir.spill_files()
    assert len(spill_dir.read(kept)[1]) == 15  # only what is still owed is kept
    target.limit = None
    replay(spill_dir, target)
    assert target.keys == [str(i) for i in range(25)]
    assert spill_dir.spill_files() == []


def test_files_of_unregistered_sinks_are_kept(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("gone", bodies(2))
    assert replay(spill_dir, Target()).kept_files == 1
    assert len(spill_dir.spill_files()) == 1


def test_corrupt_and_truncated_files_recover_their_good_records(spill_dir: spill.SpillDir) -> None:
    corrupt = spill_dir.spill("rec", bodies(5))
    data = bytearray(corrupt.read_bytes())
    data[-30] ^= 0xFF  # inside the last record
    corrupt.write_bytes(bytes(data))
    truncated = spill_dir.spill("rec", bodies(5, start=5))
    truncated.write_bytes(truncated.read_bytes()[:-7])
    garbage = spill_dir.path / "zz.rec.spill"
    garbage.write_bytes(b"\x00" * 100)
    target = Target()
    stats = replay(spill_dir, target)
    assert sorted(target.keys, key=int) == [str(i) for i in (0, 1, 2, 3, 5, 6, 7, 8)]
    assert stats.bad == 3
    assert spill_dir.spill_files() == []
    assert len(list(spill_dir.path.glob("*.corrupt"))) == 3  # the damaged bytes stay for inspection
