"""Spill files: checksummed records, atomic 0600 files, a start-up tidy that follows the commit protocol."""

from __future__ import annotations

import json
import os
import stat

import pytest

from piko.clock import SystemClock
from piko.errors import ConfigError
from piko.persistence import spill
from piko.persistence.records import FILE_MAGIC, REC_MAGIC, frame
from tests.persistence.conftest import bodies


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


@pytest.mark.parametrize("torn_at", [0, 20, -5])  # empty, cut inside the header, cut in the last record
def test_a_tmp_next_to_its_file_is_an_unfinished_rewrite_and_the_file_is_kept(
        spill_dir: spill.SpillDir, torn_at: int) -> None:
    path = spill_dir.spill("rec", bodies(10))
    tmp = path.with_name(path.name + spill.TMP_SUFFIX)
    tmp.write_bytes(FILE_MAGIC + frame(b"rewrite") + frame(bodies(1)[0]))
    tmp.write_bytes(tmp.read_bytes()[:torn_at] if torn_at else b"")
    assert spill_dir.recover_tmp() == (1, 0)
    assert spill_dir.spill_files() == [path] and not tmp.exists()
    assert spill_dir.read(path) == ("rec", bodies(10), 0)


def test_a_lone_tmp_is_a_new_file_that_never_committed_and_its_whole_records_are_salvaged(
        spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(2))
    tmp = path.with_name("later.rec.spill.tmp")
    tmp.write_bytes(path.read_bytes()[:-5])
    tmp.chmod(0o644)
    path.unlink()
    assert spill_dir.recover_tmp() == (0, 1)
    [promoted] = spill_dir.spill_files()
    assert spill_dir.read(promoted) == ("rec", bodies(1), 1)
    assert stat.S_IMODE(os.stat(promoted).st_mode) == 0o600


def test_a_damaged_header_still_yields_the_sink_from_the_records(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(2))
    data = bytearray(path.read_bytes())
    data[len(FILE_MAGIC) + 14] ^= 0xFF  # inside the header record
    path.write_bytes(bytes(data))
    assert spill_dir.read(path) == ("rec", bodies(2), 1)


def test_a_readable_header_that_names_no_sink_counts_as_one_bad_record(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(3))
    header = frame(json.dumps({"kind": "spill", "sink": 5}).encode())  # passes its checksum
    records = path.read_bytes()[len(FILE_MAGIC):]
    first = records.index(REC_MAGIC, 1)  # past the real header record
    path.write_bytes(FILE_MAGIC + header + records[first:])
    assert spill_dir.read(path) == ("rec", bodies(3), 1)  # the records still name their sink
