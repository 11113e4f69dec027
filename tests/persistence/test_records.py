"""The record format shared by spill files and the journal: checksummed records that survive damage."""

from __future__ import annotations

import json

import pytest

from piko.persistence import records
from piko.persistence.codec import CodecError
from tests.persistence.conftest import intent

# A header and one record as piko has always written them: files on disk must keep reading back.
WRITTEN_BEFORE = b'PIKOSPL\x01\xa5PR\x01\x00\x00\x00\x10\x92\xf7}\xbf{"kind":"spill"}\xa5PR\x01\x00\x00\x00\x02\x9e\x83Hmab'


def test_the_bytes_on_disk_are_those_piko_has_always_written() -> None:
    assert records.FILE_MAGIC + records.frame(b'{"kind":"spill"}') + records.frame(b"ab") == WRITTEN_BEFORE
    assert records.read_records(WRITTEN_BEFORE) == ([b'{"kind":"spill"}', b"ab"], 0)


def test_a_head_written_before_its_body_is_the_same_record_as_frame() -> None:
    prefix, body = b"I\x00\x01", b'{"s":"rec"}'
    assert records.frame_head(prefix, body) + body == records.frame(prefix + body)


def test_records_round_trip() -> None:
    data = records.FILE_MAGIC + b"".join(records.frame(b) for b in [b"a", b"", b"ccc"])
    assert records.read_records(data) == ([b"a", b"", b"ccc"], 0)


def test_a_corrupt_record_is_skipped_and_counted_and_later_records_survive() -> None:
    framed = [records.frame(b"first"), records.frame(b"second"), records.frame(b"third")]
    damaged = bytearray(records.FILE_MAGIC + b"".join(framed))
    damaged[len(records.FILE_MAGIC) + len(framed[0]) + 14] ^= 0xFF  # a byte inside "second"
    assert records.read_records(bytes(damaged)) == ([b"first", b"third"], 1)


def test_a_corrupt_length_field_resynchronises_on_the_next_record() -> None:
    framed = [records.frame(b"first"), records.frame(b"second"), records.frame(b"third")]
    damaged = bytearray(records.FILE_MAGIC + b"".join(framed))
    damaged[len(records.FILE_MAGIC) + len(framed[0]) + 4] = 0x7F  # length of "second" now huge
    assert records.read_records(bytes(damaged)) == ([b"first", b"third"], 1)


def test_a_truncated_tail_keeps_every_whole_record() -> None:
    data = records.FILE_MAGIC + records.frame(b"whole") + records.frame(b"cut short")[:-3]
    assert records.read_records(data) == ([b"whole"], 1)


def test_a_file_without_the_magic_is_one_bad_record() -> None:
    assert records.read_records(b"garbage") == ([], 1)


@pytest.mark.parametrize("pos", range(len(records.FILE_MAGIC)))
def test_a_damaged_file_magic_costs_one_bad_record_not_the_file(pos: int) -> None:
    data = bytearray(records.FILE_MAGIC + records.frame(b"first") + records.frame(b"second"))
    data[pos] ^= 0xFF
    assert records.read_records(bytes(data)) == ([b"first", b"second"], 1)


def test_an_unencodable_dead_letter_keeps_its_repr_and_the_reason() -> None:
    loop: list[object] = []
    loop.append(loop)
    body = records.intent_body(intent("c", payload=loop), ValueError("no"))
    record = json.loads(body)
    assert record["p"] == "[[...]]" and "payload stored as repr" in record["e"]
    with pytest.raises(CodecError):
        records.intent_body(intent("c", payload=loop))  # a spill (not a dead letter) refuses it


def test_a_record_too_large_for_the_format_is_refused_when_framed(monkeypatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 10)
    with pytest.raises(ValueError, match="a record of 11 bytes is over the spill format's 10"):
        records.frame(b"x" * 11)
    with pytest.raises(ValueError, match="a record of 11 bytes"):
        records.frame_head(b"x", b"x" * 10)
    assert records.read_records(records.FILE_MAGIC + records.frame(b"x" * 10)) == ([b"x" * 10], 0)
