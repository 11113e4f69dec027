"""Migrations: a database made by an older piko opens under this one, keeping its rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from piko.core.types import RunStatus
from piko.store import make_store, schema
from piko.store.mysql import schema as mysql_schema
from piko.store.schema import latest_version, migrations
from piko.store.sqlite import store as sqlite
from tests.store.raw_sql import raw_execute, raw_fetchall

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def test_migrations_are_numbered_one_up_with_no_gaps() -> None:
    for dialect in ("sqlite", "mysql"):
        assert [m.version for m in migrations(dialect)] == list(range(1, latest_version(dialect) + 1))


async def test_a_version_3_database_migrates_to_the_newest_and_its_runs_read_back(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if store_url.startswith("memory"):
        pytest.skip("migrations: for the SQL stores only")
    up_to_3 = lambda dialect: schema.migrations(dialect)[:3]  # noqa: E731  (piko 0.2's schema)
    with monkeypatch.context() as old_piko:
        old_piko.setattr(sqlite, "migrations", up_to_3)
        old_piko.setattr(mysql_schema, "migrations", up_to_3)
        old = make_store(store_url)
        await old.open()
        try:
            assert await old.schema_version() == 3
            await raw_execute(old, "INSERT INTO job_run (job_id, scheduled_time, status, attempt, kind, instance_id, "
                                   "started_at) VALUES ('j', '2026-03-01 12:00:00', 'RUNNING', 1, 'schedule', "
                                   "'inst', '2026-03-01 12:00:00')")
        finally:
            await old.close()
    new = make_store(store_url)
    await new.open()
    try:
        assert await new.schema_version() == latest_version()
        (run,) = await new.recent_runs()
        assert (run.status, run.scheduled_at, run.error_traceback) == (RunStatus.RUNNING, T0, None)
        assert (run.queue, run.claim_token, run.enqueued_at, run.cancel_requested) == ("default", None, None, False)
        await new.finish_run(run.run_id, RunStatus.FAILED, T0, "E", "m", error_traceback="Traceback ...\nE: m\n")
        assert (await new.recent_runs())[0].error_traceback == "Traceback ...\nE: m\n"
        versions = [int(r[0]) for r in await raw_fetchall(new, "SELECT version FROM piko_schema ORDER BY version")]
        assert versions == list(range(1, latest_version() + 1))
    finally:
        await new.close()
