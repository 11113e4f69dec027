"""Issue 4 behaviour end to end on SQLite: reconcile, hot config, stateful backfill, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import BackfillPolicy, RunStatus
from piko.settings import Settings
from tests.conftest import wait_until

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOURLY = '{"minute": 0}'


def make_app(db_path, clock, **kw) -> PikoApp:
    kw.setdefault("poll_interval_s", 1)
    return PikoApp("t", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False, **kw),
                   clock=clock)


async def tick(clock: FakeClock, seconds: float) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(10):
        await asyncio.sleep(0)


def sql(db_path, statement, *params):
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def fetch(db_path, statement, *params):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


async def seed_watermark(db_path, job_id: str, cron_fields: str, mark: datetime) -> None:
    """A stored cron row with its watermark, written before the app starts."""
    from piko.core.types import ScheduleRow
    from piko.store import make_store

    store = make_store(f"sqlite:///{db_path}")
    await store.open()
    try:
        await store.upsert_schedule(ScheduleRow(job_id, "cron", cron_fields))
        assert await store.cas_watermark(job_id, None, mark)
    finally:
        await store.close()


async def poll(app: PikoApp, clock: FakeClock) -> None:
    """One reconcile tick, and wait until it is applied."""
    await app.live.reconcile_once()


def test_update_without_version_bump_is_applied_within_one_poll(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("j", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def j(ctx, scheduled_time):
            pass

        async with app:
            assert app.kernel.next_fire_at("j") == T0 + timedelta(seconds=60)
            sql(db_path, "UPDATE scheduled_job SET schedule_expr = ? WHERE job_id = 'j'",
                '{"seconds": 5, "start_date": "2026-03-01 12:00:00"}')
            await tick(clock, 1.2)
            await wait_until(lambda: app.kernel.next_fire_at("j") == T0 + timedelta(seconds=5))

    asyncio.run(scenario())


def test_deleted_or_disabled_row_stops_firing_and_reenabled_row_resumes(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("j", interval={"seconds": 60, "start_date": "2026-03-01 12:00:00"})
        async def j(ctx, scheduled_time):
            pass

        async with app:
            sql(db_path, "UPDATE scheduled_job SET enabled = 0 WHERE job_id = 'j'")
            await tick(clock, 1.2)
            await wait_until(lambda: app.kernel.next_fire_at("j") is None)
            sql(db_path, "UPDATE scheduled_job SET enabled = 1 WHERE job_id = 'j'")
            await tick(clock, 1.2)
            await wait_until(lambda: app.kernel.next_fire_at("j") is not None)
            sql(db_path, "DELETE FROM scheduled_job WHERE job_id = 'j'")
            await tick(clock, 1.2)
            await wait_until(lambda: app.kernel.next_fire_at("j") is None)

    asyncio.run(scenario())


def test_bad_cron_in_one_row_keeps_other_jobs_and_its_last_good_schedule_reported_once(db_path, caplog):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        ran = []

        @app.job("good", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"})
        async def good(ctx, scheduled_time):
            ran.append(scheduled_time)

        @app.job("broken", cron="*/15 * * * *")
        async def broken(ctx, scheduled_time):
            pass

        async with app:
            before = app.kernel.next_fire_at("broken")
            sql(db_path, "UPDATE scheduled_job SET schedule_expr = '61 * * * *' WHERE job_id = 'broken'")
            for _ in range(3):
                await tick(clock, 1.2)
                await app.live.reconcile_once()
                sql(db_path, "UPDATE scheduled_job SET timezone = NULL WHERE job_id = 'broken'")  # touch it again
            await tick(clock, 10)
            await wait_until(lambda: len(ran) >= 1)
            assert app.kernel.next_fire_at("broken") == before
            assert "61" in app.live.book.problems["broken"]
            metric = app.piko_metrics.config_reconcile_total.labels(result="invalid_schedule")
            return metric

    with caplog.at_level(logging.ERROR, logger="piko.reconcile"):
        asyncio.run(scenario())
    reports = [r for r in caplog.records if "broken" in r.getMessage() and "invalid" in r.getMessage()]
    assert len(reports) == 1


def test_a_row_with_absurd_options_leaves_the_last_good_options_in_force(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        app.job("j", interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"}, max_instances=2)(_noop)
        async with app:
            sql(db_path, "UPDATE scheduled_job SET misfire_grace_s = 'soon', max_instances = 0 WHERE job_id = 'j'")
            await app.live.reconcile_once()
            assert "misfire_grace_s" in app.live.book.problems["j"]
            return app.live.options_for("j")  # asked by every fire of the job's last good schedule

    opts = asyncio.run(scenario())
    assert (opts.misfire_grace_s, opts.max_instances) == (60.0, 2)


def test_row_for_unregistered_job_is_reported_not_fatal(db_path, caplog):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("known")
        async def known(ctx, scheduled_time):
            pass

        await app.store.open()
        await app.store.upsert_schedule(__import__("piko.core.types", fromlist=["x"]).ScheduleRow(
            "ghost_job", "cron", "* * * * *"))
        await app.store.close()
        async with app:
            await app.live.reconcile_once()

    with caplog.at_level(logging.WARNING, logger="piko.reconcile"):
        asyncio.run(scenario())
    assert sum("ghost_job" in r.getMessage() for r in caplog.records) == 1


def test_a_quiet_tick_reads_no_schedule_rows(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        for i in range(50):
            app.job(f"j{i}", interval={"seconds": 60})(_noop)
        async with app:
            calls = []
            real = app.store.load_schedules

            async def spy(job_ids=None):
                calls.append(None if job_ids is None else sorted(job_ids))
                return await real(job_ids)

            app.store.load_schedules = spy
            await app.live.reconcile_once()
            sql(db_path, "UPDATE scheduled_job SET jitter_s = 1 WHERE job_id = 'j7'")
            await app.live.reconcile_once()
            return calls

    assert asyncio.run(scenario()) == [["j7"]]


async def _noop(ctx, scheduled_time):
    pass


@dataclasses.dataclass
class SweepConfig:
    concurrency: int = 50
    timeout_s: float = 10.0


def test_config_with_future_effective_from_waits_and_survives_a_restart(db_path):
    seen = []

    def build(clock):
        app = make_app(db_path, clock)

        @app.job("cfg", schema=SweepConfig)
        async def cfg(ctx, scheduled_time):
            seen.append(ctx["config"])
        return app

    async def scenario():
        clock = FakeClock(T0)
        app = build(clock)
        async with app:
            sql(db_path, "INSERT INTO job_config(job_id, schema_version, config_json, version) "
                         "VALUES ('cfg', 1, '{\"concurrency\": 200}', 1)")
            await app.live.reconcile_once()
            await app.run_job("cfg")
            sql(db_path, "UPDATE job_config SET config_json = '{\"concurrency\": 100}', "
                         "effective_from = '2026-03-01 12:10:00', version = version + 1 WHERE job_id = 'cfg'")
            await app.live.reconcile_once()
            await app.run_job("cfg")
        app2 = build(clock)  # a restart before the new version is due
        async with app2:
            await app2.run_job("cfg")
            clock.advance(timedelta(minutes=11))
            await app2.run_job("cfg")

    asyncio.run(scenario())
    assert [c.concurrency for c in seen] == [200, 200, 200, 100]
    assert all(isinstance(c, SweepConfig) for c in seen)


def test_invalid_config_is_rejected_and_the_last_valid_one_keeps_serving(db_path, caplog):
    seen = []

    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("cfg", schema=SweepConfig)
        async def cfg(ctx, scheduled_time):
            ctx["config"].concurrency += 1000  # mutating must not leak into the next run
            seen.append(ctx["config"].concurrency)

        async with app:
            sql(db_path, "INSERT INTO job_config(job_id, config_json) VALUES ('cfg', '{\"concurrency\": 7}')")
            await app.live.reconcile_once()
            sql(db_path, "UPDATE job_config SET config_json = '{\"concurrency\": 1, \"nope\": 2}', version = 5")
            await app.live.reconcile_once()
            await app.live.reconcile_once()
            await app.run_job("cfg")
            await app.run_job("cfg")

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert seen == [1007, 1007]
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "'cfg'" in rejected[0] and "version 5" in rejected[0] and "nope" in rejected[0]


@dataclasses.dataclass
class NeedsKey:
    api_key: str  # no default: an empty config cannot build it


def test_a_job_whose_schema_needs_a_config_row_records_each_fire_failed_until_one_applies(db_path):
    seen = []

    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)

        @app.job("keyed", schema=NeedsKey, interval={"seconds": 10, "start_date": "2026-03-01 12:00:00"})
        async def keyed(ctx, scheduled_time):
            seen.append(ctx["config"].api_key)

        async with app:
            await tick(clock, 10)
            await wait_until(lambda: fetch(db_path, "SELECT COUNT(*) FROM job_run WHERE status != 'RUNNING'")[0][0] >= 1)
            manual = await app.run_job("keyed")
            assert manual.status == RunStatus.FAILED and manual.error_type == "ConfigError"
            sql(db_path, "INSERT INTO job_config(job_id, config_json) VALUES ('keyed', '{\"api_key\": \"k\"}')")
            await app.live.reconcile_once()
            await tick(clock, 10)
            await wait_until(lambda: seen == ["k"])

    asyncio.run(scenario())
    rows = fetch(db_path, "SELECT status, error_type, error_message FROM job_run ORDER BY run_id")
    assert [r[0] for r in rows] == ["FAILED", "FAILED", "SUCCESS"]  # none left RUNNING
    assert rows[0][1] == "ConfigError" and "api_key" in rows[0][2] and "no job_config row applies" in rows[0][2]


def test_a_rejected_version_that_a_newer_valid_one_replaced_is_not_reported_again_after_a_restart(db_path, caplog):
    seen = []

    def build(clock):
        app = make_app(db_path, clock)

        @app.job("cfg", schema=SweepConfig)
        async def cfg(ctx, scheduled_time):
            seen.append(ctx["config"].concurrency)
        return app

    async def scenario():
        clock = FakeClock(T0)
        async with build(clock) as app:
            sql(db_path, "INSERT INTO job_config(job_id, config_json, version) VALUES ('cfg', '{\"nope\": 1}', 1)")
            await app.live.reconcile_once()  # rejected, reported
            sql(db_path, "UPDATE job_config SET config_json = '{\"concurrency\": 3}', version = 2")
            await app.live.reconcile_once()
        caplog.clear()
        async with build(clock) as app:  # a restart: version 1 is history behind a valid version 2
            await app.run_job("cfg")
        sql(db_path, "UPDATE job_config SET config_json = '{\"bad\": 2}', version = 3")
        async with build(clock) as app:  # the newest in force is invalid: version 2 keeps serving
            await app.run_job("cfg")

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert seen == [3, 3]
    assert len(rejected) == 1 and "version 3" in rejected[0]  # not version 1 again


def test_catch_up_after_a_three_hour_outage_runs_exactly_three_windows_in_order(db_path):
    windows = []

    def build(clock):
        app = make_app(db_path, clock)

        @app.job("sync_orders", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def sync_orders(ctx, scheduled_time):
            windows.append((ctx["data_interval"].start, ctx["data_interval"].end))
        return app

    async def scenario():
        clock = FakeClock(datetime(2026, 3, 1, 8, 59, 59, tzinfo=UTC))
        app = build(clock)
        async with app:
            await tick(clock, 1)  # the 09:00 fire
            await wait_until(lambda: len(windows) == 1 and app.runner.is_idle())
        clock.set(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))  # down from 09:00 to 12:30
        app2 = build(clock)
        async with app2:
            await wait_until(lambda: len(windows) == 4 and app2.runner.is_idle())
            mark = await app2.store.get_watermark("sync_orders")
        return mark

    mark = asyncio.run(scenario())
    h = [datetime(2026, 3, 1, x, tzinfo=UTC) for x in range(8, 13)]
    assert windows == [(h[0], h[1]), (h[1], h[2]), (h[2], h[3]), (h[3], h[4])]
    assert mark == h[4]


def test_skip_after_an_outage_longer_than_backfill_max_windows_runs_the_latest_window(db_path):
    windows = []

    async def scenario():
        await seed_watermark(db_path, "hourly", HOURLY, datetime(2026, 2, 20, 0, tzinfo=UTC))  # 9 days ago
        clock = FakeClock(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
        app = make_app(db_path, clock, backfill_max_windows=5)

        @app.job("hourly", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.SKIP)
        async def hourly(ctx, scheduled_time):
            windows.append((ctx["data_interval"].start, ctx["data_interval"].end))

        async with app:
            await wait_until(lambda: windows and app.runner.is_idle())
            return await app.store.get_watermark("hourly")

    mark = asyncio.run(scenario())
    latest = (datetime(2026, 3, 1, 11, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC))
    assert windows == [latest] and mark == latest[1]  # not the 5th window after the old watermark


def test_failing_window_is_retried_and_the_watermark_does_not_move_past_it(db_path):
    calls = []
    fail = {"on": True}

    async def scenario():
        clock = FakeClock(datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC))
        app = make_app(db_path, clock)

        @app.job("s", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def s(ctx, scheduled_time):
            calls.append(ctx["data_interval"].end.hour)
            if fail["on"] and ctx["data_interval"].end.hour == 10:
                raise RuntimeError("source not ready")

        await seed_watermark(db_path, "s", HOURLY, datetime(2026, 3, 1, 9, tzinfo=UTC))  # before start: no race
        async with app:
            await tick(clock, 1)  # 10:00 fails
            await wait_until(lambda: calls == [10] and app.runner.is_idle())
            assert await app.store.get_watermark("s") == datetime(2026, 3, 1, 9, tzinfo=UTC)
            fail["on"] = False
            await tick(clock, 3600)  # 11:00 runs, then the lagging watermark triggers the 10:00 retry
            await wait_until(lambda: sorted(calls) == [10, 10, 11] and app.runner.is_idle())

            async def caught_up():
                return await app.store.get_watermark("s") == datetime(2026, 3, 1, 11, tzinfo=UTC)

            await wait_until(caught_up)

    asyncio.run(scenario())
    statuses = fetch(db_path, "SELECT scheduled_time, status FROM job_run ORDER BY run_id")
    assert [s for _, s in statuses].count("FAILED") == 1


def test_catch_up_never_runs_a_newer_window_before_an_older_failed_one(db_path):
    calls = []
    fail = {"on": True}
    h = [datetime(2026, 3, 1, 10 + i, tzinfo=UTC) for i in range(4)]

    async def scenario():
        clock = FakeClock(datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC))
        app = make_app(db_path, clock)

        @app.job("s", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def s(ctx, scheduled_time):
            calls.append(ctx["data_interval"].end)
            if fail["on"] and ctx["data_interval"].end == h[0]:
                raise RuntimeError("source not ready")

        await seed_watermark(db_path, "s", HOURLY, datetime(2026, 3, 1, 9, tzinfo=UTC))

        async def mark_is(at):
            return await app.store.get_watermark("s") == at

        async with app:
            await tick(clock, 1)  # 10:00 fails
            for n, _ in enumerate(h[1:3], start=2):  # 11:00, 12:00: their windows wait; 10:00 is retried
                await wait_until(lambda n=n: len(calls) == n - 1 and app.runner.is_idle())
                await tick(clock, 3600)
            await wait_until(lambda: len(calls) == 3 and app.runner.is_idle())
            fail["on"] = False
            await tick(clock, 3600)  # 13:00: 10:00 succeeds, then 11, 12 and 13 in order
            await wait_until(lambda: mark_is(h[3]))

    asyncio.run(scenario())
    assert calls == [h[0], h[0], h[0], h[0], h[1], h[2], h[3]]  # each newer window once, after the older
    rows = fetch(db_path, "SELECT scheduled_time, status, error_type FROM job_run ORDER BY run_id")
    waits = [r for r in rows if r[2] == "WindowWaits"]
    assert [r[1] for r in waits] == ["SKIPPED"] * 3  # the fires at 11, 12 and 13 are recorded, then run
    (message,) = fetch(db_path, "SELECT error_message FROM job_run WHERE error_type = 'WindowWaits' LIMIT 1")[0]
    assert message.startswith("window [2026-03-01T10:00:00+00:00, 2026-03-01T11:00:00+00:00) waits for")
    assert sorted(r[0] for r in rows if r[1] == "SUCCESS") == [r[0] for r in rows if r[1] == "SUCCESS"]


def test_retries_record_each_attempt_as_its_own_row(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        attempts = []

        @app.job("flaky", retries=2, retry_backoff=0.0)
        async def flaky(ctx, scheduled_time):
            attempts.append(ctx["attempt"])
            if ctx["attempt"] < 3:
                raise ConnectionError("try again")

        async with app:
            outcome = await app.run_job("flaky")
        return attempts, outcome

    attempts, outcome = asyncio.run(scenario())
    assert attempts == [1, 2, 3] and outcome.status is RunStatus.SUCCESS
    rows = fetch(db_path, "SELECT attempt, status FROM job_run ORDER BY run_id")
    assert rows == [(1, "FAILED"), (2, "FAILED"), (3, "SUCCESS")]


def test_manual_run_with_scheduled_time_is_idempotent(db_path):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        app.job("m")(_noop)
        async with app:
            first = await app.run_job("m", scheduled_time=T0, config={"x": 1})
            second = await app.run_job("m", scheduled_time=T0)
        return first, second

    first, second = asyncio.run(scenario())
    assert first.status is RunStatus.SUCCESS and second.run_id is None


def test_a_manual_run_now_of_a_stateful_job_gets_the_latest_complete_window_and_moves_the_watermark(db_path):
    async def scenario():
        clock = FakeClock(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
        app = make_app(db_path, clock)
        windows = []

        @app.job("sync", cron={"minute": 0}, stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
        async def sync(ctx, scheduled_time):
            windows.append((ctx["data_interval"].start.hour, ctx["data_interval"].end.hour))

        await seed_watermark(db_path, "sync", HOURLY, datetime(2026, 3, 1, 11, tzinfo=UTC))
        outcome = await app.run_job("sync")  # the app is not started: a manual run, as `piko trigger` does
        mark = await app.store.get_watermark("sync")
        await app.stop()
        return outcome, windows, mark

    outcome, windows, mark = asyncio.run(scenario())
    assert outcome.status is RunStatus.SUCCESS
    assert windows == [(11, 12)]  # aligned on the hourly schedule, not [12:00, 12:30)
    assert mark == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_autodiscover_imports_every_jobs_module(tmp_path, monkeypatch):
    pkg = tmp_path / "myproj"
    (pkg / "jobs" / "user_sync").mkdir(parents=True)
    (pkg / "report").mkdir()
    for d in (pkg, pkg / "jobs", pkg / "jobs" / "user_sync", pkg / "report"):
        (d / "__init__.py").write_text("")
    (pkg / "jobs" / "user_sync" / "jobs.py").write_text("LOADED = True\n")
    (pkg / "report" / "jobs.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from piko import autodiscover

    found = autodiscover("myproj", module_name="jobs")
    assert set(found) == {"myproj.jobs", "myproj.jobs.user_sync.jobs", "myproj.report.jobs"}


def test_config_cli_and_schedule_cli_write_rows(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}

    def piko(*args):
        return subprocess.run([sys.executable, "-m", "piko", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=30)

    assert piko("db", "init").returncode == 0
    r = piko("schedule", "daily_job", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin", "--create")
    assert r.returncode == 0, r.stderr
    r = piko("config", "daily_job", '{"concurrency": 3}', "--effective-from", "2030-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    r = piko("schedule", "daily_job", "--disable")
    assert r.returncode == 0, r.stderr
    bad = piko("schedule", "daily_job", "--cron", "99 * * * *")
    assert bad.returncode == 2 and "99" in bad.stderr
    db = str(tmp_path / "piko.db")
    assert fetch(db, "SELECT schedule_type, schedule_expr, timezone, enabled FROM scheduled_job") == [
        ("cron", "30 2 * * *", "Europe/Berlin", 0)]
    (cfg, eff), = fetch(db, "SELECT config_json, effective_from FROM job_config")
    assert json.loads(cfg) == {"concurrency": 3} and eff.startswith("2030-01-01 00:00:00")


@pytest.mark.parametrize("bad", ['{"seconds": 0}', '{"seconds": -5}', "not json"])
def test_invalid_interval_rows_are_reported_not_fatal(db_path, bad):
    async def scenario():
        clock = FakeClock(T0)
        app = make_app(db_path, clock)
        app.job("iv", interval={"seconds": 10})(_noop)
        async with app:
            sql(db_path, "UPDATE scheduled_job SET schedule_expr = ? WHERE job_id = 'iv'", bad)
            await app.live.reconcile_once()
            return app.live.book.problems.get("iv")

    assert asyncio.run(scenario())


@dataclasses.dataclass
class Typed:
    batch: int = 10
    ratio: float = 0.5
    label: str | None = None


@pytest.mark.parametrize(("config", "fragment"), [
    ({"batch": "ten"}, "'batch' must be int, got str"), ({"batch": True}, "'batch' must be int, got bool"),
    ({"label": 3}, "'label' must be str or null, got int"),
])
def test_a_dataclass_schema_checks_plainly_typed_fields(config, fragment):
    from piko.core.configs import validate_config
    from piko.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        validate_config(Typed, config, job_id="j")
    assert validate_config(Typed, {"batch": 3, "ratio": 1, "label": None}, job_id="j") == Typed(3, 1, None)
