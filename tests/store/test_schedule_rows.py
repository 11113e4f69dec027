"""Schedule rows typed by hand with values their columns should never hold (enabled 2, -1 or
'yes', a timezone '') are read back as stored, and reconcile refuses them: reported once,
never fired, the other jobs untouched. Run on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import pytest

from piko import PikoApp
from piko.clock import FakeClock
from piko.protocols import Store
from piko.settings import Settings
from tests.conftest import wait_until
from tests.store.raw_sql import raw_execute

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
BAD = {"enabled_2": ("NULL", "2"), "enabled_minus_1": ("NULL", "-1"), "empty_timezone": ("''", "1")}


async def seed(store: Store, rows: dict[str, tuple[str, str]]) -> None:
    for job_id, (tz, enabled) in {**rows, "good": ("NULL", "1")}.items():
        await raw_execute(store, "INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr, timezone, enabled) "
                                 f"VALUES ('{job_id}', 'cron', '* * * * *', {tz}, {enabled})")


async def test_odd_enabled_and_empty_timezone_values_read_back_as_stored(store: Store) -> None:
    bad = dict(BAD, **({"enabled_yes": ("NULL", "'yes'")} if store.dialect == "sqlite" else {}))  # MySQL refuses it
    await seed(store, bad)
    rows = {r.job_id: r for r in await store.load_schedules()}
    assert (rows["enabled_2"].enabled, rows["enabled_minus_1"].enabled) == (2, -1)
    assert (rows["empty_timezone"].timezone, rows["empty_timezone"].enabled) == ("", True)
    assert (rows["good"].timezone, rows["good"].enabled) == (None, True)
    if store.dialect == "sqlite":
        assert rows["enabled_yes"].enabled == "yes"


async def test_rows_with_odd_enabled_or_empty_timezone_are_reported_once_and_never_fire(
        store: Store, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = dict(BAD, **({"enabled_yes": ("NULL", "'yes'")} if store.dialect == "sqlite" else {}))
    await seed(store, bad)
    clock = FakeClock(T0)
    app = PikoApp("t", settings=Settings(dsn=store_url, http_enabled=False, leader_enabled=False,
                                         poll_interval_s=1), clock=clock)
    fired: list[str] = []
    for job_id in [*bad, "good"]:
        async def handler(ctx: dict, scheduled_time: datetime, job_id: str = job_id) -> None:
            fired.append(job_id)
        app.job(job_id, cron="* * * * *")(handler)

    with caplog.at_level(logging.ERROR, logger="piko.reconcile"):
        async with app:
            for _ in range(3):  # touched again and again: still one report per row
                await raw_execute(store, "UPDATE scheduled_job SET jitter_s = NULL")
                await app.live.reconcile_once()
            for minute in range(1, 4):  # every job's cron is due each minute
                await asyncio.sleep(0.01)
                clock.advance(60)
                await wait_until(lambda minute=minute: fired.count("good") >= minute, timeout=15)
                await wait_until(app.runner.is_idle, timeout=15)  # recorded: the next minute is not SKIPPED
            problems = dict(app.live.book.problems)
            next_fires = {job_id: app.kernel.next_fire_at(job_id) for job_id in bad}
    assert set(fired) == {"good"}
    assert next_fires == dict.fromkeys(bad)
    assert problems == {job_id: problems[job_id] for job_id in bad}
    assert problems["enabled_2"].startswith("invalid enabled: 2 is not allowed; use 1 (on) or 0 (off)")
    assert problems["empty_timezone"].startswith("invalid timezone: '' is not allowed; use an IANA name")
    for job_id in bad:
        reports = [r for r in caplog.records if f"row {job_id!r}" in r.getMessage() and "invalid" in r.getMessage()]
        assert len(reports) == 1, job_id
