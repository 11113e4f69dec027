"""Replay of spill files: delete only what was taken, isolate poison, spare down sinks, survive damage."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from piko.persistence import spill
from piko.persistence.intent import WriteIntent
from piko.persistence.records import frame, intent_body
from piko.persistence.replay import Delivery, Replayer, ReplayStats
from tests.conftest import wait_until
from tests.persistence.conftest import bodies, intent

pytestmark = pytest.mark.timeout(30)


class FakeSink:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.dead: list[str] = []
        self.poison: set[str] = set()
        self.is_down = False
        self.hang_s = 0.0
        self.limit: int | None = None  # batches it takes before going down
        self.calls = 0
        self.ok_writes = 0


class Target:
    """A ReplayTarget over fake sinks, with the lanes' rules: a chunk is written whole, or its
    poison is dead-lettered when the rest of it gets through, or it comes back unwritten."""

    def __init__(self, **sinks: FakeSink) -> None:
        self.sinks = sinks

    def types_for(self, sink: str) -> Mapping[str, type] | None:
        return {} if sink in self.sinks else None

    async def deliver(self, sink: str, intents: list[WriteIntent]) -> Delivery:
        s = self.sinks[sink]
        s.calls += 1
        if s.hang_s:
            await asyncio.sleep(s.hang_s)
            return Delivery(intents, TimeoutError(), is_timeout=True)
        if s.limit == 0:
            s.is_down = True
        if s.is_down:
            return Delivery(intents, ConnectionError("down"))
        keys = [str(i.key) for i in intents]
        good = [k for k in keys if k not in s.poison]
        if not good:
            return Delivery(intents, ValueError("poison"))
        s.keys += good
        s.dead += [k for k in keys if k in s.poison]
        s.ok_writes += 1
        if s.limit is not None:
            s.limit -= 1
        return Delivery([])

    async def isolate(self, sink: str, intents: list[WriteIntent], error: Exception) -> None:
        s = self.sinks[sink]
        for i in intents:
            (s.dead if str(i.key) in s.poison else s.keys).append(str(i.key))

    def health(self, sink: str) -> tuple[int, bool]:
        return self.sinks[sink].ok_writes, False


def replay(spill_dir: spill.SpillDir, target: Target, replayer: Replayer | None = None,
           batch_size: int = 10) -> ReplayStats:
    replayer = replayer or Replayer(spill_dir, target, batch_size, asyncio.to_thread)
    return asyncio.run(replayer.run_pass())


def test_replay_deletes_a_file_only_after_every_record_was_taken(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("rec", bodies(25))
    sink = FakeSink()
    sink.limit = 1
    stats = replay(spill_dir, Target(rec=sink))
    assert (stats.replayed, stats.kept_files) == (10, 1)
    [kept] = spill_dir.spill_files()
    assert len(spill_dir.read(kept)[1]) == 15  # only what is still owed is kept
    sink.limit, sink.is_down = None, False
    replay(spill_dir, Target(rec=sink))
    assert sink.keys == [str(i) for i in range(25)]
    assert spill_dir.spill_files() == []


def test_files_of_unregistered_sinks_are_kept(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("gone", bodies(2, sink="gone"))
    assert replay(spill_dir, Target(rec=FakeSink())).kept_files == 1
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
    sink = FakeSink()
    stats = replay(spill_dir, Target(rec=sink))
    assert sorted(sink.keys, key=int) == [str(i) for i in (0, 1, 2, 3, 5, 6, 7, 8)]
    assert stats.bad == 3
    assert spill_dir.spill_files() == []
    assert len(list(spill_dir.path.glob("*.corrupt"))) == 3  # the damaged bytes stay for inspection


def test_a_lone_poison_file_is_dead_lettered_once_the_sink_takes_other_writes(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("rec", [intent_body(intent("P"))])
    spill_dir.spill("rec", bodies(10))
    sink = FakeSink()
    sink.poison = {"P"}
    stats = replay(spill_dir, Target(rec=sink))
    assert sink.keys == [str(i) for i in range(10)] and sink.dead == ["P"]
    assert spill_dir.spill_files() == [] and stats.kept_files == 0


def test_a_poison_file_left_alone_is_isolated_on_a_later_pass_after_live_writes(spill_dir: spill.SpillDir) -> None:
    spill_dir.spill("rec", [intent_body(intent("P"))])
    sink = FakeSink()
    sink.poison = {"P"}
    target = Target(rec=sink)
    replayer = Replayer(spill_dir, target, 10, asyncio.to_thread)
    assert replay(spill_dir, target, replayer).kept_files == 1  # no evidence yet the sink is up
    sink.ok_writes += 1  # live traffic got through meanwhile
    replay(spill_dir, target, replayer)
    assert sink.dead == ["P"] and spill_dir.spill_files() == []


def test_a_down_sink_is_spared_after_a_few_files_and_every_file_is_kept(spill_dir: spill.SpillDir) -> None:
    for n in range(10):
        spill_dir.spill("rec", bodies(3, start=3 * n))
    sink = FakeSink()
    sink.is_down = True
    stats = replay(spill_dir, Target(rec=sink))
    assert sink.calls == 3 and stats.kept_files == 10 and len(spill_dir.spill_files()) == 10
    assert sink.dead == []  # a down sink never looks like poison


def test_a_hung_sink_is_tried_once_per_pass_while_other_sinks_replay_beside_it(spill_dir: spill.SpillDir) -> None:
    for n in range(3):
        spill_dir.spill("hung", bodies(2, start=2 * n, sink="hung"))
    spill_dir.spill("ok", bodies(4, sink="ok"))
    hung, ok = FakeSink(), FakeSink()
    hung.hang_s = 0.3

    async def run() -> tuple[float, float]:
        replayer = Replayer(spill_dir, Target(hung=hung, ok=ok), 10, asyncio.to_thread)
        started = time.monotonic()
        task = asyncio.create_task(replayer.run_pass())
        await wait_until(lambda: len(ok.keys) == 4, timeout=2)
        ok_at = time.monotonic() - started
        await task
        return ok_at, time.monotonic() - started

    ok_at, total = asyncio.run(run())
    assert ok_at < 0.25 and total < 0.6  # in parallel; 3 files x 0.3 s would be 0.9 s
    assert hung.calls == 1 and len(spill_dir.spill_files()) == 3


def test_entries_that_are_not_regular_files_are_skipped(spill_dir: spill.SpillDir) -> None:
    (spill_dir.path / "x.rec.spill").mkdir()
    spill_dir.spill("rec", bodies(2))
    sink = FakeSink()
    stats = replay(spill_dir, Target(rec=sink))
    assert stats.skipped == 1 and sink.keys == ["0", "1"]
    assert (spill_dir.path / "x.rec.spill").is_dir()


def test_a_valid_record_nested_too_deeply_to_decode_is_set_aside(spill_dir: spill.SpillDir) -> None:
    path = spill_dir.spill("rec", bodies(3))
    deep = b'{"s":"rec","k":"x","p":' + b"[" * 100_000 + b"]" * 100_000 + b',"j":null,"r":null,"t":null,' \
        b'"i":null,"o":"upsert"}'
    path.write_bytes(path.read_bytes() + frame(deep))
    sink = FakeSink()
    stats = replay(spill_dir, Target(rec=sink))
    assert sink.keys == ["0", "1", "2"] and stats.bad == 1
    assert [p.name for p in spill_dir.path.glob("*.corrupt")] == [path.name + ".corrupt"]


def test_an_unreadable_file_is_set_aside_and_the_others_replay(spill_dir: spill.SpillDir, monkeypatch) -> None:
    broken = spill_dir.spill("rec", bodies(2))
    spill_dir.spill("rec", bodies(2, start=2))
    real_read = spill.SpillDir.read

    def read(path: Path) -> tuple[str | None, list[bytes], int]:
        if path == broken:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(path)

    monkeypatch.setattr(spill_dir, "read", read)
    sink = FakeSink()
    stats = replay(spill_dir, Target(rec=sink))
    assert sink.keys == ["2", "3"] and stats.bad == 1
    assert [p.name for p in spill_dir.path.glob("*.corrupt")] == [broken.name + ".corrupt"]
