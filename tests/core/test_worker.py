"""Cluster execution end to end: several apps on one MemoryStore and one FakeClock, in one loop.

Each app is an instance (its own instance id, heartbeat and lease campaign); the memory store is
the shared database. The real-process versions (SQLite, MariaDB, kill -9) are in
tests/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import RunStatus
from piko.settings import Settings
from piko.store.memory import MemoryStore
from tests.conftest import advance, run_until_quiet

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_1S = {"seconds": 1, "start_date": "2026-03-01 12:00:00"}


def make_app(name: str, clock: FakeClock, store: MemoryStore, **settings: Any) -> PikoApp:
    s = Settings(http_enabled=False, tune_gc=False, poll_interval_s=3600, execution="cluster",
                 leader_lease_s=5, leader_renew_interval_s=1, **settings)
    return PikoApp(name, settings=s, store=store, clock=clock)


def register(app: PikoApp, seen: list[tuple[str, str, datetime]], job_id: str = "tick", **options: Any) -> None:
    @app.job(job_id, interval=EVERY_1S, **options)
    async def tick(ctx: dict[str, Any], scheduled_time: datetime) -> None:
        seen.append((ctx["instance_id"], ctx["job_id"], scheduled_time))


async def start(*apps: PikoApp, worker_only: tuple[PikoApp, ...] = ()) -> None:
    for app in apps:
        app.is_worker_only = app in worker_only
        await app.start()
    await run_until_quiet()


async def stop(*apps: PikoApp) -> None:
    for app in reversed(apps):
        await app.stop()


def test_every_fire_runs_once_and_the_instances_share_the_runs() -> None:
    async def scenario() -> tuple[list[tuple[str, datetime]], MemoryStore, list[str]]:
        clock, store, seen = FakeClock(T0), MemoryStore(FakeClock(T0)), []
        store.clock = clock
        apps = [make_app(n, clock, store) for n in ("a", "b", "c")]
        for app in apps:
            register(app, seen)
            for n in range(29):
                register(app, seen, f"job{n}")
        await start(*apps, worker_only=(apps[2],))
        for n, app in enumerate(apps):
            app.worker._rng = random.Random(n)  # the poll jitter, pinned: the same share every time
        for _ in range(50):
            await advance(clock, 0.1)
        ids = [app.worker.instance_id for app in apps]
        await stop(*apps)
        return seen, store, ids

    seen, store, ids = asyncio.run(scenario())
    assert len(seen) >= 3 * 30 and set(Counter((job, at) for _, job, at in seen).values()) == {1}
    runs = [r for r in store.t.runs.values()]
    assert all(r.status is RunStatus.SUCCESS for r in runs)
    assert Counter((r.job_id, r.scheduled_at) for r in runs).most_common(1)[0][1] == 1
    by_instance = Counter(r.instance_id for r in runs)
    assert len(by_instance) == 3, by_instance  # the leader, the standby and the worker-only instance all ran some
    assert all(n >= len(runs) * 0.1 for n in by_instance.values()), by_instance


def test_max_instances_holds_in_the_whole_cluster_and_extra_fires_are_skipped() -> None:
    async def scenario() -> tuple[int, list[RunStatus]]:
        clock = FakeClock(T0)
        store = MemoryStore(clock)
        apps = [make_app(n, clock, store) for n in ("a", "b")]
        running, peak, release = [0], [0], asyncio.Event()
        for app in apps:
            @app.job("slow", interval=EVERY_1S, max_instances=2)
            async def slow(ctx: dict[str, Any], scheduled_time: datetime) -> None:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                await release.wait()
                running[0] -= 1
        await start(*apps)
        for _ in range(6):
            await advance(clock, 1.0)
        release.set()
        await run_until_quiet()
        await stop(*apps)
        return peak[0], [r.status for r in store.t.runs.values()]

    peak, statuses = asyncio.run(scenario())
    assert peak == 2
    assert statuses.count(RunStatus.SUCCESS) == 2 and statuses.count(RunStatus.SKIPPED) >= 3
    assert RunStatus.RUNNING not in statuses and RunStatus.PENDING not in statuses


def test_a_queue_is_served_only_by_the_workers_that_take_it() -> None:
    async def scenario() -> list[str]:
        clock = FakeClock(T0)
        store = MemoryStore(clock)
        scheduler = make_app("s", clock, store, worker_queues="default")
        io_worker = make_app("io", clock, store, worker_queues="io")
        seen: list[tuple[str, str, datetime]] = []
        for app in (scheduler, io_worker):
            register(app, seen, "fetch", queue="io")
        await start(scheduler, io_worker, worker_only=(io_worker,))
        assert (io_worker.live.role(), scheduler.live.role()) == ("worker", "leader")  # what /readyz says
        for _ in range(3):
            await advance(clock, 1.0)
        await stop(scheduler, io_worker)
        return [instance for instance, _, _ in seen], io_worker.worker.instance_id

    ran_on, io_id = asyncio.run(scenario())
    assert ran_on and set(ran_on) == {io_id}


def test_a_cancel_request_stops_a_run_on_another_instance_within_a_second() -> None:
    async def scenario() -> tuple[Any, bool]:
        clock = FakeClock(T0)
        store = MemoryStore(clock)
        leader, worker = make_app("a", clock, store, worker_queues="x"), make_app("w", clock, store)
        flagged: list[bool] = []
        for app in (leader, worker):
            @app.job("long", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
            async def long(ctx: dict[str, Any], scheduled_time: datetime) -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    flagged.append(ctx["cancel_event"].is_set())
        await start(leader, worker, worker_only=(worker,))
        await advance(clock, 60)
        for _ in range(5):  # the worker's fast polls after the fire's hint
            await advance(clock, 0.02)
        (run,) = [r for r in store.t.runs.values() if r.status is RunStatus.RUNNING]
        assert run.instance_id == worker.worker.instance_id
        await store.request_cancel(run_id=run.run_id, by="ops@laptop", now=clock.now())
        await advance(clock, 1.0)
        await run_until_quiet()
        await stop(leader, worker)
        return store.t.runs[run.run_id], flagged == [True]

    run, was_flagged = asyncio.run(scenario())
    assert run.status is RunStatus.CANCELLED and run.error_message == "cancelled by ops@laptop"
    assert was_flagged


def test_a_queued_run_no_worker_takes_within_its_grace_is_recorded_missed() -> None:
    async def scenario() -> list[tuple[RunStatus, str | None]]:
        clock = FakeClock(T0)
        store = MemoryStore(clock)
        leader = make_app("a", clock, store, worker_queues="other", misfire_grace_s=30)
        seen: list[tuple[str, str, datetime]] = []
        register(leader, seen, "orphan", queue="nobody")
        await start(leader)
        await advance(clock, 1.0)
        late_worker = make_app("w", clock, store, worker_queues="nobody")
        register(late_worker, seen, "orphan", queue="nobody")
        clock.advance(timedelta(minutes=2))
        await start(late_worker, worker_only=(late_worker,))
        await advance(clock, 0.5)
        await stop(late_worker, leader)
        first = min(store.t.runs.values(), key=lambda r: r.run_id)
        return [(first.status, first.error_type)]

    assert asyncio.run(scenario()) == [(RunStatus.MISSED, "Misfire")]


def test_the_leader_starts_its_share_of_a_burst_bigger_than_its_capacity() -> None:
    """120 fires due at once, 4 live workers, the leader's capacity 40: the leader starts its share
    (30 of each burst) itself. The fires it is still placing are not runs here: when they counted
    against its capacity, it started only the few it had decided before the first 40 were in flight."""
    async def scenario() -> tuple[list[int], Counter[str]]:
        clock = FakeClock(T0)
        store = MemoryStore(clock)
        apps = [make_app(n, clock, store, worker_concurrency=40) for n in ("a", "b", "c", "d")]
        seen: list[tuple[str, str, datetime]] = []
        for app in apps:
            for n in range(120):
                register(app, seen, f"job{n}")
        await start(*apps, worker_only=tuple(apps[1:]))
        assert apps[0].live.is_leader()
        leader = apps[0].worker.instance_id
        per_second = []
        for _ in range(4):
            before = len([r for r in store.t.runs.values() if r.instance_id == leader and r.enqueued_at is None])
            await advance(clock, 1.0)
            per_second.append(len([r for r in store.t.runs.values()
                                   if r.instance_id == leader and r.enqueued_at is None]) - before)
        await run_until_quiet()
        await stop(*apps)
        return per_second, Counter(r.status.value for r in store.t.runs.values())

    local, statuses = asyncio.run(scenario())
    assert all(n == 30 for n in local[1:]), local
    assert set(statuses) == {"SUCCESS"}, statuses
