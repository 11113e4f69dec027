from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from piko.clock import FakeClock
from piko.core.kernel import Kernel
from tests.conftest import Every

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make(clock: FakeClock, **kw):
    fired: list[tuple[str, list[datetime], bool]] = []
    kernel = Kernel(clock, lambda j, due, over: fired.append((j, due, over)), **kw)
    return kernel, fired


def test_due_job_fires_once_at_its_time_and_reschedules():
    clock = FakeClock(T0)
    kernel, fired = make(clock)
    assert kernel.schedule("a", Every(10, T0)) == T0 + timedelta(seconds=10)
    assert kernel.fire_due(clock.now()) == 0
    clock.advance(10)
    assert kernel.fire_due(clock.now()) == 1
    assert fired == [("a", [T0 + timedelta(seconds=10)], False)]
    assert kernel.next_fire_at("a") == T0 + timedelta(seconds=20)


def test_backlog_is_handed_over_together_for_coalescing():
    clock = FakeClock(T0)
    kernel, fired = make(clock)
    kernel.schedule("a", Every(10, T0))
    clock.advance(35)
    kernel.fire_due(clock.now())
    assert [len(d) for _, d, _ in fired] == [3]
    assert kernel.next_fire_at("a") == T0 + timedelta(seconds=40)


def test_oversized_backlog_is_capped_and_flagged():
    clock = FakeClock(T0)
    kernel, fired = make(clock, max_backlog=5)
    kernel.schedule("a", Every(1, T0))
    clock.advance(100)
    kernel.fire_due(clock.now())
    (_, due, overflow), = fired
    assert len(due) == 5 and overflow
    s = [T0 + timedelta(seconds=n) for n in range(101)]
    assert due == [s[1], s[2], s[3], s[4], s[100]]  # the oldest, and the newest: it may still be on time
    assert kernel.next_fire_at("a") == T0 + timedelta(seconds=101)


def test_unscheduled_job_never_fires_and_reschedule_replaces_old_time():
    clock = FakeClock(T0)
    kernel, fired = make(clock)
    kernel.schedule("a", Every(10, T0))
    kernel.schedule("b", Every(10, T0))
    kernel.unschedule("a")
    kernel.schedule("b", Every(30, T0))
    clock.advance(10)
    kernel.fire_due(clock.now())
    assert fired == []
    clock.advance(20)
    kernel.fire_due(clock.now())
    assert [j for j, _, _ in fired] == ["b"]


def test_standby_fires_are_replayed_when_leadership_is_gained():
    clock = FakeClock(T0)
    leader = {"on": False}
    kernel, fired = make(clock, is_leader=lambda: leader["on"], standby_window_s=60)
    kernel.schedule("a", Every(10, T0))
    clock.advance(10)
    kernel.fire_due(clock.now())
    assert fired == []
    leader["on"] = True
    kernel.leadership_changed(True)
    assert fired == [("a", [T0 + timedelta(seconds=10)], False)]


def test_standby_fires_older_than_the_window_are_not_replayed():
    clock = FakeClock(T0)
    leader = {"on": False}
    kernel, fired = make(clock, is_leader=lambda: leader["on"], standby_window_s=15)
    kernel.schedule("a", Every(10, T0))
    for _ in range(3):
        clock.advance(10)
        kernel.fire_due(clock.now())
    leader["on"] = True
    kernel.leadership_changed(True)
    assert [t for _, due, _ in fired for t in due] == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=30)]


def test_loop_fires_on_fake_time_without_real_sleeping():
    async def scenario():
        clock = FakeClock(T0)
        kernel, fired = make(clock)
        kernel.schedule("a", Every(5, T0))
        async with kernel:
            await asyncio.sleep(0)
            for _ in range(4):
                clock.advance(5)
                for _ in range(5):
                    await asyncio.sleep(0)
        return fired

    fired = asyncio.run(scenario())
    assert [d[0] for _, d, _ in fired] == [T0 + timedelta(seconds=5 * k) for k in range(1, 5)]


def test_wall_clock_step_backwards_is_noticed_and_times_recomputed():
    async def scenario():
        clock = FakeClock(T0)
        jumps: list[float] = []
        kernel, fired = make(clock, on_clock_jump=jumps.append)
        kernel.schedule("a", Every(60, T0))
        async with kernel:
            await asyncio.sleep(0)
            clock.set(T0 - timedelta(hours=1))
            clock.advance(1)  # wakes the sleeper, which sees the step
            for _ in range(5):
                await asyncio.sleep(0)
        return jumps, kernel.next_fire_at("a")

    jumps, nxt = asyncio.run(scenario())
    assert len(jumps) == 1 and jumps[0] < -3000
    assert nxt == T0  # Every() returns its start for times before it


def test_wall_clock_step_forward_fires_the_due_times():
    async def scenario():
        clock = FakeClock(T0)
        jumps: list[float] = []
        kernel, fired = make(clock, on_clock_jump=jumps.append)
        kernel.schedule("a", Every(60, T0))
        async with kernel:
            await asyncio.sleep(0)
            clock.set(T0 + timedelta(minutes=3))
            clock.advance(1)  # the sleeper wakes within max_sleep_s and sees the step
            for _ in range(5):
                await asyncio.sleep(0)
        return jumps, fired

    jumps, fired = asyncio.run(scenario())
    assert jumps and jumps[0] > 100
    assert [len(d) for _, d, _ in fired] == [3]


def test_requeued_fire_is_offered_again_while_leader():
    async def scenario():
        clock = FakeClock(T0)
        kernel, fired = make(clock)
        kernel.schedule("a", Every(600, T0))
        async with kernel:
            await asyncio.sleep(0)
            kernel.requeue("a", T0)
            clock.advance(1)
            for _ in range(5):
                await asyncio.sleep(0)
        return fired

    assert asyncio.run(scenario()) == [("a", [T0], False)]


def test_requeued_fire_is_left_to_the_new_leader_when_standing_by():
    clock = FakeClock(T0)
    kernel, fired = make(clock, is_leader=lambda: False, standby_window_s=30)
    kernel.schedule("a", Every(600, T0))
    kernel.requeue("a", T0)
    clock.advance(60)
    kernel._replay_requeued()
    assert fired == [] and not kernel._requeued


def test_a_requeued_fire_goes_out_with_the_jobs_next_fire_as_one_batch():
    clock = FakeClock(T0)
    kernel, fired = make(clock)
    kernel.schedule("a", Every(10, T0))
    kernel.requeue("a", T0)  # the store was down at T0
    clock.advance(10)
    kernel.fire_due(clock.now())
    assert fired == [("a", [T0, T0 + timedelta(seconds=10)], False)]  # coalesced once, oldest first


def test_on_gaining_leadership_standby_and_requeued_fires_of_a_job_go_out_together():
    clock = FakeClock(T0)
    leader = {"on": True}
    kernel, fired = make(clock, is_leader=lambda: leader["on"], standby_window_s=120)
    kernel.schedule("a", Every(10, T0))
    kernel.requeue("a", T0)  # could not be recorded, then the term ended
    leader["on"] = False
    clock.advance(10)
    kernel.fire_due(clock.now())  # seen while standing by
    assert fired == []
    leader["on"] = True
    kernel.leadership_changed(True)
    assert fired == [("a", [T0, T0 + timedelta(seconds=10)], False)]


class _Breaks:
    """A trigger that fails on its second question, as a buggy one might."""

    def __init__(self) -> None:
        self.calls = 0

    def next_fire_time(self, after: datetime) -> datetime | None:
        self.calls += 1
        if self.calls > 1:
            raise OverflowError("date value out of range")
        return after + timedelta(seconds=1)


def test_a_trigger_that_raises_stops_only_its_own_job_and_is_reported():
    clock = FakeClock(T0)
    errors: list[str] = []
    kernel, fired = make(clock, on_trigger_error=lambda job_id, exc: errors.append(job_id))
    kernel.schedule("broken", _Breaks())
    kernel.schedule("fine", Every(1, T0))
    clock.advance(1)
    assert kernel.fire_due(clock.now()) == 2  # both fire once; then "broken" has no next time
    assert errors == ["broken"] and kernel.next_fire_at("broken") is None
    clock.advance(1)
    kernel.fire_due(clock.now())
    assert [j for j, _, _ in fired] == ["broken", "fine", "fine"]
