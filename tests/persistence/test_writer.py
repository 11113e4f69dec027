"""PersistenceWriter: back-pressure, per-sink isolation, retries, poison, spill and replay."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from piko.clock import SystemClock
from piko.errors import ConfigError, WriterFull
from piko.persistence import journal as journal_mod
from piko.persistence import spill
from piko.persistence.records import frame, intent_body
from piko.persistence.sink_base import TypedSink, on
from piko.persistence.writer import PersistenceWriter, UnknownSink, WriterClosed, backoff_s, current_run_id
from tests.conftest import wait_until
from tests.persistence.conftest import RecordingSink, counter, intent

pytestmark = pytest.mark.timeout(30)
Make = Callable[..., PersistenceWriter]


def keys(n: int, start: int = 0) -> list[str]:
    return [str(i) for i in range(start, start + n)]


def test_the_writer_is_built_and_sinks_registered_without_an_event_loop() -> None:
    writer = PersistenceWriter()
    writer.register_sink(RecordingSink())
    with pytest.raises(ConfigError, match="already registered"):
        writer.register_sink(RecordingSink())


async def test_enqueue_outside_start_and_stop_and_to_unknown_sinks_fails_clearly(make_writer: Make) -> None:
    writer = make_writer()
    writer.register_sink(RecordingSink())
    with pytest.raises(WriterClosed, match="not started"):
        await writer.enqueue(intent(1))
    async with writer:
        with pytest.raises(UnknownSink, match="no sink named 'nope'.*registered: rec"):
            await writer.enqueue(intent(1, sink="nope"))
    with pytest.raises(WriterClosed, match="stopping or stopped"):
        writer.enqueue_nowait(intent(1))


async def test_intents_are_batched_by_size_and_by_age(make_writer: Make) -> None:
    sink = RecordingSink()
    writer = make_writer(batch_size=10, batch_timeout_s=0.05)
    writer.register_sink(sink)
    async with writer:
        for i in range(23):
            await writer.enqueue(intent(i))
        await wait_until(lambda: len(sink.keys) == 23)
    assert sink.batches[:2] == [10, 10] and sink.keys == keys(23)


async def test_back_pressure_bounds_memory(make_writer: Make, metrics) -> None:
    sink = RecordingSink(delay_s=0.005)
    writer = make_writer(queue_max=40, batch_size=10)
    writer.register_sink(sink)
    highest = 0

    async def produce(start: int) -> None:
        nonlocal highest
        for i in range(start, start + 100):
            await writer.enqueue(intent(i))
            highest = max(highest, writer.queue_size)

    async with writer:
        await asyncio.gather(*(produce(p * 100) for p in range(10)))
        await writer.flush(timeout=10)
    assert highest <= 40
    assert sorted(sink.keys, key=int) == keys(1000)
    assert metrics.persistence_queue_size.value == 0


async def test_enqueue_nowait_raises_writer_full_when_the_lane_is_full(make_writer: Make) -> None:
    sink = RecordingSink()
    sink.hang_until = asyncio.Event()
    writer = make_writer(queue_max=4, batch_size=2, stall_s=60)
    writer.register_sink(sink)
    async with writer:
        for i in range(4):
            writer.enqueue_nowait(intent(i))
        with pytest.raises(WriterFull, match="sink 'rec' is full \\(4 intents"):
            writer.enqueue_nowait(intent(4))
        sink.hang_until.set()
        await writer.flush(timeout=5)
    assert sink.keys == keys(4)


class WaitCountingClock(SystemClock):
    """Counts, per event, how many tasks are in wait() on it at once."""

    def __init__(self) -> None:
        self.waiting: dict[int, int] = {}
        self.most = 0

    async def wait(self, event: asyncio.Event | None, timeout: float) -> bool:
        key = id(event)
        self.waiting[key] = self.waiting.get(key, 0) + 1
        self.most = max(self.most, self.waiting[key])
        try:
            return await super().wait(event, timeout)
        finally:
            self.waiting[key] -= 1


async def test_producers_waiting_for_room_queue_so_freed_room_wakes_one_not_all(make_writer: Make) -> None:
    sink = RecordingSink()
    sink.hang_until = asyncio.Event()
    clock = WaitCountingClock()
    writer = make_writer(queue_max=4, batch_size=2, stall_s=60, clock=clock)
    writer.register_sink(sink)
    async with writer:
        for i in range(4):
            writer.enqueue_nowait(intent(i))
        producers = [asyncio.create_task(writer.enqueue(intent(i))) for i in range(4, 14)]
        await asyncio.sleep(0.05)
        assert not any(p.done() for p in producers)
        assert clock.most == 1  # one producer watches the lane for room; nine queue behind it
        sink.hang_until.set()
        await asyncio.gather(*producers)
        await writer.flush(timeout=5)
    assert sorted(sink.keys, key=int) == keys(14)


async def test_a_sink_down_for_a_while_then_back_gets_every_intent(make_writer: Make, metrics) -> None:
    sink = RecordingSink()
    sink.is_down = True
    writer = make_writer(queue_max=100, batch_size=20)
    writer.register_sink(sink)
    async with writer:
        for i in range(500):
            await writer.enqueue(intent(i))
        await writer.flush(timeout=10)  # written or spilled
        assert sink.keys == [] and writer.queue_size == 0
        sink.is_down = False
        await wait_until(lambda: len(set(sink.keys)) == 500 and not writer._spill.spill_files(), timeout=10)
    assert set(sink.keys) == set(keys(500))
    assert counter(metrics.persistence_fallback_total) >= 500
    assert counter(metrics.persistence_recovery_total) >= 500
    assert counter(metrics.persistence_retried_total, sink="rec") > 0
    assert counter(metrics.persistence_written_total, sink="rec") >= 500
    assert list((writer._spill.path).glob("*.spill")) == []


async def test_a_poison_intent_does_not_block_its_batch(make_writer: Make, metrics) -> None:
    sink = RecordingSink(poison={"13"})
    writer = make_writer(batch_size=40, retry_base_s=30, retry_cap_s=30)  # a retry would time out the test
    writer.register_sink(sink)
    async with writer:
        for i in range(40):
            await writer.enqueue(intent(i))
        started = time.monotonic()
        await writer.flush(timeout=5)
        assert time.monotonic() - started < 2
    assert sorted(sink.keys, key=int) == [k for k in keys(40) if k != "13"]
    [dead] = writer._spill.dead_files()
    _, [record], _ = spill.SpillDir.read(dead)
    assert b'"k":"13"' in record and b"ValueError: cannot store 13" in record
    assert counter(metrics.persistence_retried_total, sink="rec") == 0


@pytest.mark.parametrize("poison", [{"3", "30"}, {"3", "13", "30"}])
async def test_poison_intents_in_both_halves_of_a_batch_are_isolated_and_the_rest_written(
        make_writer: Make, metrics, poison: set[str]) -> None:
    sink = RecordingSink(poison=poison)
    writer = make_writer(batch_size=40, retry_base_s=30, retry_cap_s=30)  # a retry would time out the test
    writer.register_sink(sink)
    async with writer:
        for i in range(40):
            await writer.enqueue(intent(i))
        await writer.flush(timeout=5)
    assert sorted(sink.keys, key=int) == [k for k in keys(40) if k not in poison]
    dead = [r for f in writer._spill.dead_files() for r in spill.SpillDir.read(f)[1]]
    assert len(dead) == len(poison)
    assert counter(metrics.persistence_retried_total, sink="rec") == 0


async def test_a_sink_that_is_down_is_probed_a_bounded_number_of_times_per_round(make_writer: Make) -> None:
    sink = RecordingSink()
    sink.is_down = True
    writer = make_writer(batch_size=40, retry_max=0)
    writer.register_sink(sink)
    async with writer:
        for i in range(40):
            await writer.enqueue(intent(i))
        await wait_until(lambda: writer._spill.spill_files())
    assert sink.calls <= 1 + 2 + 4  # the batch, its halves, its quarters: then it looks down, and spills


class CancelsItself(RecordingSink):
    async def write_batch(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            raise asyncio.CancelledError("a driver gave up")  # not our task being cancelled
        await super().write_batch(batch)


async def test_a_sink_raising_cancelled_error_fails_that_write_and_its_lane_goes_on(make_writer: Make) -> None:
    sink = CancelsItself()
    writer = make_writer(batch_size=10, retry_base_s=0.01, retry_cap_s=0.01)
    writer.register_sink(sink)
    async with writer:
        for i in range(10):
            await writer.enqueue(intent(i))
        await writer.flush(timeout=5)
        await writer.enqueue(intent(10))  # the lane still works afterwards
        await writer.flush(timeout=5)
    assert sorted(sink.keys, key=int) == keys(11)


async def test_a_sink_that_hangs_does_not_stall_other_sinks(make_writer: Make) -> None:
    stuck, fast = RecordingSink("stuck"), RecordingSink("fast")
    stuck.hang_until = asyncio.Event()
    writer = make_writer(queue_max=100, batch_size=10, write_timeout_s=60)
    writer.register_sink(stuck)
    writer.register_sink(fast)

    async def produce(sink: str) -> None:
        for i in range(300):
            await writer.enqueue(intent(i, sink=sink))

    async with writer:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(produce("stuck"), produce("fast")), 5)
        await wait_until(lambda: len(fast.keys) == 300)
        assert time.monotonic() - started < 3  # the stuck sink's backlog went to disk
        assert stuck.keys == []
        stuck.hang_until.set()
        await wait_until(lambda: len(set(stuck.keys)) == 300, timeout=10)
    assert set(stuck.keys) == set(keys(300))


async def test_flush_waits_for_the_callers_run_only(make_writer: Make) -> None:
    stuck, fast = RecordingSink("stuck"), RecordingSink("fast")
    stuck.hang_until = asyncio.Event()
    writer = make_writer(batch_timeout_s=5.0)  # flush must not wait for the batch age
    writer.register_sink(stuck)
    writer.register_sink(fast)
    async with writer:
        await writer.enqueue(intent("late", sink="stuck", run_id=2))
        token = current_run_id.set(1)
        try:
            for i in range(3):
                await writer.enqueue(intent(i, sink="fast", run_id=1))
            await writer.flush(timeout=2)  # run 1, from the context
        finally:
            current_run_id.reset(token)
        assert fast.keys == keys(3)
        with pytest.raises(TimeoutError, match="run 2"):
            await writer.flush(run_id=2, timeout=0.05)
        stuck.hang_until.set()
        await writer.flush(run_id=2, timeout=2)
    assert stuck.keys == ["late"]


async def test_shutdown_spills_what_a_down_sink_did_not_take_within_the_deadline(make_writer: Make) -> None:
    sink = RecordingSink()
    sink.is_down = True
    writer = make_writer(batch_size=10, retry_max=100, retry_base_s=1, retry_cap_s=1)
    writer.register_sink(sink)
    await writer.start()
    for i in range(95):
        await writer.enqueue(intent(i))
    started = time.monotonic()
    await writer.stop(deadline_s=1.0)
    assert time.monotonic() - started < 1.5
    sink.is_down = False
    async with make_writer() as again:  # a restart replays before start() returns
        again.register_sink(sink)
        await wait_until(lambda: len(set(sink.keys)) == 95)
    assert set(sink.keys) == set(keys(95))


class User(pydantic.BaseModel):
    id: int
    name: str


class Order(pydantic.BaseModel):
    id: int


class UserSink(TypedSink):
    def __init__(self) -> None:
        super().__init__(name="typed")
        self.users: list[User] = []
        self.is_down = False

    @on(User)
    async def write_users(self, users: list[User]) -> None:
        if self.is_down:
            raise ConnectionError("down")
        self.users.extend(users)


async def test_typed_payloads_survive_spill_and_replay_and_strays_are_dead_lettered(make_writer: Make) -> None:
    sink = UserSink()
    sink.is_down = True
    writer = make_writer()
    writer.register_sink(sink)
    async with writer:
        for i in range(5):
            await writer.enqueue(intent(i, sink="typed", payload=User(id=i, name=f"u{i}")))
        await writer.flush(timeout=5)
        sink.is_down = False
        await writer.enqueue(intent("stray", sink="typed", payload=Order(id=1)))
        await writer.enqueue(intent(9, sink="typed", payload=User(id=9, name="u9")))
        await wait_until(lambda: len(sink.users) == 6)
    assert sorted(u.id for u in sink.users) == [0, 1, 2, 3, 4, 9]
    assert all(isinstance(u, User) for u in sink.users)
    [dead] = writer._spill.dead_files()
    assert b"no @on handler for payload type Order" in dead.read_bytes()


async def test_journal_mode_keeps_nothing_on_disk_once_written(make_writer: Make, tmp_path: Path) -> None:
    sink = RecordingSink()
    writer = make_writer(durability="journal")
    writer.register_sink(sink)
    async with writer:
        await asyncio.gather(*(writer.enqueue(intent(i)) for i in range(200)))
        with pytest.raises(ConfigError, match="use `await writer.enqueue"):
            writer.enqueue_nowait(intent(0))
        await writer.flush(timeout=5)
    assert sorted(sink.keys, key=int) == keys(200)
    assert list((tmp_path / "spill" / "journal").iterdir()) == []


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="persist_durability"):
        PersistenceWriter(durability="disk")
    with pytest.raises(ConfigError, match="persist_queue_max"):
        PersistenceWriter(queue_max=0)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff_s(a, 0.2, 1.0) for a in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


# -- audit fixes: poison in replay, unencodable payloads, start and stop --------------------

async def test_a_lone_poison_intent_neither_blocks_replay_nor_diverts_live_traffic(make_writer: Make, metrics) -> None:
    sink = RecordingSink(poison={"P"})
    writer = make_writer(queue_max=100, batch_size=10, retry_max=1)
    writer.register_sink(sink)
    async with writer:
        await writer.enqueue(intent("P", run_id=1))
        await writer.flush(run_id=1, timeout=5)  # alone, it looks like an outage: spilled
        sink.is_down = True
        for i in range(10):
            await writer.enqueue(intent(i, run_id=2))
        await writer.flush(run_id=2, timeout=5)  # spilled behind the poison file
        sink.is_down = False
        for i in range(100, 600):
            await writer.enqueue(intent(i, run_id=3))
        await writer.flush(run_id=3, timeout=10)
        await wait_until(lambda: not writer._spill.spill_files() and writer._spill.dead_files(), timeout=10)
    assert set(sink.keys) == set(keys(10)) | set(keys(500, start=100))
    assert counter(metrics.persistence_fallback_total) == 11  # the 500 went straight to the sink
    [dead] = writer._spill.dead_files()
    assert b'"k":"P"' in dead.read_bytes() and b"ValueError: cannot store P" in dead.read_bytes()


async def test_an_unencodable_payload_is_dead_lettered_as_its_repr_and_never_blocks_its_lane(
        make_writer: Make, tmp_path: Path) -> None:
    loop: list[object] = []
    loop.append(loop)
    sink = RecordingSink()
    sink.is_down = True
    writer = make_writer(retry_max=0)
    writer.register_sink(sink)
    async with writer:
        await writer.enqueue(intent("circular", payload=loop, run_id=1))
        for i in range(20):
            await writer.enqueue(intent(i, run_id=2))
        await writer.flush(timeout=5)  # before the fix: the lane retried the spill forever
        await writer.enqueue(intent("again", payload=[loop], run_id=3))
        assert await writer.stop(deadline_s=1) == 0  # stop spills it too, and ends stopped
    [dead, *_] = writer._spill.dead_files()
    assert b"[[...]]" in dead.read_bytes() and b"payload stored as repr" in dead.read_bytes()
    sink.is_down = False
    again = make_writer()
    again.register_sink(sink)
    async with again:  # the lock was released: a new writer takes the directory
        await wait_until(lambda: len(set(sink.keys)) == 20)
    assert sorted(sink.keys, key=int) == keys(20)


class OpenFails(RecordingSink):
    async def open(self) -> None:
        raise ConnectionError("cannot connect")


class TracksClose(RecordingSink):
    is_closed = False

    async def close(self) -> None:
        self.is_closed = True


async def test_a_failed_start_unwinds_everything_it_started(make_writer: Make) -> None:
    first = TracksClose("first")
    writer = make_writer()
    writer.register_sink(first)
    writer.register_sink(OpenFails("second"))
    with pytest.raises(ConnectionError):
        await writer.start()
    assert first.is_closed  # opened, so closed again
    with pytest.raises(WriterClosed, match="not started"):
        await writer.enqueue(intent(1, sink="first"))
    other = make_writer()
    other.register_sink(RecordingSink("first"))
    async with other:  # the directory lock was released
        pass


async def test_bad_entries_in_the_spill_directory_do_not_stop_a_start(make_writer: Make, tmp_path: Path) -> None:
    sd = spill.SpillDir(tmp_path / "spill", SystemClock())
    sd.open()
    good = sd.spill("rec", [intent_body(intent(i)) for i in range(3)])
    deep = b'{"s":"rec","k":"x","p":' + b"[" * 100_000 + b"]" * 100_000 + b',"j":null,"r":null,"t":null,' \
        b'"i":null,"o":"upsert"}'
    good.write_bytes(good.read_bytes() + frame(deep))
    (sd.path / "x.rec.spill").mkdir()
    sd.close()
    sink = RecordingSink()
    writer = make_writer()
    writer.register_sink(sink)
    async with writer:  # before the fix: IsADirectoryError / RecursionError, half started
        assert sorted(sink.keys) == ["0", "1", "2"]


async def test_start_up_replay_is_bounded_and_a_hung_sink_holds_up_no_other(make_writer: Make,
                                                                             tmp_path: Path) -> None:
    sd = spill.SpillDir(tmp_path / "spill", SystemClock())
    sd.open()
    for n in range(3):
        sd.spill("hung", [intent_body(intent(i, sink="hung")) for i in range(n * 5, n * 5 + 5)])
    sd.spill("ok", [intent_body(intent(i, sink="ok")) for i in range(10)])
    sd.close()
    hung, ok = RecordingSink("hung"), RecordingSink("ok")
    hung.hang_until = asyncio.Event()
    writer = make_writer(write_timeout_s=0.5, startup_replay_s=5.0, replay_interval_s=60)
    writer.register_sink(hung)
    writer.register_sink(ok)
    started = time.monotonic()
    await writer.start()
    took_s = time.monotonic() - started
    assert len(ok.keys) == 10 and hung.calls == 1  # one timeout, not 3 per file
    assert took_s < 1.5  # before the fix: 3 files x 3 tries x 0.5 s = 4.5 s
    await writer.stop(deadline_s=0.5)


async def test_start_up_replay_past_its_budget_goes_on_in_the_background(make_writer: Make,
                                                                         tmp_path: Path) -> None:
    sd = spill.SpillDir(tmp_path / "spill", SystemClock())
    sd.open()
    sd.spill("rec", [intent_body(intent(i)) for i in range(5)])
    sd.close()
    sink = RecordingSink()
    sink.hang_until = asyncio.Event()
    writer = make_writer(write_timeout_s=30, startup_replay_s=0.2, replay_interval_s=60)
    writer.register_sink(sink)
    started = time.monotonic()
    async with writer:
        assert time.monotonic() - started < 1.0
        sink.hang_until.set()
        await wait_until(lambda: len(sink.keys) == 5)


class CloseHangs(RecordingSink):
    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_close_hook_that_hangs_is_cut_off_by_the_shutdown_budget(make_writer: Make, tmp_path: Path) -> None:
    writer = make_writer()
    writer.register_sink(CloseHangs())
    await writer.start()
    writer.enqueue_nowait(intent(1))
    started = time.monotonic()
    await asyncio.wait_for(writer.stop(deadline_s=0.5), 5)  # before the fix: never returned
    assert time.monotonic() - started < 1.5
    again = spill.SpillDir(tmp_path / "spill", SystemClock())
    again.open()  # the lock was released
    again.close()


async def test_journal_enqueues_still_waiting_when_stop_took_the_lanes_stay_in_the_journal(
        make_writer: Make, monkeypatch) -> None:
    real_sync = journal_mod._sync
    monkeypatch.setattr(journal_mod, "_sync", lambda fd: (time.sleep(0.3), real_sync(fd)))  # a slow disk
    sink = RecordingSink()
    writer = make_writer(durability="journal")
    writer.register_sink(sink)
    await writer.start()
    accepted: list[str] = []

    async def one(i: int) -> None:
        try:
            await writer.enqueue(intent(i))
            accepted.append(str(i))
        except WriterClosed:
            pass

    tasks = [asyncio.create_task(one(i)) for i in range(200)]
    await asyncio.sleep(0.05)  # every enqueue now waits for an fsync
    await writer.stop(deadline_s=0.1)
    await asyncio.gather(*tasks)
    assert accepted  # their records were durable: enqueue returned normally
    assert writer.outstanding == 0 and writer.queue_size == 0  # before: pushed into stopped lanes
    monkeypatch.undo()
    again = make_writer(durability="journal")
    again.register_sink(sink)
    async with again:  # the journal delivers them
        await wait_until(lambda: set(accepted) <= set(sink.keys))


async def test_the_queue_size_gauge_follows_every_enqueue(make_writer: Make, metrics) -> None:
    sink = RecordingSink()
    sink.hang_until = asyncio.Event()
    writer = make_writer(queue_max=20, batch_size=5, stall_s=60)
    writer.register_sink(sink)
    async with writer:
        for i in range(15):
            writer.enqueue_nowait(intent(i))
        assert metrics.persistence_queue_size.value == 15 == writer.queue_size  # before: 0
        sink.hang_until.set()
        await writer.flush(timeout=5)
        assert metrics.persistence_queue_size.value == 0


async def test_losing_intents_to_a_full_disk_with_the_sink_down_is_counted_logged_and_returned(
        make_writer: Make, metrics, monkeypatch, caplog) -> None:
    monkeypatch.setattr(spill.SpillDir, "spill", disk_full)
    monkeypatch.setattr(spill.SpillDir, "dead_letter", disk_full)
    sink = RecordingSink()
    sink.is_down = True
    writer = make_writer(retry_max=0, queue_max=100, retry_cap_s=0.2)
    writer.register_sink(sink)
    await writer.start()
    for i in range(40):
        await writer.enqueue(intent(i))
    with caplog.at_level(logging.ERROR, logger="piko.persistence"):
        calls_before = sink.calls
        lost = await writer.stop(deadline_s=0.5)
    assert lost == 40
    assert counter(metrics.persistence_lost_total) == 40
    assert any("40 accepted intent(s) LOST" in r.getMessage() for r in caplog.records)
    # while stopping, the tries pause between rounds instead of spinning until the budget ends
    assert sum("cannot spill or dead-letter" in r.getMessage() for r in caplog.records) <= 1
    assert sink.calls - calls_before <= 4 * 7  # about 0.5 s / 0.2 s rounds of at most 7 probes


async def test_journal_mode_starts_on_a_full_disk_and_recovers_the_journal_when_there_is_room(
        make_writer: Make, tmp_path: Path, monkeypatch) -> None:
    journal = journal_mod.Journal(tmp_path / "spill" / "journal", SystemClock(), asyncio.to_thread)
    await journal.open()
    for i in range(5):
        await journal.append(intent_body(intent(i)))
    assert journal._task is not None
    journal._task.cancel()  # as after a kill -9: the journal holds 5 unwritten intents
    monkeypatch.setattr(spill.SpillDir, "spill", disk_full)
    monkeypatch.setattr(journal_mod.Journal, "_write", staticmethod(disk_full))
    sink = RecordingSink()
    writer = make_writer(durability="journal")
    writer.register_sink(sink)
    async with writer:  # before the fix: start failed with ENOSPC
        with pytest.raises(OSError, match="No space left"):
            await writer.enqueue(intent("new"))
        monkeypatch.undo()  # room again
        await wait_until(lambda: sorted(sink.keys) == keys(5))
        await writer.enqueue(intent("new"))
        await writer.flush(timeout=5)
    assert "new" in sink.keys


def disk_full(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class CountsOpen(RecordingSink):
    opened = 0

    async def open(self) -> None:
        self.opened += 1


async def test_a_sink_registered_after_start_is_opened_before_its_first_write(make_writer: Make) -> None:
    writer = make_writer()
    writer.register_sink(RecordingSink())
    async with writer:
        late = CountsOpen("late")
        writer.register_sink(late)
        await writer.enqueue(intent(1, sink="late"))
        await writer.flush(timeout=5)
    assert late.opened == 1 and late.keys == ["1"]
