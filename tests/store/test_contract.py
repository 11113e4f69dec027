"""The Store contract: every implementation (SQLite, MySQL) must pass every test here."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from piko.core.types import ConfigRow, Fence, InstanceInfo, RunClaim, RunStatus, ScheduleRow
from piko.errors import LeaseLost, StoreError
from piko.protocols import Store
from piko.store import make_store
from piko.store.schema import latest_version
from tests.store.raw_sql import raw_execute, raw_fetchall

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def claim(job_id: str = "job", at: datetime = T0, **kw: Any) -> RunClaim:
    return RunClaim(job_id=job_id, scheduled_at=at, status=kw.pop("status", RunStatus.RUNNING),
                    started_at=kw.pop("started_at", at), instance_id=kw.pop("instance_id", "inst-1"), **kw)


# -- schema ---------------------------------------------------------------------------------
async def test_open_migrates_to_the_latest_schema_and_reopening_is_harmless(store: Store, store_url: str) -> None:
    assert await store.schema_version() == latest_version(store.dialect)
    again = make_store(store_url)
    await again.open()
    try:
        assert await again.schema_version() == latest_version(store.dialect)
        await again.ping()
    finally:
        await again.close()


# -- schedules --------------------------------------------------------------------------------
async def test_insert_schedule_if_absent_inserts_once_and_keeps_the_first_row(store: Store) -> None:
    assert await store.insert_schedule_if_absent(ScheduleRow("a", "cron", "* * * * *"))
    assert not await store.insert_schedule_if_absent(ScheduleRow("a", "interval", "60"))
    (row,) = await store.load_schedules()
    assert (row.schedule_type, row.schedule_expr, row.version) == ("cron", "* * * * *", 1)


async def test_bulk_insert_schedules_if_absent_counts_new_rows_and_keeps_existing_ones(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("kept", "cron", "0 * * * *"))
    rows = [ScheduleRow(f"job{i}", "interval", "60") for i in range(2500)] + [ScheduleRow("kept", "interval", "5")]
    assert await store.insert_schedules_if_absent(rows) == 2500
    assert await store.insert_schedules_if_absent(rows) == 0
    assert await store.insert_schedules_if_absent([]) == 0
    stored = {r.job_id: r for r in await store.load_schedules()}
    assert len(stored) == 2501
    assert (stored["kept"].schedule_type, stored["kept"].schedule_expr) == ("cron", "0 * * * *")


async def test_schedule_round_trips_every_field_with_an_aware_utc_created_at(store: Store) -> None:
    written = ScheduleRow("b", "interval", "90", timezone="Europe/Paris", enabled=False, misfire_grace_s=2.5,
                          coalesce=True, max_instances=3, jitter_s=0.5)
    await store.upsert_schedule(written)
    (row,) = await store.load_schedules()
    assert row.created_at is not None and row.created_at.tzinfo is not None
    assert row.created_at.utcoffset() == timedelta(0)
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert row == ScheduleRow("b", "interval", "90", "Europe/Paris", False, 2.5, True, 3, 0.5, 1, row.created_at)


async def test_upsert_schedule_inserts_then_replaces_fields_and_bumps_version(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("a", "cron", "0 * * * *"))
    await store.upsert_schedule(ScheduleRow("a", "cron", "5 * * * *", coalesce=False))
    await store.upsert_schedule(ScheduleRow("a", "cron", "10 * * * *"))
    (row,) = await store.load_schedules()
    assert (row.schedule_expr, row.version, row.coalesce) == ("10 * * * *", 3, None)


async def test_set_schedule_enabled_toggles_bumps_version_and_reports_unknown_jobs(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("a", "cron", "* * * * *"))
    assert await store.set_schedule_enabled("a", False)
    (row,) = await store.load_schedules()
    assert (row.enabled, row.version) == (False, 2)
    assert await store.set_schedule_enabled("a", True)
    assert (await store.load_schedules())[0].enabled is True
    assert not await store.set_schedule_enabled("nope", True)


async def test_schedule_seeded_by_plain_sql_insert_reads_back_with_defaults(store: Store) -> None:
    await raw_execute(store, "INSERT INTO scheduled_job (job_id, schedule_expr) VALUES ('seeded', '*/5 * * * *')")
    (row,) = await store.load_schedules()
    assert (row.job_id, row.schedule_type, row.enabled, row.version) == ("seeded", "cron", True, 1)
    assert row.coalesce is None and row.timezone is None and row.created_at is not None


# -- configs -----------------------------------------------------------------------------------
async def test_upsert_config_inserts_then_replaces_json_and_bumps_version(store: Store) -> None:
    await store.upsert_config(ConfigRow("a", '{"x": 1}', effective_from=T0))
    await store.upsert_config(ConfigRow("a", '{"x": 2}', schema_version=2))
    (row,) = await store.load_configs()
    assert (row.config_json, row.version, row.schema_version, row.effective_from) == ('{"x": 2}', 2, 2, None)
    await store.upsert_config(ConfigRow("b", "{}", effective_from=T0))
    assert {c.job_id: c.effective_from for c in await store.load_configs()}["b"] == T0


async def test_schedules_and_configs_can_be_loaded_for_some_jobs_only(store: Store) -> None:
    for job in ("a", "b", "c"):
        await store.upsert_schedule(ScheduleRow(job, "cron", "* * * * *"))
        await store.upsert_config(ConfigRow(job, "{}"))
    assert sorted(r.job_id for r in await store.load_schedules(["a", "c", "zz"])) == ["a", "c"]
    assert [r.job_id for r in await store.load_configs({"b"})] == ["b"]
    assert await store.load_schedules([]) == [] and await store.load_configs([]) == []
    many = [f"j{n}" for n in range(1200)] + ["b"]  # more ids than one IN list carries
    assert [r.job_id for r in await store.load_schedules(many)] == ["b"]


async def test_config_history_keeps_the_newest_versions_per_job_in_stored_order(store: Store) -> None:
    for n in range(1, 4):
        await store.upsert_config(ConfigRow("a", f'{{"n": {n}}}', effective_from=T0 + timedelta(hours=n)))
    await store.upsert_config(ConfigRow("b", "{}"))
    history = await store.load_config_history(["a"], per_job=2)
    assert [(c.config_json, c.version) for c in history] == [('{"n": 2}', 2), ('{"n": 3}', 3)]
    assert history[0].seq < history[1].seq and history[1].effective_from == T0 + timedelta(hours=3)
    assert sorted(c.job_id for c in await store.load_config_history()) == ["a", "a", "a", "b"]


async def test_change_log_names_jobs_edited_through_the_store_and_by_plain_sql(store: Store) -> None:
    start = await store.change_cursor()
    assert start is not None
    await store.upsert_schedule(ScheduleRow("a", "cron", "* * * * *"))
    await store.upsert_config(ConfigRow("c", "{}"))
    await raw_execute(store, "INSERT INTO scheduled_job (job_id, schedule_expr) VALUES ('b', '0 * * * *')")
    await raw_execute(store, "UPDATE scheduled_job SET schedule_expr = '5 * * * *' WHERE job_id = 'b'")
    changes = await store.changes_since(start)
    assert changes is not None
    cursor, schedules, configs = changes
    assert cursor > start and schedules == {"a", "b"} and configs == {"c"}
    assert await store.changes_since(cursor) == (cursor, set(), set())
    assert await store.change_cursor() == cursor
    assert await store.changes_since(start, limit=2) is None  # too many: the caller reloads everything


async def test_a_rename_by_plain_sql_names_the_old_and_the_new_job_id(store: Store) -> None:
    await raw_execute(store, "INSERT INTO scheduled_job (job_id, schedule_expr) VALUES ('old', '0 * * * *')")
    await raw_execute(store, "INSERT INTO job_config (job_id, config_json) VALUES ('cold', '{}')")
    start = await store.change_cursor()
    assert start is not None
    await raw_execute(store, "UPDATE scheduled_job SET job_id = 'new' WHERE job_id = 'old'")
    await raw_execute(store, "UPDATE job_config SET job_id = 'cnew' WHERE job_id = 'cold'")
    changes = await store.changes_since(start)
    assert changes is not None and changes[1] == {"old", "new"} and changes[2] == {"cold", "cnew"}


async def test_prune_changes_drops_only_entries_older_than_the_cutoff(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("a", "cron", "* * * * *"))
    assert await store.prune_changes(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await store.prune_changes(datetime.now(UTC) + timedelta(hours=1)) >= 1
    assert await store.changes_since(0) == (0, set(), set())


# -- run records ------------------------------------------------------------------------------
async def test_claim_run_returns_a_run_id_and_a_second_claim_of_the_slot_returns_none(store: Store) -> None:
    run_id = await store.claim_run(claim())
    assert isinstance(run_id, int)
    assert await store.claim_run(claim(instance_id="inst-2")) is None
    assert await store.claim_run(claim(at=T0 + timedelta(minutes=1))) not in (None, run_id)
    oldest = (await store.recent_runs("job"))[-1]
    assert (oldest.run_id, oldest.status, oldest.scheduled_at) == (run_id, RunStatus.RUNNING, T0)


async def test_claim_without_lock_records_a_run_every_time(store: Store) -> None:
    ids = [await store.claim_run(claim(take_lock=False, kind="manual")) for _ in range(3)]
    assert None not in ids and len(set(ids)) == 3


async def test_concurrent_claims_of_one_slot_yield_exactly_one_run(store: Store) -> None:
    results = await asyncio.gather(*(store.claim_run(claim(instance_id=f"i{n}")) for n in range(20)))
    assert len([r for r in results if r is not None]) == 1
    assert len(await store.recent_runs("job")) == 1


async def test_finish_run_records_status_error_and_duration_once(store: Store) -> None:
    run_id = await store.claim_run(claim())
    assert run_id is not None
    await store.finish_run(run_id, RunStatus.FAILED, T0 + timedelta(seconds=2.5), "ValueError", "bad input")
    await store.finish_run(run_id, RunStatus.SUCCESS, T0 + timedelta(seconds=9))  # already final: ignored
    (run,) = await store.recent_runs()
    assert (run.status, run.error_type, run.error_message) == (RunStatus.FAILED, "ValueError", "bad input")
    assert run.finished_at == T0 + timedelta(seconds=2.5)
    assert run.duration_s == pytest.approx(2.5, abs=1e-3)


async def test_claim_runs_answers_each_claim_in_order_in_one_call(store: Store) -> None:
    taken = await store.claim_run(claim("busy"))
    assert taken is not None
    batch = [claim("a"), claim("busy"), claim("b", take_lock=False, kind="manual"), claim("a"),
             claim("c", status=RunStatus.SKIPPED, error_type="MaxInstances", error_message="busy"),
             *(claim(f"many{i}") for i in range(1200))]  # more than one statement's parameter budget
    ids = await store.claim_runs(batch)
    assert len(ids) == len(batch)
    assert ids[1] is None and ids[3] is None  # slot taken before, and a key twice in one batch
    fresh = [i for i in ids if i is not None]
    assert len(set(fresh)) == len(fresh) == len(batch) - 2
    by_id = {r.run_id: r for r in await store.recent_runs(limit=5000)}
    for c, run_id in zip(batch, ids, strict=True):
        if run_id is not None:
            assert (by_id[run_id].job_id, by_id[run_id].status) == (c.job_id, c.status)
    assert await store.claim_runs([]) == []


async def test_claim_runs_refuses_mixed_fences_and_a_stale_fence(store: Store) -> None:
    grant = await store.lease_acquire("main", "a", LEASE)
    assert grant is not None
    fence = Fence("main", "a", grant.token)
    with pytest.raises(StoreError, match="same fence"):
        await store.claim_runs([claim("x", fence=fence), claim("y")])
    assert await store.claim_runs([claim("x", fence=fence)]) != [None]
    await store.lease_release("main", "a", grant.token)
    with pytest.raises(LeaseLost):
        await store.claim_runs([claim("z", fence=fence)])
    assert [r.job_id for r in await store.recent_runs()] == ["x"]


async def test_finish_runs_records_every_end_once_with_the_measured_duration(store: Store) -> None:
    from piko.core.types import RunFinish

    ids = await store.claim_runs([claim(f"f{i}") for i in range(3)])
    assert None not in ids
    await store.finish_runs([RunFinish(ids[0], RunStatus.SUCCESS, T0 + timedelta(seconds=1), duration_s=0.25),
                             RunFinish(ids[1], RunStatus.FAILED, T0 + timedelta(seconds=2), "KeyError", "'k'"),
                             RunFinish(ids[2], RunStatus.TIMEOUT, T0 + timedelta(seconds=3))])
    await store.finish_runs([RunFinish(ids[0], RunStatus.FAILED, T0 + timedelta(seconds=9))])  # final: ignored
    runs = {r.run_id: r for r in await store.recent_runs()}
    assert (runs[ids[0]].status, runs[ids[0]].duration_s) == (RunStatus.SUCCESS, 0.25)
    assert (runs[ids[1]].status, runs[ids[1]].error_type, runs[ids[1]].error_message) == \
        (RunStatus.FAILED, "KeyError", "'k'")
    assert runs[ids[1]].duration_s == pytest.approx(2.0, abs=1e-3)  # from the stored times
    assert runs[ids[2]].status is RunStatus.TIMEOUT and runs[ids[2]].finished_at == T0 + timedelta(seconds=3)


async def test_the_traceback_of_a_failed_run_is_stored_and_read_back_whole(store: Store) -> None:
    from piko.core.invoke import TRACEBACK_MAX_CHARS
    from piko.core.types import RunFinish

    frames, last = "  File \"jobs.py\", line 7, in load — ünïcode 🚀\n" * 200, "KeyError: 'k'\n"
    trace = frames[-(TRACEBACK_MAX_CHARS - len(last)):] + last  # as long as a stored one gets, 4-byte chars too
    ids = await store.claim_runs([claim(f"t{i}") for i in range(3)])
    one = await store.claim_run(claim("single"))
    assert None not in ids and one is not None
    await store.finish_runs([RunFinish(ids[0], RunStatus.FAILED, T0, "KeyError", "'k'", error_traceback=trace),
                             RunFinish(ids[1], RunStatus.TIMEOUT, T0, "JobTimeout", "late", 1.0, "JobTimeout\n"),
                             RunFinish(ids[2], RunStatus.SUCCESS, T0)])
    await store.finish_run(one, RunStatus.FAILED, T0, "ValueError", "bad", error_traceback="ValueError: bad\n")
    runs = {r.run_id: r for r in await store.recent_runs()}
    assert runs[ids[0]].error_traceback == trace and len(trace) == TRACEBACK_MAX_CHARS
    assert runs[ids[1]].error_traceback == "JobTimeout\n" and runs[ids[2]].error_traceback is None
    assert runs[one].error_traceback == "ValueError: bad\n"


async def test_claim_with_final_status_is_born_finished(store: Store) -> None:
    run_id = await store.claim_run(claim(status=RunStatus.MISSED, error_type="Missed", error_message="late"))
    (run,) = await store.recent_runs()
    assert (run.run_id, run.status, run.duration_s, run.error_type) == (run_id, RunStatus.MISSED, 0.0, "Missed")
    assert run.finished_at == T0


async def test_recent_runs_are_newest_first_filtered_by_job_and_limited(store: Store) -> None:
    for n in range(5):
        await store.claim_run(claim("a", T0 + timedelta(minutes=n), attempt=n + 1,
                                    data_start=T0, data_end=T0 + timedelta(hours=1)))
    await store.claim_run(claim("b"))
    runs = await store.recent_runs("a", limit=3)
    assert [r.attempt for r in runs] == [5, 4, 3]
    assert (runs[0].data_start, runs[0].data_end) == (T0, T0 + timedelta(hours=1))
    assert [r.job_id for r in await store.recent_runs(limit=2)] == ["b", "a"]


async def test_recent_runs_filter_by_status_and_kind_before_the_limit_counts(store: Store) -> None:
    from piko.core.types import RUN_KINDS, RunFinish

    made = [("ab"[n % 2], RUN_KINDS[n // 2 % 4], RunStatus.FAILED if n % 3 == 0 else RunStatus.SUCCESS)
            for n in range(48)]  # every job, kind and status together
    ids = await store.claim_runs([claim(job, T0 + timedelta(minutes=n), kind=kind, take_lock=False)
                                  for n, (job, kind, _) in enumerate(made)])
    await store.finish_runs([RunFinish(i, status, T0) for i, (_, _, status) in zip(ids, made, strict=True)
                             if i is not None])
    runs = list(zip(ids, made, strict=True))

    def expected(job: str | None, status: RunStatus | None, kind: str | None, limit: int) -> list[int | None]:
        newest = [i for i, (j, k, s) in reversed(runs)
                  if job in (None, j) and status in (None, s) and kind in (None, k)]
        return newest[:limit]

    for job, status, kind, limit in [(None, RunStatus.FAILED, None, 4), ("a", None, "manual", 100),
                                     ("a", RunStatus.FAILED, "retry", 100), ("b", RunStatus.SUCCESS, "backfill", 2),
                                     (None, None, "schedule", 5), (None, RunStatus.RUNNING, None, 10)]:
        found = await store.recent_runs(job, limit, status=status, kind=kind)
        assert [r.run_id for r in found] == expected(job, status, kind, limit), (job, status, kind)
    assert len(await store.recent_runs("a", 100, status=RunStatus.FAILED, kind="retry")) == 2


async def test_recent_runs_refuses_an_unknown_status_or_kind_naming_the_allowed_ones(store: Store) -> None:
    from piko.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown run kind 'manaul' \(use one of schedule, manual, backfill"):
        await store.recent_runs(kind="manaul")
    with pytest.raises(ConfigError, match=r"unknown run status 'failed' \(use one of PENDING, RUNNING, SUCCESS, FAILED"):
        await store.recent_runs(status="failed")  # type: ignore[arg-type]


async def test_get_run_reads_one_run_with_every_field_and_none_for_an_unknown_id(store: Store) -> None:
    from piko.core.types import RunFinish

    run_id = await store.claim_run(claim("g", kind="backfill", attempt=2, data_start=T0,
                                         data_end=T0 + timedelta(hours=1)))
    other = await store.claim_run(claim("h"))
    assert run_id is not None and other is not None
    await store.finish_runs([RunFinish(run_id, RunStatus.FAILED, T0 + timedelta(seconds=2), "KeyError", "'k'",
                                       error_traceback="Traceback ...\nKeyError: 'k'\n")])
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.run_id, run.job_id, run.kind, run.attempt, run.status) == (run_id, "g", "backfill", 2, RunStatus.FAILED)
    assert (run.scheduled_at, run.started_at, run.finished_at) == (T0, T0, T0 + timedelta(seconds=2))
    assert (run.data_start, run.data_end) == (T0, T0 + timedelta(hours=1))
    assert (run.error_type, run.error_message) == ("KeyError", "'k'")
    assert run.error_traceback == "Traceback ...\nKeyError: 'k'\n"
    assert run == next(r for r in await store.recent_runs() if r.run_id == run_id)
    assert await store.get_run(other + 1000) is None


async def test_latest_status_is_that_of_the_newest_run_of_the_slot(store: Store) -> None:
    assert await store.latest_status("job", T0) is None
    first = await store.claim_run(claim(take_lock=False))
    assert first is not None
    await store.finish_run(first, RunStatus.FAILED, T0)
    assert await store.latest_status("job", T0) is RunStatus.FAILED
    await store.claim_run(claim(take_lock=False, attempt=2))
    assert await store.latest_status("job", T0) is RunStatus.RUNNING
    assert await store.latest_status("job", T0 + timedelta(minutes=1)) is None


async def test_latest_run_is_the_newest_run_of_the_slot_with_every_field(store: Store) -> None:
    assert await store.latest_run("job", T0) is None
    first = await store.claim_run(claim(kind="backfill", data_start=T0 - timedelta(hours=1), data_end=T0))
    assert first is not None
    await store.finish_run(first, RunStatus.FAILED, T0 + timedelta(seconds=1), "ValueError", "boom")
    run = await store.latest_run("job", T0)
    assert run is not None and (run.run_id, run.status, run.attempt, run.kind, run.error_type) == \
        (first, RunStatus.FAILED, 1, "backfill", "ValueError")
    assert (run.data_start, run.data_end) == (T0 - timedelta(hours=1), T0)
    second = await store.claim_run(claim(take_lock=False, attempt=2))
    assert (await store.latest_run("job", T0)).run_id == second  # type: ignore[union-attr]


RERUN = frozenset({RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.MISSED})


def rerun(attempt: int = 2, **kw: Any) -> RunClaim:
    return claim(take_lock=False, kind="backfill", attempt=attempt, rerun_if=RERUN, **kw)


async def test_a_rerun_claim_is_inserted_only_while_the_newest_run_of_its_time_allows_it(store: Store) -> None:
    assert await store.claim_run(rerun()) is None  # nothing ran at that time: nothing to re-run
    first = await store.claim_run(claim())
    assert first is not None
    assert await store.claim_run(rerun()) is None  # still RUNNING
    await store.finish_run(first, RunStatus.SUCCESS, T0)
    assert await store.claim_run(rerun()) is None  # done
    other = await store.claim_run(claim(at=T0 + timedelta(minutes=1), status=RunStatus.MISSED))
    assert other is not None
    assert await store.claim_run(rerun(attempt=3, at=T0 + timedelta(minutes=1))) is None  # not the next attempt
    again = await store.claim_run(rerun(at=T0 + timedelta(minutes=1)))
    assert again is not None and again != other
    newest = await store.latest_run("job", T0 + timedelta(minutes=1))
    assert newest is not None and (newest.run_id, newest.attempt, newest.status) == (again, 2, RunStatus.RUNNING)
    await store.finish_run(again, RunStatus.FAILED, T0)
    assert await store.claim_run(rerun(at=T0 + timedelta(minutes=1))) is None  # attempt 2 is taken
    assert await store.claim_run(rerun(attempt=3, at=T0 + timedelta(minutes=1))) is not None


async def test_a_rerun_needs_the_times_lock_row(store: Store) -> None:
    unlocked = await store.claim_run(claim(take_lock=False, kind="manual"))
    assert unlocked is not None
    await store.finish_run(unlocked, RunStatus.FAILED, T0)
    assert await store.claim_run(rerun()) is None


async def test_concurrent_rerun_claims_of_one_failed_time_yield_exactly_one_run(store: Store, store_url: str) -> None:
    """Two processes re-running one failed window: the check and the insert are one write
    transaction (SQLite: BEGIN IMMEDIATE; MySQL: the lock row SELECTed FOR UPDATE first)."""
    failed = await store.claim_run(claim())
    assert failed is not None
    await store.finish_run(failed, RunStatus.FAILED, T0, "ValueError", "boom")
    other = make_store(store_url)
    await other.open()
    try:
        results = await asyncio.gather(*(s.claim_run(rerun(instance_id=f"i{n}"))
                                         for n in range(10) for s in (store, other)))
    finally:
        await other.close()
    assert len([r for r in results if r is not None]) == 1
    assert [r.attempt for r in await store.recent_runs("job")] == [2, 1]


async def test_rerun_claims_of_one_time_in_one_batch_yield_one_run(store: Store) -> None:
    failed = await store.claim_run(claim())
    assert failed is not None
    await store.finish_run(failed, RunStatus.TIMEOUT, T0)
    ids = await store.claim_runs([rerun(), claim("x"), rerun(), rerun(attempt=3)])
    assert ids[0] is not None and ids[1] is not None and ids[2:] == [None, None]
    assert [r.attempt for r in await store.recent_runs("job")] == [2, 1]


async def test_last_fire_times_are_the_newest_locked_fire_of_each_job(store: Store) -> None:
    assert await store.last_fire_times(["a", "b"]) == {}
    for at in (T0, T0 + timedelta(minutes=2), T0 + timedelta(minutes=1)):
        await store.claim_run(claim("a", at))
    await store.claim_run(claim("a", T0 + timedelta(hours=5), take_lock=False))  # a manual run "now": no fire
    await store.claim_run(claim("b", T0, status=RunStatus.MISSED))  # a recorded miss counts as handled
    await store.claim_run(claim("c", T0))
    found = await store.last_fire_times(["a", "b", "nope"])
    assert found == {"a": T0 + timedelta(minutes=2), "b": T0}
    assert all(t.tzinfo is not None for t in found.values())
    many = [f"j{i}" for i in range(1200)]  # more ids than one IN list holds
    assert await store.last_fire_times([*many, "c"]) == {"c": T0}


async def test_last_runs_are_each_jobs_newest_attempt_of_its_newest_scheduled_time(store: Store) -> None:
    assert await store.last_runs(["a"]) == {}
    await store.claim_run(claim("a", T0 + timedelta(minutes=2)))
    first = await store.claim_run(claim("a", T0 + timedelta(minutes=5), status=RunStatus.FAILED))
    await store.claim_run(claim("a", T0))  # written later, but an older time: not the last run
    retry = await store.claim_run(claim("a", T0 + timedelta(minutes=5), attempt=2, take_lock=False))
    await store.claim_run(claim("b", T0, status=RunStatus.MISSED))
    found = await store.last_runs(["a", "b", "nope"])
    assert sorted(found) == ["a", "b"] and first is not None
    assert (found["a"].run_id, found["a"].attempt) == (retry, 2)
    assert found["b"].status is RunStatus.MISSED and found["b"].scheduled_at == T0
    many = [f"j{i}" for i in range(1200)]  # more ids than one IN list holds
    assert list(await store.last_runs([*many, "b"])) == ["b"]


async def test_heartbeat_upserts_the_instance_row(store: Store) -> None:
    me = InstanceInfo("inst-1", "host-a", 42, T0)
    now = datetime.now(UTC)
    await store.heartbeat(me, now - timedelta(seconds=5))
    await store.heartbeat(me, now)
    (row,) = await store.list_instances()
    assert (row.instance_id, row.host, row.pid, row.started_at) == ("inst-1", "host-a", 42, T0)
    assert row.heartbeat_at is not None and abs(row.heartbeat_at - now) < timedelta(seconds=5)


async def test_abandon_orphans_marks_running_runs_of_stale_and_dead_instances(store: Store) -> None:
    now = datetime.now(UTC)
    for name in ("live", "stale", "dead"):
        await store.heartbeat(InstanceInfo(name, "h", 1, T0), now)
        await store.claim_run(claim(name, instance_id=name))
    await raw_execute(store, "UPDATE piko_instance SET heartbeat_at = '2000-01-01 00:00:00' WHERE instance_id = 'stale'")
    finished = await store.claim_run(claim("done", instance_id="stale"))
    assert finished is not None
    await store.finish_run(finished, RunStatus.SUCCESS, T0)
    count = await store.abandon_orphans(now - timedelta(seconds=60), now, dead_instances=["dead"])
    assert count == 2
    status = {r.job_id: r.status for r in await store.recent_runs()}
    assert status == {"live": RunStatus.RUNNING, "stale": RunStatus.ABANDONED,
                      "dead": RunStatus.ABANDONED, "done": RunStatus.SUCCESS}
    assert [i.instance_id for i in await store.list_instances()] == ["live"]


async def test_a_run_marked_abandoned_that_finishes_after_all_records_its_real_end(store: Store) -> None:
    run_id = await store.claim_run(claim("slow", instance_id="paused"))
    assert run_id is not None
    await store.abandon_orphans(datetime.now(UTC), datetime.now(UTC), dead_instances=["paused"])
    assert (await store.recent_runs("slow"))[0].status is RunStatus.ABANDONED
    await store.finish_run(run_id, RunStatus.SUCCESS, T0 + timedelta(seconds=3))
    assert (await store.recent_runs("slow"))[0].status is RunStatus.SUCCESS


# -- watermarks --------------------------------------------------------------------------------
async def test_cas_watermark_moves_only_from_the_expected_value(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("w", "interval", "60"))
    assert await store.get_watermark("w") is None
    assert await store.cas_watermark("w", None, T0)
    assert not await store.cas_watermark("w", None, T0 + timedelta(hours=1))
    assert not await store.cas_watermark("w", T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert await store.cas_watermark("w", T0, T0 + timedelta(hours=1))
    assert await store.cas_watermark("w", T0 + timedelta(hours=1), T0 + timedelta(hours=1))  # same value: a hit
    assert await store.get_watermark("w") == T0 + timedelta(hours=1)


async def test_a_watermark_typed_by_hand_without_fraction_still_moves(store: Store) -> None:
    await raw_execute(store, "INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr, enabled, version, "
                             "last_data_time) VALUES ('hand', 'cron', '{\"minute\": 0}', 1, 1, '2026-12-01 15:00:00')")
    typed = datetime(2026, 12, 1, 15, tzinfo=UTC)
    assert await store.get_watermark("hand") == typed
    assert await store.cas_watermark("hand", typed, typed + timedelta(hours=1))
    assert await store.get_watermark("hand") == typed + timedelta(hours=1)


async def test_watermark_of_an_unknown_job_is_none_and_cannot_be_set(store: Store) -> None:
    assert await store.get_watermark("ghost") is None
    assert not await store.cas_watermark("ghost", None, T0)


# -- leases --------------------------------------------------------------------------------------
async def test_lease_holder_names_the_valid_term_only(store: Store) -> None:
    assert await store.lease_holder("main") is None
    grant = await store.lease_acquire("main", "a", LEASE)
    assert grant is not None
    assert await store.lease_holder("main") == ("a", grant.token)
    await store.lease_release("main", "a", grant.token)
    assert await store.lease_holder("main") is None
    short = await store.lease_acquire("main", "b", timedelta(milliseconds=50))
    assert short is not None and await store.lease_holder("main") == ("b", short.token)
    await asyncio.sleep(0.1)
    assert await store.lease_holder("main") is None  # expired: nobody holds it


async def test_first_acquire_grants_a_new_term_and_renewal_keeps_the_token(store: Store) -> None:
    first = await store.lease_acquire("main", "a", LEASE)
    assert first is not None and first.is_new_term and first.token >= 1
    assert first.expires_at is not None and first.expires_at > datetime.now(UTC) + timedelta(seconds=20)
    again = await store.lease_acquire("main", "a", LEASE)
    assert again is not None and again.token == first.token and not again.is_new_term


async def test_another_holder_is_refused_while_the_lease_is_valid(store: Store) -> None:
    assert await store.lease_acquire("main", "a", LEASE) is not None
    assert await store.lease_acquire("main", "b", LEASE) is None
    assert await store.lease_acquire("other", "b", LEASE) is not None  # leases are independent


async def test_expired_lease_is_taken_over_with_the_next_token(store: Store) -> None:
    first = await store.lease_acquire("main", "a", timedelta(milliseconds=50))
    await asyncio.sleep(0.12)
    taken = await store.lease_acquire("main", "b", LEASE)
    assert first is not None and taken is not None
    assert taken.is_new_term and taken.token == first.token + 1
    back = await store.lease_acquire("main", "a", LEASE)
    assert back is None


async def test_released_lease_is_taken_over_at_once_and_stale_release_changes_nothing(store: Store) -> None:
    first = await store.lease_acquire("main", "a", LEASE)
    assert first is not None
    await store.lease_release("main", "a", first.token - 1)  # a stale term: no effect
    assert await store.lease_acquire("main", "b", LEASE) is None
    await store.lease_release("main", "a", first.token)
    taken = await store.lease_acquire("main", "b", LEASE)
    assert taken is not None and taken.token == first.token + 1 and taken.is_new_term


async def test_same_holder_after_release_starts_a_new_term(store: Store) -> None:
    first = await store.lease_acquire("main", "a", LEASE)
    assert first is not None
    await store.lease_release("main", "a", first.token)
    again = await store.lease_acquire("main", "a", LEASE)
    assert again is not None and again.is_new_term and again.token == first.token + 1


async def test_fenced_claim_and_cas_are_accepted_within_the_term(store: Store) -> None:
    grant = await store.lease_acquire("main", "a", LEASE)
    assert grant is not None
    fence = Fence("main", "a", grant.token)
    assert await store.claim_run(claim(fence=fence)) is not None
    await store.upsert_schedule(ScheduleRow("job", "cron", "* * * * *"))
    assert await store.cas_watermark("job", None, T0, fence=fence)
    rows = await raw_fetchall(store, "SELECT fence_token FROM job_run")
    assert [int(r[0]) for r in rows] == [grant.token]


async def test_fenced_claim_after_losing_the_lease_raises_lease_lost_and_writes_nothing(store: Store) -> None:
    grant = await store.lease_acquire("main", "a", timedelta(milliseconds=50))
    assert grant is not None
    await asyncio.sleep(0.12)
    assert await store.lease_acquire("main", "b", LEASE) is not None
    stale = Fence("main", "a", grant.token)
    with pytest.raises(LeaseLost):
        await store.claim_run(claim(fence=stale))
    await store.upsert_schedule(ScheduleRow("job", "cron", "* * * * *"))
    with pytest.raises(LeaseLost):
        await store.cas_watermark("job", None, T0, fence=stale)
    assert await store.recent_runs() == []
    assert await store.get_watermark("job") is None
    assert await store.claim_run(claim()) is not None  # the slot's lock was not taken


async def test_fenced_claim_after_release_raises_lease_lost(store: Store) -> None:
    grant = await store.lease_acquire("main", "a", LEASE)
    assert grant is not None
    await store.lease_release("main", "a", grant.token)
    with pytest.raises(LeaseLost):
        await store.claim_run(claim(fence=Fence("main", "a", grant.token)))


# -- the SQL sink ------------------------------------------------------------------------------
async def test_upsert_rows_inserts_then_updates_by_key(store: Store) -> None:
    await raw_execute(store, "CREATE TABLE sink_t (k VARCHAR(50) NOT NULL, part INTEGER NOT NULL, "
                             "v INTEGER NULL, at DATETIME(6) NULL, PRIMARY KEY (k, part))")
    rows = [{"k": "a", "part": 1, "v": 1, "at": T0}, {"k": "b", "part": 1, "v": 2, "at": None}]
    assert await store.upsert_rows("sink_t", ["k", "part"], rows) == 2
    assert await store.upsert_rows("sink_t", ["k", "part"], [{"k": "a", "part": 1, "v": 10, "at": T0}]) == 1
    assert await store.upsert_rows("sink_t", ["k", "part"], []) == 0
    got = await raw_fetchall(store, "SELECT k, part, v FROM sink_t ORDER BY k")
    assert [tuple(r) for r in got] == [("a", 1, 10), ("b", 1, 2)]


async def test_upsert_rows_of_key_columns_only_keeps_existing_rows(store: Store) -> None:
    await raw_execute(store, "CREATE TABLE sink_k (k VARCHAR(50) NOT NULL PRIMARY KEY)")
    assert await store.upsert_rows("sink_k", ["k"], [{"k": "a"}, {"k": "a"}, {"k": "b"}]) == 3
    assert sorted(r[0] for r in await raw_fetchall(store, "SELECT k FROM sink_k")) == ["a", "b"]


async def test_upsert_rows_refuses_names_that_are_not_plain_identifiers(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.upsert_rows("t; DROP TABLE job_run", ["k"], [{"k": 1}])
    with pytest.raises(StoreError):
        await store.upsert_rows("t", ["k"], [{"k`": 1}])


async def test_set_schedules_enabled_switches_many_rows_in_one_call(store: Store) -> None:
    for job_id in ("a", "b", "c"):
        await store.upsert_schedule(ScheduleRow(job_id, "cron", "* * * * *"))
    assert await store.set_schedules_enabled(["a", "c", "nope"], False) == 2
    rows = {r.job_id: r for r in await store.load_schedules()}
    assert (rows["a"].enabled, rows["b"].enabled, rows["c"].enabled) == (False, True, False)
    assert rows["a"].version == 2 and rows["b"].version == 1
