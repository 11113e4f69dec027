"""Run ends and bookkeeping the store did not take wait in memory and land once it answers."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import pytest

from piko.clock import FakeClock
from piko.core.pending_writes import PendingWrites
from piko.core.types import RunFinish, RunStatus
from piko.errors import LeaseLost, StoreUnavailable
from piko.store.memory import MemoryStore
from tests.faults import FaultyStore

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def down_store(clock: FakeClock | None = None) -> FaultyStore:
    """The memory store with finish_runs failing until healed ("server has gone away")."""
    store = FaultyStore(MemoryStore(clock))
    store.fail("finish_runs", StoreUnavailable("server has gone away"))
    return store


def taken(store: FaultyStore) -> list[int]:
    """The run ids of the ends the store took, in order."""
    return [f.run_id for (finishes,) in store.answered["finish_runs"] for f in finishes]


def finish(run_id: int) -> RunFinish:
    return RunFinish(run_id, RunStatus.SUCCESS, T0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_end_the_store_refuses_is_retried_with_backoff_until_it_takes_it() -> None:
    async def scenario() -> None:
        clock, sizes = FakeClock(T0), []
        store = down_store(clock)
        pending = PendingWrites(store.finish_runs, clock, base_s=1.0, cap_s=4.0, on_size=sizes.append)
        pending.add_finish(finish(7), "j", T0, StoreUnavailable("down"))
        assert pending.holds("j", T0) and not pending.holds("j", T0.replace(minute=1))
        for _ in range(6):  # a long outage: tries keep coming, spaced by the backoff (at most 4 s)
            await settle()
            clock.advance(4.0)
        await settle()
        tries_during_outage = store.calls["finish_runs"]
        assert 3 <= tries_during_outage <= 7 and taken(store) == []
        store.heal("finish_runs")
        clock.advance(4.0)
        await settle()
        assert taken(store) == [7] and len(pending) == 0 and sizes[-1] == 0
        assert not pending.holds("j", T0)

    asyncio.run(scenario())


def test_bookkeeping_writes_land_in_the_order_they_were_made() -> None:
    async def scenario() -> None:
        clock, done, is_down = FakeClock(T0), [], [True]

        def write(n: int):
            async def go() -> None:
                if is_down[0]:
                    raise StoreUnavailable("down")
                done.append(n)
            return go

        pending = PendingWrites(down_store().finish_runs, clock, base_s=1.0, cap_s=1.0)
        for n in range(5):
            pending.add_write(f"write {n}", write(n), StoreUnavailable("down") if n == 0 else None)
        assert pending.has_writes
        await settle()
        clock.advance(1.0)
        await settle()
        assert done == []
        is_down[0] = False
        clock.advance(1.0)
        await settle()
        assert done == [0, 1, 2, 3, 4] and not pending.has_writes

    asyncio.run(scenario())


def test_a_write_refused_by_a_lost_leader_term_is_dropped_not_retried(caplog) -> None:
    async def scenario() -> None:
        clock, later = FakeClock(T0), []

        async def fenced() -> None:
            raise LeaseLost("leader term 3 is no longer current")

        async def after() -> None:
            later.append(1)

        pending = PendingWrites(down_store().finish_runs, clock, base_s=1.0)
        pending.add_write("the watermark of j", fenced, StoreUnavailable("down"))
        pending.add_write("the watermark of k", after, None)
        await settle()
        clock.advance(1.0)
        await settle()
        assert later == [1] and len(pending) == 0

    with caplog.at_level(logging.WARNING, "piko.runner"):
        asyncio.run(scenario())
    assert "not writing the watermark of j: leader term 3" in caplog.text


def test_past_the_limit_the_oldest_is_given_up_loudly_and_counted(caplog) -> None:
    async def scenario() -> list[int]:
        lost: list[int] = []
        pending = PendingWrites(down_store().finish_runs, FakeClock(T0), max_pending=3, on_lost=lost.append)
        for run_id in range(1, 6):
            pending.add_finish(finish(run_id), "j", T0, StoreUnavailable("down"))
        assert len(pending) == 3
        await pending.close(0.0)
        return lost

    with caplog.at_level(logging.ERROR, "piko.runner"):
        lost = asyncio.run(scenario())
    assert lost == [1, 1, 3]
    assert "giving up the end of run 1 (job j, SUCCESS)" in caplog.text
    assert "exiting with the end of run 5 unrecorded" in caplog.text


def test_close_writes_what_waits_when_the_store_answers_within_the_budget() -> None:
    async def scenario() -> list[int]:
        store = down_store()
        pending = PendingWrites(store.finish_runs, FakeClock(T0), base_s=0.01, cap_s=0.01)
        pending.add_finish(finish(1), "j", T0, StoreUnavailable("down"))
        asyncio.get_running_loop().call_later(0.05, store.heal, "finish_runs")
        await pending.close(5.0)
        return taken(store)

    assert asyncio.run(scenario()) == [1]


@pytest.mark.parametrize("budget_s", [0.0, 0.2])
def test_close_with_the_store_still_down_logs_each_unwritten_end(caplog, budget_s: float) -> None:
    async def scenario() -> list[int]:
        lost: list[int] = []
        pending = PendingWrites(down_store().finish_runs, FakeClock(T0), base_s=0.01, on_lost=lost.append)
        pending.add_finish(RunFinish(9, RunStatus.FAILED, T0, "ValueError", "bad row"), "etl", T0,
                           StoreUnavailable("down"))
        await pending.close(budget_s)
        return lost

    with caplog.at_level(logging.ERROR, "piko.runner"):
        assert asyncio.run(scenario()) == [1]
    assert "exiting with the end of run 9 unrecorded (job etl, FAILED: ValueError)" in caplog.text
