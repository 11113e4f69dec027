"""A run's end and its bookkeeping are recorded however long the store is away (app on SQLite)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import BackfillPolicy, RunStatus
from piko.errors import StoreUnavailable
from piko.settings import Settings
from tests.conftest import wait_until

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_app(db_path: str, clock: FakeClock, **kw) -> PikoApp:
    settings = Settings(db_path=db_path, http_enabled=False, leader_enabled=False, **kw)
    return PikoApp("t", settings=settings, clock=clock)


class Outage:
    """Makes the named store methods raise StoreUnavailable while on."""

    def __init__(self, store, *names: str) -> None:
        self.is_on = False
        self.refused = 0
        for name in names:
            real = getattr(store, name)

            async def wrapped(*args, _real=real, **kwargs):
                if self.is_on:
                    self.refused += 1
                    raise StoreUnavailable("MySQL server has gone away")
                return await _real(*args, **kwargs)

            setattr(store, name, wrapped)


async def tick(clock: FakeClock, seconds: float) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(10):
        await asyncio.sleep(0)


async def statuses(app: PikoApp, job_id: str) -> list[RunStatus]:
    return [r.status for r in reversed(await app.store.recent_runs(job_id, limit=100))]


def test_an_end_refused_through_a_long_outage_is_recorded_when_the_store_is_back(db_path) -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        done: list[datetime] = []

        @app.job("slow", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def slow(ctx, scheduled_time):
            done.append(scheduled_time)

        async with app:
            outage = Outage(app.store, "finish_runs")
            outage.is_on = True
            await tick(clock, 60)
            await wait_until(lambda: len(done) == 1)
            for _ in range(15):  # 30 s of refused writes: far past the old five tries
                await tick(clock, 2)
            assert outage.refused >= 5
            assert await statuses(app, "slow") == [RunStatus.RUNNING]
            assert app.piko_metrics.run_records_pending.value == 1
            outage.is_on = False
            for _ in range(5):
                await tick(clock, 2)
            await wait_until(lambda: app.piko_metrics.run_records_pending.value == 0)
            assert await statuses(app, "slow") == [RunStatus.SUCCESS]

    asyncio.run(scenario())


def test_a_watermark_move_refused_by_the_store_lands_after_it_is_back(db_path) -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("etl", stateful=True, backfill_policy=BackfillPolicy.CATCH_UP,
                 interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def etl(ctx, scheduled_time):
            pass

        async with app:
            await tick(clock, 60)
            await wait_until(lambda: app.runner.is_idle())
            mark = await app.store.get_watermark("etl")
            outage = Outage(app.store, "cas_watermark")
            outage.is_on = True
            await tick(clock, 60)
            await wait_until(lambda: outage.refused >= 1)
            await wait_until(lambda: app.runner.is_idle())
            assert await app.store.get_watermark("etl") == mark
            outage.is_on = False
            for _ in range(5):
                await tick(clock, 1)
            await wait_until(lambda: app.piko_metrics.run_records_pending.value == 0)
            assert await app.store.get_watermark("etl") == mark + timedelta(seconds=60)

    asyncio.run(scenario())


def test_stopping_with_the_store_still_down_logs_each_unrecorded_end_and_counts_it(db_path, caplog) -> None:
    async def scenario() -> float:
        clock = FakeClock(T0)
        app = make_app(db_path, clock, shutdown_timeout_s=0.5)
        done: list[datetime] = []

        @app.job("j", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def j(ctx, scheduled_time):
            done.append(scheduled_time)

        await app.start()
        outage = Outage(app.store, "finish_runs")
        outage.is_on = True
        await tick(clock, 60)
        await wait_until(lambda: len(done) == 1 and app.piko_metrics.run_records_pending.value == 1)
        await app.stop()
        return app.piko_metrics.run_records_lost_total.value

    with caplog.at_level(logging.ERROR, "piko.runner"):
        assert asyncio.run(scenario()) == 1
    assert "exiting with the end of run 1 unrecorded (job j, SUCCESS)" in caplog.text


def test_a_failed_run_records_its_traceback_down_to_the_raising_line(db_path) -> None:
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("breaks", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def breaks(ctx, scheduled_time):
            raise KeyError("customer_id")

        async with app:
            await tick(clock, 60)
            await wait_until(lambda: app.runner.is_idle() and app.piko_metrics.run_records_pending.value == 0)
            (run,) = await app.store.recent_runs("breaks")
            return run

    run = asyncio.run(scenario())
    assert run.status is RunStatus.FAILED and run.error_type == "KeyError"
    assert 'raise KeyError("customer_id")' in run.error_traceback
    assert run.error_traceback.rstrip().endswith("KeyError: 'customer_id'")
