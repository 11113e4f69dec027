"""The runner (piko/core/runs.py) end to end, on a MemoryStore and a FakeClock.

Everything runs on the event loop (no SQLite thread), so a test moves the fake clock and
then lets the loop run until it is quiet (tests/conftest.py: advance, run_until_quiet):
no polling, no sleeps. The same behaviours on a real SQLite file are in tests/test_app.py
and tests/test_live_ops.py. Job timeouts and the shutdown budget are measured on the loop's
own clock (the runner does not take them from the Clock), so those two tests use real,
very short, durations.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import BackfillPolicy, RunRecord, RunStatus, ScheduleRow
from piko.errors import StoreUnavailable
from piko.settings import Settings
from piko.store.memory import MemoryStore
from tests.conftest import advance, run_until_quiet
from tests.faults import FaultyStore

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_10S = {"seconds": 10, "start_date": "2026-03-01 12:00:00"}
EVERY_60S = {"seconds": 60, "start_date": "2026-03-01 12:00:00"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_app(clock: FakeClock, store: Any = None, **settings: Any) -> PikoApp:
    """An app on the memory store: no HTTP, no leader, reconcile polls out of the way."""
    s = Settings(http_enabled=False, leader_enabled=False, tune_gc=False, poll_interval_s=3600, **settings)
    return PikoApp("runs", settings=s, store=store if store is not None else MemoryStore(clock), clock=clock)


def rows(app: PikoApp, job_id: str | None = None) -> list[RunRecord]:
    """The run rows in the order they were made."""
    runs = app.store.t.runs  # type: ignore[attr-defined]
    return [r for _, r in sorted(runs.items()) if job_id is None or r.job_id == job_id]


def statuses(app: PikoApp, job_id: str | None = None) -> list[tuple[datetime, RunStatus]]:
    return [(r.scheduled_at, r.status) for r in rows(app, job_id)]


def test_an_interval_fire_runs_once_and_records_success_with_its_duration() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[tuple[int, int, datetime]] = []

        @app.job("tick", interval=EVERY_10S)
        async def tick(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append((ctx["run_id"], ctx["attempt"], scheduled_time))
            await clock.wait(None, 2.5)  # the run takes 2.5 s of fake time

        async with app:
            await advance(clock, 10)
            assert statuses(app) == [(at(10), RunStatus.RUNNING)]
            await advance(clock, 2.5)
            (run,) = rows(app)
            assert calls == [(run.run_id, 1, at(10))]
            assert run.status is RunStatus.SUCCESS and run.attempt == 1 and run.kind == "schedule"
            assert (run.started_at, run.finished_at, run.duration_s) == (at(10), at(12.5), 2.5)
            assert run.error_type is None

    asyncio.run(scenario())


def test_a_fire_later_than_misfire_grace_is_recorded_missed_and_the_handler_is_not_called() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[datetime] = []

        @app.job("strict", interval=EVERY_10S, misfire_grace_time=5)
        async def strict(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        async with app:
            await advance(clock, 17)  # the loop was blocked: the 12:00:10 fire is handled 7 s late
            (run,) = rows(app)
        assert calls == []
        assert (run.scheduled_at, run.status, run.error_type) == (at(10), RunStatus.MISSED, "Misfire")
        assert run.error_message == "late by 7.000s, beyond misfire_grace_time 5.000s"

    asyncio.run(scenario())


def test_a_backlog_with_coalesce_runs_only_the_newest_fire_and_records_the_others_missed() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[datetime] = []

        @app.job("merged", interval=EVERY_10S, coalesce=True)
        async def merged(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        async with app:
            await advance(clock, 32)  # 10, 20 and 30 are due at once
            recorded = rows(app)
        assert calls == [at(30)]
        by_time = {r.scheduled_at: r for r in recorded}
        assert {t: r.status for t, r in by_time.items()} == {
            at(10): RunStatus.MISSED, at(20): RunStatus.MISSED, at(30): RunStatus.SUCCESS}
        for t in (at(10), at(20)):
            assert by_time[t].error_message == f"coalesced: a newer fire ({at(30).isoformat()}) runs instead"

    asyncio.run(scenario())


def test_a_backlog_without_coalesce_runs_each_fire_within_grace_in_order() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[datetime] = []

        @app.job("each", interval=EVERY_10S, coalesce=False, misfire_grace_time=15)
        async def each(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        async with app:
            await advance(clock, 32)  # 10 is 22 s late (beyond the grace), 20 and 30 are within it
            recorded = statuses(app)
        assert calls == [at(20), at(30)]
        assert sorted(recorded) == [(at(10), RunStatus.MISSED), (at(20), RunStatus.SUCCESS),
                                    (at(30), RunStatus.SUCCESS)]

    asyncio.run(scenario())


def test_an_overlapping_fire_beyond_max_instances_is_recorded_skipped_with_the_reason() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        release = asyncio.Event()
        calls: list[datetime] = []

        @app.job("slow", interval=EVERY_10S, max_instances=1)
        async def slow(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)
            await release.wait()

        async with app:
            await advance(clock, 10)
            await advance(clock, 10)  # the 12:00:10 run is still going
            skipped = rows(app)[1]
            release.set()
            await run_until_quiet()
            assert statuses(app) == [(at(10), RunStatus.SUCCESS), (at(20), RunStatus.SKIPPED)]
        assert calls == [at(10)]
        assert skipped.error_type == "MaxInstances"
        assert skipped.error_message == "max_instances=1 reached: 1 run(s) still going"

    asyncio.run(scenario())


def test_retries_record_each_attempt_as_its_own_row_after_a_backoff_on_the_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        attempts: list[int] = []

        @app.job("flaky", interval=EVERY_60S, retries=2, retry_backoff=4)
        async def flaky(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            attempts.append(ctx["attempt"])
            if ctx["attempt"] < 3:
                raise ConnectionError("try again")

        async with app:
            await advance(clock, 60)
            # the first retry waits 4 s, shortened by jitter to no less than 2 s
            await advance(clock, 1.9)
            assert attempts == [1]
            await advance(clock, 2.2)
            assert attempts == [1, 2]
            # the second waits 8 s, no less than 4 s
            await advance(clock, 3.9)
            assert attempts == [1, 2]
            await advance(clock, 4.2)
            assert attempts == [1, 2, 3]
            recorded = rows(app)
        assert [(r.attempt, r.kind, r.status, r.scheduled_at) for r in recorded] == [
            (1, "schedule", RunStatus.FAILED, at(60)), (2, "retry", RunStatus.FAILED, at(60)),
            (3, "retry", RunStatus.SUCCESS, at(60))]
        assert [r.error_type for r in recorded] == ["ConnectionError", "ConnectionError", None]
        assert [r.started_at for r in recorded] == [at(60), at(64.1), at(72.2)]  # each woken by the clock

    asyncio.run(scenario())


def test_a_run_past_its_timeout_is_recorded_timeout_and_its_handler_is_cancelled() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        cancelled = asyncio.Event()

        @app.job("hang", interval=EVERY_60S, timeout=0.01)  # real seconds: see the module docstring
        async def hang(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with app:
            await advance(clock, 60)
            await asyncio.wait_for(cancelled.wait(), 5)
            await run_until_quiet()
            (run,) = rows(app)
        assert (run.status, run.error_type) == (RunStatus.TIMEOUT, "JobTimeout")
        assert run.error_message == "job exceeded its timeout of 0.01s"
        assert "await asyncio.Event().wait()" in (run.error_traceback or "")  # where the handler was stuck

    asyncio.run(scenario())


def test_stop_past_the_shutdown_budget_cancels_the_run_and_records_it_cancelled() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock, shutdown_timeout_s=0)
        unwound: list[str] = []

        @app.job("stuck", interval=EVERY_60S)
        async def stuck(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                unwound.append("finally")

        await app.start()
        await advance(clock, 60)
        assert statuses(app) == [(at(60), RunStatus.RUNNING)]
        await app.stop()
        (run,) = rows(app)
        assert unwound == ["finally"]
        assert (run.status, run.error_type) == (RunStatus.CANCELLED, "CancelledError")
        assert run.error_message == "cancelled (shutdown or lost leadership)"

    asyncio.run(scenario())


def test_a_handler_exception_is_recorded_failed_with_its_type_message_and_traceback() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)

        @app.job("boom", interval=EVERY_60S)
        async def boom(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            raise ValueError("bad input 42")

        async with app:
            await advance(clock, 60)
            (run,) = rows(app)
        assert (run.status, run.error_type, run.error_message) == (RunStatus.FAILED, "ValueError", "bad input 42")
        assert 'raise ValueError("bad input 42")' in (run.error_traceback or "")
        assert (run.error_traceback or "").rstrip().endswith("ValueError: bad input 42")

    asyncio.run(scenario())


def test_a_claim_the_store_refuses_is_requeued_and_recorded_once_the_store_is_back() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        store = FaultyStore(MemoryStore(clock))
        app = make_app(clock, store)
        calls: list[datetime] = []

        @app.job("j", interval=EVERY_60S)
        async def j(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        async with app:
            store.fail("claim_runs", StoreUnavailable("database is down"))
            await advance(clock, 60)
            refused = store.calls["claim_runs"]
            assert refused >= 1 and rows(app) == [] and calls == []
            await advance(clock, 1)  # the kernel offers the fire again about once a second
            assert store.calls["claim_runs"] > refused and rows(app) == []
            store.heal("claim_runs")
            await advance(clock, 1)
            assert statuses(app) == [(at(60), RunStatus.SUCCESS)]
        assert calls == [at(60)]

    asyncio.run(scenario())


def test_a_claim_written_though_its_answer_was_lost_runs_once_when_the_fire_is_tried_again() -> None:
    """The server committed the claim and went away before it answered: the row is RUNNING under
    this instance while nothing runs it. The fire tried again must find and run it, not skip it
    as taken by another instance (the row stayed RUNNING for the life of the process)."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        store = FaultyStore(MemoryStore(clock))
        app = make_app(clock, store)
        calls: list[datetime] = []

        @app.job("j", interval=EVERY_60S)
        async def j(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        async with app:
            store.lose_answers("claim_runs", StoreUnavailable("Lost connection to server during query"))
            await advance(clock, 60)
            assert calls == [] and statuses(app) == [(at(60), RunStatus.RUNNING)]
            store.heal("claim_runs")
            await advance(clock, 1)
            assert statuses(app) == [(at(60), RunStatus.SUCCESS)]
            await advance(clock, 60)
        assert calls == [at(60), at(120)]
        assert statuses(app) == [(at(60), RunStatus.SUCCESS), (at(120), RunStatus.SUCCESS)]

    asyncio.run(scenario())


def test_a_run_end_the_store_refuses_is_recorded_later_and_nothing_stays_pending() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        store = FaultyStore(MemoryStore(clock))
        app = make_app(clock, store)
        calls: list[datetime] = []

        @app.job("j", interval=EVERY_60S)
        async def j(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(scheduled_time)

        pending = app.piko_metrics.run_records_pending
        async with app:
            store.fail("finish_runs", StoreUnavailable("server has gone away"))
            await advance(clock, 60)
            for _ in range(10):  # 30 s of refused writes, retried with backoff (at most 5 s apart)
                await advance(clock, 3)
            assert calls == [at(60)]
            assert store.calls["finish_runs"] >= 6
            assert statuses(app) == [(at(60), RunStatus.RUNNING)] and pending.value == 1
            store.heal("finish_runs")
            await advance(clock, 5)
            assert statuses(app) == [(at(60), RunStatus.SUCCESS)] and pending.value == 0
        assert calls == [at(60)]

    asyncio.run(scenario())


def test_a_manual_run_with_a_scheduled_time_is_idempotent() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[tuple[datetime, Any]] = []

        @app.job("m")
        async def m(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append((scheduled_time, ctx["config"]))

        async with app:
            first = await app.run_job("m", scheduled_time=T0, config={"x": 1})
            second = await app.run_job("m", scheduled_time=T0)
            recorded = rows(app)
        assert first.status is RunStatus.SUCCESS and first.run_id is not None
        assert second.run_id is None and second.error_type == "Duplicate"
        assert calls == [(T0, {"x": 1})]
        assert [(r.run_id, r.kind, r.status) for r in recorded] == [(first.run_id, "manual", RunStatus.SUCCESS)]

    asyncio.run(scenario())


def test_a_manual_caller_learns_the_run_id_at_the_claim_before_the_run_ends() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        release = asyncio.Event()
        claimed: list[int | None] = []

        @app.job("m")
        async def m(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            await release.wait()

        async with app:
            runner = await app.manual_runner()
            task = asyncio.create_task(runner.run_job("m", T0, on_claim=claimed.append))
            await run_until_quiet()
            assert len(claimed) == 1 and claimed[0] is not None and not task.done()  # running, its id known
            assert rows(app)[0].run_id == claimed[0] and rows(app)[0].status is RunStatus.RUNNING
            release.set()
            assert (await task).run_id == claimed[0]
            await runner.run_job("m", T0, on_claim=claimed.append)  # its time is taken: not claimed
        assert claimed[1:] == [None]

    asyncio.run(scenario())


def test_a_catch_up_jobs_missed_windows_run_in_order_and_move_the_watermark() -> None:
    async def scenario() -> None:
        hour = [datetime(2026, 3, 1, h, tzinfo=UTC) for h in range(24)]
        clock = FakeClock(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
        store = MemoryStore(clock)  # stored before start: the watermark says 09:00 was the last window's end
        await store.upsert_schedule(ScheduleRow("sync", "cron", '{"minute": 0}'))
        assert await store.cas_watermark("sync", None, hour[9])
        app = make_app(clock, store)
        windows: list[tuple[datetime, datetime]] = []

        @app.job("sync", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def sync(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            windows.append((ctx["data_interval"].start, ctx["data_interval"].end))

        async with app:
            await run_until_quiet()
            assert windows == [(hour[9], hour[10]), (hour[10], hour[11]), (hour[11], hour[12])]
            assert await store.get_watermark("sync") == hour[12]
            await advance(clock, 1800)  # the 13:00 fire: the next window, on schedule
            assert windows[3:] == [(hour[12], hour[13])]
            assert await store.get_watermark("sync") == hour[13]
            recorded = rows(app)
        assert [(r.scheduled_at, r.status, r.data_start, r.kind) for r in recorded] == [
            (hour[10], RunStatus.SUCCESS, hour[9], "backfill"), (hour[11], RunStatus.SUCCESS, hour[10], "backfill"),
            (hour[12], RunStatus.SUCCESS, hour[11], "backfill"), (hour[13], RunStatus.SUCCESS, hour[12], "schedule")]

    asyncio.run(scenario())
