"""Stateful catch-up end to end on SQLite: windows held elsewhere, windows held here, SKIP records."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import BackfillPolicy, InstanceInfo, RunClaim, RunStatus, ScheduleRow
from piko.settings import Settings
from piko.store import make_store
from tests.conftest import wait_until

UTC = timezone.utc
HOURLY = '{"minute": 0}'


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


def make_app(db_path: str, clock: FakeClock, **kw) -> PikoApp:
    return PikoApp("t", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False,
                                          poll_interval_s=1, **kw), clock=clock)


async def tick(clock: FakeClock, seconds: float) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(10):
        await asyncio.sleep(0)


def rows(db_path: str, statement: str, *params) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


async def seed(db_path: str, job_id: str, mark: datetime, *claims: RunClaim, beat: InstanceInfo | None = None,
               beat_at: datetime | None = None) -> None:
    """An hourly row with its watermark (and runs, an instance heartbeat), before the app starts."""
    store = make_store(f"sqlite:///{db_path}")
    await store.open()
    try:
        await store.upsert_schedule(ScheduleRow(job_id, "cron", HOURLY))
        assert await store.cas_watermark(job_id, None, mark)
        for claim in claims:
            await store.claim_run(claim)
        if beat is not None and beat_at is not None:
            await store.heartbeat(beat, beat_at)
    finally:
        await store.close()


def test_a_window_held_by_a_silent_instance_on_another_host_runs_within_orphan_after_plus_two_beats(db_path):
    """The other instance claimed [10:00, 11:00) and went silent (kill -9 on another host). The
    catch-up waits for it, the sweep marks it ABANDONED after orphan_after_s (10 s), and the
    catch-up re-runs it and the next window without waiting for the 13:00 fire."""
    ran: list[tuple[datetime, datetime]] = []
    now = at(12, 30)
    other = InstanceInfo("otherhost:4242:abcdef", "otherhost", 4242, at(9))
    held = RunClaim("sync", at(11), RunStatus.RUNNING, at(11), other.instance_id, kind="schedule",
                    data_start=at(10), data_end=at(11))

    async def scenario() -> float:
        await seed(db_path, "sync", at(10), held, beat=other, beat_at=now)
        clock = FakeClock(now)
        app = make_app(db_path, clock, heartbeat_interval_s=2, orphan_after_s=10)

        @app.job("sync", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def sync(ctx, scheduled_time):
            ran.append((ctx["data_interval"].start, ctx["data_interval"].end))

        async with app:
            waited = 0.0
            while len(ran) < 2 and waited < 30:
                await tick(clock, 1)
                waited += 1
                await asyncio.sleep(0.01)
            await wait_until(lambda: app.runner.is_idle())
            assert await app.store.get_watermark("sync") == at(12)
        return waited

    waited = asyncio.run(scenario())
    assert ran == [(at(10), at(11)), (at(11), at(12))]
    assert waited <= 10 + 2 * 2 + 1  # orphan_after_s + two heartbeats (+1 s of tick granularity)
    statuses = rows(db_path, "SELECT scheduled_time, status, instance_id FROM job_run ORDER BY run_id")
    assert statuses[0][1:] == ("ABANDONED", other.instance_id)


def test_a_window_this_process_still_runs_is_not_run_again_when_another_instance_marked_it_abandoned(db_path):
    ran: list[datetime] = []
    release = asyncio.Event()

    async def scenario() -> None:
        await seed(db_path, "sync", at(10))
        clock = FakeClock(at(10, 59, 59))
        app = make_app(db_path, clock)

        @app.job("sync", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def sync(ctx, scheduled_time):
            ran.append(ctx["data_interval"].end)
            await release.wait()

        async with app:
            await tick(clock, 1)  # the 11:00 fire runs [10:00, 11:00) and waits
            await wait_until(lambda: len(ran) == 1)
            # another instance's sweep took this (live, but silent) instance for dead
            conn = sqlite3.connect(db_path)
            conn.execute("UPDATE job_run SET status = 'ABANDONED' WHERE status = 'RUNNING'")
            conn.commit()
            conn.close()
            looked: list[datetime] = []
            real_latest = app.store.latest_status

            async def latest_status(job_id, scheduled_at):
                looked.append(scheduled_at)
                return await real_latest(job_id, scheduled_at)

            app.store.latest_status = latest_status
            app.live.watermarks.start_catch_up(app.registry.get("sync"))
            await wait_until(lambda: at(11) in looked)  # the catch-up found the window ABANDONED
            await asyncio.sleep(0.2)  # time enough for a second run to start, if one would
            for _ in range(3):
                await tick(clock, 2)
            assert ran == [at(11)]  # not run a second time while it still runs here
            release.set()
            await wait_until(lambda: app.runner.is_idle())
            for _ in range(3):
                await tick(clock, 2)
            await wait_until(lambda: app.runner.is_idle() and not app.live.watermarks._catching_up)
            assert await app.store.get_watermark("sync") == at(11)

    asyncio.run(scenario())
    assert ran == [at(11)]
    assert rows(db_path, "SELECT status FROM job_run") == [("SUCCESS",)]  # its real end replaced ABANDONED


def test_skip_records_the_windows_it_does_not_run_as_skipped_rows_with_their_data_window(db_path):
    ran: list[datetime] = []

    async def scenario() -> None:
        await seed(db_path, "hourly", at(7))
        clock = FakeClock(at(12, 30))
        app = make_app(db_path, clock)

        @app.job("hourly", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.SKIP)
        async def hourly(ctx, scheduled_time):
            ran.append(ctx["data_interval"].end)

        async with app:
            await wait_until(lambda: ran and app.runner.is_idle())

    asyncio.run(scenario())
    assert ran == [at(12)]
    skipped = rows(db_path, "SELECT scheduled_time, status, error_type, data_start, data_end FROM job_run "
                            "WHERE status = 'SKIPPED' ORDER BY scheduled_time")
    ends = [datetime.fromisoformat(r[0]).replace(tzinfo=UTC) for r in skipped]
    assert ends == [at(8), at(9), at(10), at(11)]
    assert all(r[2] == "BackfillSkip" for r in skipped)
    assert [datetime.fromisoformat(r[3]).replace(tzinfo=UTC) for r in skipped] == [at(7), at(8), at(9), at(10)]
    assert all(e - timedelta(hours=1) == datetime.fromisoformat(r[3]).replace(tzinfo=UTC)
               for e, r in zip(ends, skipped, strict=True))
