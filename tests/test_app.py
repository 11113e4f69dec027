"""End-to-end behaviour of the spine on a real SQLite file, with a fake clock for timing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import pytest

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import RunStatus
from piko.settings import Settings
from tests.conftest import wait_until

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_app(db_path: str, clock: FakeClock, name: str = "t", **kw) -> PikoApp:
    settings = Settings(db_path=db_path, http_enabled=False, leader_enabled=False, **kw)
    return PikoApp(name, settings=settings, clock=clock)


def idle(app: PikoApp) -> bool:
    """No run of this app is in progress (recorded and bookkept)."""
    return app.runner is not None and app.runner.is_idle()


async def runs(app: PikoApp, job_id: str | None = None):
    return list(reversed(await app.store.recent_runs(job_id, limit=1000)))


def hold_claims(app: PikoApp) -> asyncio.Event:
    """Claims wait in the store until the returned event is set (a slow or locked database)."""
    real, gate = app.store.claim_runs, asyncio.Event()

    async def held(claims):
        await gate.wait()
        return await real(claims)

    app.store.claim_runs = held
    return gate


async def tick(clock: FakeClock, seconds: float) -> None:
    for _ in range(10):  # let background loops reach their sleep before time moves
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(10):
        await asyncio.sleep(0)


def test_interval_job_fires_on_time_and_every_run_is_recorded(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        seen = []

        @app.job("hello", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"})
        async def hello(ctx, scheduled_time):
            seen.append((ctx["run_id"], ctx["job_id"], ctx["attempt"], scheduled_time, dict(ctx["config"])))

        async with app:
            for k in range(1, 4):
                await tick(clock, 10)
                await wait_until(lambda k=k: _count_status(db_path, "SUCCESS") == k and idle(app))
            recorded = await runs(app)
        return seen, recorded

    seen, recorded = asyncio.run(scenario())
    assert [s[3] for s in seen] == [T0 + timedelta(seconds=10 * k) for k in (1, 2, 3)]
    assert all(s[1] == "hello" and s[2] == 1 and s[4] == {} for s in seen)
    assert [r.status for r in recorded] == [RunStatus.SUCCESS] * 3
    assert [r.run_id for r in recorded] == [s[0] for s in seen]


def _count_status(db_path: str, status: str, job_id: str | None = None) -> int:
    conn = sqlite3.connect(db_path)
    try:
        q = "SELECT COUNT(*) FROM job_run WHERE status = ?" + (" AND job_id = ?" if job_id else "")
        return conn.execute(q, (status, job_id) if job_id else (status,)).fetchone()[0]
    finally:
        conn.close()


def test_two_instances_on_one_sqlite_file_run_each_scheduled_time_once(db_path):
    async def scenario():
        clock = FakeClock(T0)
        apps = [make_app(db_path, clock, name=f"i{i}") for i in range(2)]
        calls = []
        for app in apps:
            @app.job("shared", interval={"seconds": 5, "start_date": "2026-03-01 12:00:00"})
            async def shared(ctx, scheduled_time, app=app):
                calls.append((app.name, scheduled_time))

        async with apps[0], apps[1]:
            for k in range(1, 7):
                await tick(clock, 5)
                await wait_until(lambda k=k: _count_status(db_path, "SUCCESS") == k and all(map(idle, apps)))
        return calls

    calls = asyncio.run(scenario())
    times = [t for _, t in calls]
    assert sorted(times) == [T0 + timedelta(seconds=5 * k) for k in range(1, 7)]
    conn = sqlite3.connect(db_path)
    dup = conn.execute("SELECT scheduled_time, COUNT(*) FROM job_run GROUP BY scheduled_time HAVING COUNT(*) > 1")
    assert dup.fetchall() == []


def test_late_fires_beyond_grace_are_recorded_missed_and_backlog_coalesces(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("strict", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"},
                 misfire_grace_time=5, coalesce=False)
        async def strict(ctx, scheduled_time):
            pass

        @app.job("merged", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"}, coalesce=True)
        async def merged(ctx, scheduled_time):
            pass

        async with app:
            await tick(clock, 32)  # three fire times due at once, 22 s, 12 s and 2 s late
            await wait_until(lambda: _count_status(db_path, "SUCCESS") == 2)
            await wait_until(lambda: _count_status(db_path, "MISSED") == 4)
            return await runs(app, "strict"), await runs(app, "merged")

    strict, merged = asyncio.run(scenario())
    assert [r.status for r in strict] == [RunStatus.MISSED, RunStatus.MISSED, RunStatus.SUCCESS]
    assert "beyond misfire_grace_time" in strict[0].error_message
    assert sorted(r.status.value for r in merged) == ["MISSED", "MISSED", "SUCCESS"]
    assert all("coalesced" in r.error_message for r in merged if r.status is RunStatus.MISSED)


def test_overlapping_fire_beyond_max_instances_is_recorded_skipped(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        release = asyncio.Event()

        @app.job("slow", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"}, max_instances=1)
        async def slow(ctx, scheduled_time):
            await release.wait()

        async with app:
            await tick(clock, 10)
            await wait_until(lambda: app.runner.running_count("slow") == 1)
            await tick(clock, 10)
            await wait_until(lambda: _count_status(db_path, "SKIPPED") == 1)
            release.set()
            await wait_until(lambda: _count_status(db_path, "SUCCESS") == 1)
            return await runs(app)

    recorded = asyncio.run(scenario())
    skipped = [r for r in recorded if r.status is RunStatus.SKIPPED]
    assert skipped[0].scheduled_at == T0 + timedelta(seconds=20)
    assert "max_instances=1" in skipped[0].error_message


def test_failure_and_timeout_are_recorded_with_their_error(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("boom")
        async def boom(ctx, scheduled_time):
            raise ValueError("bad input 42")

        @app.job("hang", timeout=0.05)
        async def hang(ctx, scheduled_time):
            await asyncio.sleep(30)

        async with app:
            failed = await app.run_job("boom")
            timed_out = await app.run_job("hang")
            return failed, timed_out, await runs(app)

    failed, timed_out, recorded = asyncio.run(scenario())
    assert failed.status is RunStatus.FAILED and failed.error_type == "ValueError"
    assert timed_out.status is RunStatus.TIMEOUT and timed_out.error_type == "JobTimeout"
    by_job = {r.job_id: r for r in recorded}
    assert by_job["boom"].error_message == "bad input 42"
    assert by_job["hang"].status is RunStatus.TIMEOUT and "timeout of 0.05s" in by_job["hang"].error_message


def test_shutdown_cancels_runs_past_the_budget_records_cancelled_and_releases_resources(db_path):
    events = []

    @asynccontextmanager
    async def conn(ctx):
        events.append("open")
        try:
            yield "conn"
        finally:
            events.append("close")

    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock, shutdown_timeout_s=0.1)

        @app.job("stuck", resources={"c": conn})
        async def stuck(ctx, scheduled_time, c):
            await asyncio.sleep(30)

        await app.start()
        task = asyncio.create_task(app.run_job("stuck"))
        await wait_until(lambda: events == ["open"])
        await app.stop()
        outcome = await task
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status is RunStatus.CANCELLED
    assert events == ["open", "close"]
    assert _count_status(db_path, "CANCELLED") == 1


def test_startup_failure_unwinds_what_had_started(db_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def scenario():
        settings = Settings(db_path=db_path, http_enabled=True, http_port=port, leader_enabled=False)
        app = PikoApp("t", settings=settings)
        with pytest.raises(Exception, match="already in use"):
            await app.start()
        return app

    try:
        app = asyncio.run(scenario())
    finally:
        taken.close()
    assert not app.live.is_started()
    assert not [t for t in threading.enumerate() if t.name == "piko-sqlite"]


def test_orphaned_running_rows_of_dead_instances_are_marked_abandoned(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        await app.store.open()
        from piko.core.types import InstanceInfo, RunClaim

        dead = InstanceInfo("ghost", __import__("socket").gethostname(), 2 ** 22 + 7, T0)
        await app.store.heartbeat(dead, T0)
        await app.store.claim_run(RunClaim("x", T0, RunStatus.RUNNING, T0, "ghost"))
        await app.store.close()
        async with app:
            return await runs(app)

    (row,) = asyncio.run(scenario())
    assert row.status is RunStatus.ABANDONED and row.error_type == "InstanceLost"


def test_date_job_runs_once_then_disables_its_schedule(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("once", date={"run_date": "2026-03-01 12:00:05"})
        async def once(ctx, scheduled_time):
            pass

        async with app:
            await tick(clock, 5)
            await wait_until(lambda: _count_status(db_path, "SUCCESS") == 1)
            await wait_until(lambda: not [r for r in _rows(db_path) if r[1]])
            assert app.kernel.next_fire_at("once") is None

    asyncio.run(scenario())


@pytest.mark.parametrize("coalesce", [True, False])
def test_fires_that_fell_due_while_piko_was_down_are_run_or_recorded_missed_after_a_restart(db_path, coalesce):
    ran: list[datetime] = []
    s = [T0 + timedelta(seconds=10 * n) for n in range(20)]
    build = _every10(db_path, ran, misfire_grace_s=25, coalesce=coalesce)

    async def scenario():
        clock = FakeClock(T0)
        await _run_first_fire(build(clock), clock, ran, s[1])
        clock.advance(45)  # down from 12:00:10 to 12:00:55: 20, 30, 40 and 50 fell due meanwhile
        async with build(clock) as app:
            await wait_until(lambda: idle(app) and _count_status(db_path, "RUNNING") == 0
                             and len(_statuses(db_path)) == 5)

    asyncio.run(scenario())
    rows = dict(_statuses(db_path))
    # 20 is 35 s late, beyond the 25 s grace: recorded MISSED; 30, 40, 50 are within it
    if coalesce:
        assert ran == [s[1], s[5]]
        assert rows == {s[1]: "SUCCESS", s[2]: "MISSED", s[3]: "MISSED", s[4]: "MISSED", s[5]: "SUCCESS"}
    else:
        assert ran == [s[1], s[3], s[4], s[5]]
        assert rows == {s[1]: "SUCCESS", s[2]: "MISSED", s[3]: "SUCCESS", s[4]: "SUCCESS", s[5]: "SUCCESS"}


def test_a_restart_after_a_long_downtime_logs_one_line_for_the_fires_it_records_missed(db_path, caplog):
    ran: list[datetime] = []
    build = _every10(db_path, ran, misfire_grace_s=25, coalesce=True)

    async def scenario():
        clock = FakeClock(T0)
        await _run_first_fire(build(clock), clock, ran, T0 + timedelta(seconds=10))
        clock.advance(180)  # down for 3 min: 18 fire times fell due
        async with build(clock) as app:
            await wait_until(lambda: idle(app) and _count_status(db_path, "MISSED") == 17)

    with caplog.at_level(logging.WARNING, "piko.runner"):
        asyncio.run(scenario())
    missed_lines = [r.getMessage() for r in caplog.records if "MISSED" in r.getMessage()]
    assert missed_lines == ["job every10: 17 fires recorded MISSED from 2026-03-01T12:00:20+00:00 to "
                            "2026-03-01T12:03:00+00:00 (17 coalesced into a newer fire, 0 later than "
                            "misfire_grace_time)"]


def test_a_row_disabled_across_a_restart_starts_afresh_when_enabled_again(db_path):
    ran: list[datetime] = []
    s = [T0 + timedelta(seconds=10 * n) for n in range(20)]
    build = _every10(db_path, ran, misfire_grace_s=3600, coalesce=False, poll_interval_s=1)

    async def scenario():
        clock = FakeClock(T0)
        await _run_first_fire(build(clock), clock, ran, s[1])
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE scheduled_job SET enabled = 0")
        clock.advance(45)
        async with build(clock) as app:  # started while the row is disabled: nothing to resume
            with sqlite3.connect(db_path) as conn:
                conn.execute("UPDATE scheduled_job SET enabled = 1")
            await app.live.reconcile_once()
            await tick(clock, 5)  # 12:01:00
            await wait_until(lambda: len(ran) == 2 and idle(app))

    asyncio.run(scenario())
    assert ran == [s[1], s[6]]  # not the fires of the time it was disabled
    assert [st for _, st in _statuses(db_path)] == ["SUCCESS", "SUCCESS"]


def _every10(db_path: str, ran: list[datetime], **settings):
    """An app factory with one job every 10 s from T0 that records its scheduled times."""
    def build(clock):
        app = make_app(db_path, clock, **settings)

        @app.job("every10", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"})
        async def every10(ctx, scheduled_time):
            ran.append(scheduled_time)
        return app
    return build


async def _run_first_fire(app: PikoApp, clock: FakeClock, ran: list[datetime], first: datetime) -> None:
    async with app:
        await tick(clock, 10)
        await wait_until(lambda: ran == [first] and idle(app))


def _statuses(db_path: str) -> list[tuple[datetime, str]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT scheduled_time, status FROM job_run ORDER BY scheduled_time").fetchall()
    return [(datetime.fromisoformat(t).replace(tzinfo=UTC), st) for t, st in rows]


def test_a_date_row_whose_time_just_passed_still_runs_once(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock, misfire_grace_s=60)
        done = []

        @app.job("late_once", date={"run_date": "2026-03-01 11:59:40"})  # 20 s ago: inside the grace time
        async def late_once(ctx, scheduled_time):
            done.append(scheduled_time)

        async with app:
            await wait_until(lambda: done == [T0 - timedelta(seconds=20)])
            await wait_until(lambda: _rows(db_path) == [("late_once", 0)])
        async with make_app(db_path, clock, misfire_grace_s=60) as again:  # a restart runs nothing twice
            await asyncio.sleep(0.05)
            assert again.kernel.scheduled_jobs() == []
        assert _count_status(db_path, "SUCCESS") == 1

    asyncio.run(scenario())


def test_a_date_row_long_past_is_recorded_missed_once_and_disabled(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock, misfire_grace_s=60)

        @app.job("stale_once", date={"run_date": "2026-02-01 12:00:00"})
        async def stale_once(ctx, scheduled_time):
            raise AssertionError("must not run a month late")

        async with app:
            await wait_until(lambda: _count_status(db_path, "MISSED") == 1)
            await wait_until(lambda: _rows(db_path) == [("stale_once", 0)])

    asyncio.run(scenario())


def test_a_job_id_registered_by_the_app_and_by_the_older_job_decorator_is_refused(db_path):
    from piko.core import registry as registry_module
    from piko.errors import RegistrationError

    async def scenario():
        app = make_app(db_path, FakeClock(T0))

        @app.job("twice")
        async def one(ctx, scheduled_time):
            pass

        saved = registry_module.default_registry._jobs.copy()
        try:
            @registry_module.job("twice")
            async def other(ctx, scheduled_time):
                pass

            with pytest.raises(RegistrationError, match="'twice' is already registered"):
                await app.start()
        finally:
            registry_module.default_registry._jobs = saved
        await app.stop()

    asyncio.run(scenario())


def test_manual_runs_of_an_app_that_is_not_started_use_the_stored_config_and_options(db_path):
    from piko.core.types import ConfigRow, ScheduleRow

    async def scenario():
        app = make_app(db_path, FakeClock(T0))
        seen = []

        @app.job("cfg_job")
        async def cfg_job(ctx, scheduled_time):
            seen.append(ctx["config"])

        store = app.store
        await store.open()
        await store.upsert_schedule(ScheduleRow("cfg_job", "interval", '{"hours": 1}'))
        await store.upsert_config(ConfigRow("cfg_job", '{"x": 1}'))
        await store.close()
        outcome = await app.run_job("cfg_job")
        await app.stop()
        assert outcome.status is RunStatus.SUCCESS and seen == [{"x": 1}]

    asyncio.run(scenario())


def _rows(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT job_id, enabled FROM scheduled_job").fetchall()
    finally:
        conn.close()


def test_seed_style_sql_insert_schedules_a_code_registered_job(db_path):
    async def scenario():
        clock = FakeClock(datetime.now(UTC))  # the row's created_at (the DB's now) anchors the interval
        app = make_app(db_path, clock, poll_interval_s=1)
        done = []

        @app.job("hello_job")
        async def hello(ctx, scheduled_time):
            done.append(scheduled_time)

        async with app:
            conn = sqlite3.connect(db_path)
            conn.execute("INSERT INTO scheduled_job(job_id, schedule_type, schedule_expr, enabled, version) "
                         "VALUES (\"hello_job\", \"interval\", '{\"seconds\": 10}', 1, 1)")
            conn.commit()
            conn.close()
            await tick(clock, 1.1)  # one reconcile poll
            await wait_until(lambda: app.kernel.next_fire_at("hello_job") is not None)
            await tick(clock, 12)
            await wait_until(lambda: len(done) == 1)

    asyncio.run(scenario())


def test_a_fire_that_cannot_be_recorded_is_requeued_and_recorded_when_the_store_is_back(db_path):
    from piko.errors import StoreError

    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("j", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def j(ctx, scheduled_time):
            pass

        async with app:
            real = app.store.claim_runs
            outage = {"on": True}

            async def flaky(claims):
                if outage["on"]:
                    raise StoreError("database is down")
                return await real(claims)

            app.store.claim_runs = flaky
            await tick(clock, 60)
            await wait_until(lambda: idle(app))
            assert _count_status(db_path, "SUCCESS") == 0
            outage["on"] = False
            await tick(clock, 1)
            await wait_until(lambda: _count_status(db_path, "SUCCESS") == 1 and idle(app))
            return await runs(app)

    (run,) = asyncio.run(scenario())
    assert run.scheduled_at == T0 + timedelta(seconds=60)


def test_a_burst_waits_for_the_store_instead_of_piling_every_fire_up_in_memory(db_path):
    from piko.core.backpressure import MAX_ON_STORE

    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        jobs = 3 * MAX_ON_STORE
        started = []

        async def handler(ctx, scheduled_time):
            started.append(ctx["job_id"])

        for i in range(jobs):
            app.job(f"b{i}", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})(handler)
        async with app:
            gate, peak = hold_claims(app), [0]
            await tick(clock, 60)  # every job is due at once
            for _ in range(200):
                await asyncio.sleep(0)
                peak[0] = max(peak[0], app.runner.running_count())  # fires handed over, not yet finished
            assert MAX_ON_STORE <= peak[0] < 2 * MAX_ON_STORE  # dispatch paused at the bound
            gate.set()
            await wait_until(lambda: len(started) == jobs and idle(app), timeout=30)
        assert _count_status(db_path, "SUCCESS") == jobs

    asyncio.run(scenario())


def test_a_field_dicts_own_jitter_delays_the_fire_within_its_bound(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        started = []

        @app.job("jittery", cron={"minute": "*", "second": 0, "jitter": 30})
        async def jittery(ctx, scheduled_time):
            started.append(clock.now())

        async with app:
            await tick(clock, 60)  # the scheduled time: a jitter in (0, 30] s holds it back
            await asyncio.sleep(0.05)
            assert started == []
            await tick(clock, 30)
            await wait_until(lambda: len(started) == 1)

    asyncio.run(scenario())


def test_shutdown_while_a_claim_is_in_flight_still_runs_and_records_that_run(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock, shutdown_timeout_s=10)
        ran = []

        @app.job("j", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def j(ctx, scheduled_time):
            ran.append(scheduled_time)

        await app.start()
        gate = hold_claims(app)
        await tick(clock, 60)
        stopping = asyncio.create_task(app.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # waits for the claim that is in flight
        gate.set()
        await asyncio.wait_for(stopping, 10)
        return ran

    assert asyncio.run(scenario()) == [T0 + timedelta(seconds=60)]
    assert _count_status(db_path, "SUCCESS") == 1
