"""PersistenceWriter: back-pressure, per-sink isolation, retries, poison, spill and replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from piko.errors import ConfigError, WriterFull
from piko.persistence import spill
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
