"""The lease loop: deadlines on a fake clock, then elections over real SQLite and MySQL stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from piko.clock import FakeClock, SystemClock
from piko.core.types import RunClaim, RunStatus
from piko.errors import LeaseLost, StoreUnavailable
from piko.leader import LeaderElector, safety_margin_s
from piko.observability.metrics import MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics
from piko.store import make_store
from piko.store.memory import MemoryStore
from tests.faults import FaultyStore

UTC = timezone.utc


def lease_store(clock: FakeClock) -> FaultyStore:
    """The memory store's leases, with the fake clock as the "database clock"; fails or hangs on demand."""
    return FaultyStore(MemoryStore(clock))


def released(store: FaultyStore) -> list[tuple[str, int]]:
    """(holder, token) of every lease_release the store was sent."""
    return [(holder, token) for _, holder, token in store.answered["lease_release"]]


def lease_row(store: FaultyStore) -> Any:
    return store.t.leases["main"]


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


def elector(store: Any, clock: Any, holder: str = "a", changes: list[bool] | None = None, **kw: Any) -> LeaderElector:
    return LeaderElector(store, name="main", holder=holder, lease_s=kw.pop("lease_s", 30.0),
                         renew_interval_s=kw.pop("renew_interval_s", 10.0), clock=clock,
                         on_change=None if changes is None else changes.append, **kw)


# -- deadlines on a fake clock -----------------------------------------------------------------
def test_renew_interval_must_be_below_the_lease() -> None:
    with pytest.raises(ValueError, match="renew_interval_s"):
        elector(lease_store(FakeClock()), FakeClock(), lease_s=10, renew_interval_s=10)


def test_first_elector_leads_with_a_fence_and_sets_the_gauge() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        changes: list[bool] = []
        metrics = PikoMetrics(MetricsRegistry(), include_process=False, version="test")
        async with elector(lease_store(clock), clock, changes=changes, metrics=metrics, host="h1") as e:
            await asyncio.wait_for(e.wait_until_leader(), 1)
            assert e.is_leader() and changes == [True]
            assert e.fence() is not None and e.fence().token == 1  # type: ignore[union-attr]
            assert metrics.leader_status.labels(host="h1").value == 1
        assert not e.is_leader() and e.fence() is None and changes == [True, False]
        assert metrics.leader_status.labels(host="h1").value == 0
    asyncio.run(scenario())


def test_failing_renews_end_leadership_at_the_deadline_taken_before_the_send() -> None:
    async def scenario() -> None:
        clock, changes = FakeClock(), list[bool]()
        store = lease_store(clock)
        async with elector(store, clock, changes=changes) as e:
            await settle()
            deadline = clock.monotonic() + 30.0 - safety_margin_s(30.0)
            store.fail("lease_acquire", StoreUnavailable("down"))
            clock.advance(10.0)
            await settle()
            clock.advance(10.0)
            await settle()
            assert e.is_leader() and changes == [True]  # errors do not end a term early ...
            clock.advance(deadline - clock.monotonic() - 0.001)
            await settle()
            assert e.is_leader()
            clock.advance(0.001)  # ... but nothing extends it past its deadline
            assert not e.is_leader() and e.fence() is None
            await settle()
            assert changes == [True, False]  # reported by the deadline timer, no renew needed
            store.heal("lease_acquire")
            clock.advance(10.0)
            await settle()
            assert e.is_leader() and changes == [True, False, True]
    asyncio.run(scenario())


def test_a_renew_stuck_in_flight_does_not_extend_leadership() -> None:
    async def scenario() -> None:
        clock, changes = FakeClock(), list[bool]()
        store = lease_store(clock)
        async with elector(store, clock, changes=changes) as e:
            await settle()
            store.hold("lease_acquire")
            clock.advance(10.0)  # the renew is sent and never answers
            await settle()
            clock.advance(20.0)
            await settle()
            assert not e.is_leader() and changes == [True, False]
            store.release("lease_acquire")
            await settle()
    asyncio.run(scenario())


def test_stepping_down_stops_acting_at_once_and_releases_after_the_renew_in_flight() -> None:
    async def scenario() -> None:
        clock, changes = FakeClock(), list[bool]()
        store = lease_store(clock)
        e = elector(store, clock, changes=changes)
        await e.__aenter__()
        await settle()
        store.hold("lease_acquire")
        clock.advance(10.0)  # a renew is now in flight
        await settle()
        stopping = asyncio.create_task(e.stop())
        await settle()
        assert not e.is_leader() and e.fence() is None and changes == [True, False]
        assert released(store) == []  # the token of the renew in flight is not known yet
        store.release("lease_acquire")
        await stopping
        assert released(store) == [("a", 1)] and lease_row(store).holder == ""
    asyncio.run(scenario())


def test_losing_the_lease_to_another_holder_steps_down_at_the_next_renew() -> None:
    async def scenario() -> None:
        clock, changes = FakeClock(), list[bool]()
        store = lease_store(clock)
        async with elector(store, clock, changes=changes) as e:
            await settle()
            lease = lease_row(store)
            lease.holder, lease.token = "b", lease.token + 1  # e.g. an operator reassigned it
            clock.advance(10.0)
            await settle()
            assert not e.is_leader() and changes == [True, False]
        assert released(store) == []  # nothing of ours to release
    asyncio.run(scenario())


def test_a_holder_known_to_be_dead_is_evicted_and_a_live_one_is_waited_for() -> None:
    async def body() -> None:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        store = lease_store(clock)
        await store.lease_acquire("main", "crashed", timedelta(seconds=30))
        async with elector(store, clock, holder="b", is_holder_dead=lambda h: h == "crashed") as e:
            assert e.is_leader() and released(store) == [("crashed", 1)]
            assert e.fence().token == 2  # type: ignore[union-attr]
        await store.lease_acquire("main", "alive", timedelta(seconds=30))
        async with elector(store, clock, holder="c", is_holder_dead=lambda h: h == "crashed") as e:
            assert not e.is_leader() and released(store)[-1] != ("alive", 3)
    asyncio.run(body())


def test_store_errors_are_logged_rate_limited_and_retried_on_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = lease_store(clock)
        store.fail("lease_acquire", StoreUnavailable("connection refused"))
        async with elector(store, clock) as e:
            for _ in range(12):  # two minutes of failures
                await settle()
                clock.advance(10.0)
            await settle()
            assert store.calls["lease_acquire"] == 13 and not e.is_leader()
            store.heal("lease_acquire")
            clock.advance(10.0)
            await settle()
            assert e.is_leader()
    with caplog.at_level(logging.INFO, logger="piko.leader"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "renew failed" in r.getMessage()]
    assert len(failures) == 3  # at 0 s, 60 s and 120 s, not 13 times
    assert any("reachable again" in r.getMessage() for r in caplog.records)


# -- elections over real stores ---------------------------------------------------------------------
LEASE_S, RENEW_S = 0.6, 0.2


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def lease_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lease.db'}"
    return str(request.getfixturevalue("mysql_db_dsn"))


def run_with_stores(dsn: str, count: int, body: Callable[..., Awaitable[None]]) -> None:
    """Open `count` stores on one database (one per simulated instance) and run body(*stores)."""
    async def main() -> None:
        stores = [make_store(dsn) for _ in range(count)]
        for s in stores:
            await s.open()
        try:
            await body(*stores)
        finally:
            for s in stores:
                await s.close()
    asyncio.run(main())


def real(store: Any, holder: str) -> LeaderElector:
    return LeaderElector(store, name="main", holder=holder, lease_s=LEASE_S, renew_interval_s=RENEW_S,
                         clock=SystemClock())


async def until(predicate: Callable[[], bool], timeout: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.005)
    return loop.time() - started


@pytest.mark.slow
def test_one_of_two_electors_leads_and_the_other_takes_over_after_step_down(lease_dsn: str) -> None:
    async def body(s1: Any, s2: Any) -> None:
        first = real(s1, "a")
        async with first:
            await asyncio.wait_for(first.wait_until_leader(), 2)
            async with real(s2, "b") as second:
                await asyncio.sleep(3 * RENEW_S)
                assert first.is_leader() and not second.is_leader()
                old = first.fence()
                await first.stop()
                waited = await until(second.is_leader, RENEW_S + 0.5)
                assert waited <= RENEW_S + 0.5
                new = second.fence()
                assert old is not None and new is not None and new.token > old.token
    run_with_stores(lease_dsn, 2, body)


@pytest.mark.slow
def test_tokens_increase_on_every_new_term(lease_dsn: str) -> None:
    async def body(store: Any) -> None:
        tokens = []
        for holder in ("a", "b", "a", "a"):
            async with real(store, holder) as e:
                await asyncio.wait_for(e.wait_until_leader(), 2)
                tokens.append(e.fence().token)  # type: ignore[union-attr]
        assert tokens == sorted(set(tokens)) and len(tokens) == 4
    run_with_stores(lease_dsn, 1, body)


@pytest.mark.slow
def test_paused_leader_stops_by_its_deadline_and_its_fenced_claim_is_refused(lease_dsn: str) -> None:
    async def body(s1: Any, s2: Any) -> None:
        loop = asyncio.get_running_loop()
        paused = FaultyStore(s1)  # its lease calls can be held, like a stalled process
        changes: list[tuple[bool, float]] = []
        first = LeaderElector(paused, name="main", holder="a", lease_s=LEASE_S,
                              renew_interval_s=RENEW_S, clock=SystemClock(),
                              on_change=lambda is_leader: changes.append((is_leader, loop.time())))
        async with first:
            await asyncio.wait_for(first.wait_until_leader(), 2)
            async with real(s2, "b") as second:
                stale = first.fence()
                assert stale is not None
                paused.hold("lease_acquire")  # every renew from now on hangs, like a stalled process
                paused_at = loop.time()
                late: list[float] = []

                def has_stepped_down() -> bool:
                    sampled_at = loop.time()  # read before is_leader(): a True answer came later still
                    if first.is_leader():
                        if sampled_at > paused_at + LEASE_S:
                            late.append(sampled_at - paused_at)
                        return False
                    return True

                await until(has_stepped_down, LEASE_S + 0.5)
                assert late == []  # never leader past the lease counted from before the pause
                await until(lambda: changes[-1][0] is False, 0.2)  # told by the deadline timer
                assert changes[-1][1] - paused_at <= LEASE_S + 0.25  # (allowing for timer lateness)
                await until(second.is_leader, LEASE_S + RENEW_S + 0.5)
                assert second.fence().token > stale.token  # type: ignore[union-attr]
                now = datetime.now(UTC)
                with pytest.raises(LeaseLost):
                    await s1.claim_run(RunClaim("job", now, RunStatus.RUNNING, now, "a", fence=stale))
                paused.release("lease_acquire")  # the stalled renew finally reaches the store ...
                await asyncio.sleep(2 * RENEW_S)
                assert not first.is_leader() and second.is_leader()  # ... and is refused
    run_with_stores(lease_dsn, 2, body)
