from __future__ import annotations

from datetime import datetime, timezone

import pytest

from piko.core.reconcile import ScheduleBook, apply_plan, check_row_options, diff, options_for
from piko.core.registry import JobSpec, Registry
from piko.core.types import JobOptions, ScheduleRow
from piko.errors import ConfigError


async def _f(ctx, t):
    pass


def row(job_id, expr="* * * * *", **kw):
    return ScheduleRow(job_id, "cron", expr, **kw)


def registered(job_id):
    return not job_id.startswith("ghost")


def test_new_changed_and_removed_rows_become_upserts_and_stops():
    applied = {"same": row("same"), "edited": row("edited"), "gone": row("gone"), "off": row("off")}
    rows = [row("same"), row("edited", "*/5 * * * *"), row("off", enabled=False), row("new"), row("ghost1")]
    plan = diff(applied, rows, registered)
    assert [r.job_id for r in plan.upsert] == ["edited", "new"]
    assert plan.stop == ("gone", "off") and plan.unknown == ("ghost1",)


def test_a_version_bump_alone_is_not_a_change_and_an_edit_without_one_is():
    applied = {"a": row("a", version=1)}
    assert diff(applied, [row("a", version=7)], registered).is_empty
    assert diff(applied, [row("a", "5 * * * *", version=1)], registered).upsert


def test_scoped_diff_only_stops_jobs_named_by_the_change_log():
    applied = {"a": row("a"), "b": row("b")}
    plan = diff(applied, [], registered, scope=["a"])
    assert plan.stop == ("a",)


def test_options_take_the_row_then_the_code_then_the_defaults():
    spec = JobSpec("j", _f, misfire_grace_time=5, max_instances=2, timeout=9)
    opts = options_for(spec, row("j", max_instances=4), JobOptions())
    assert (opts.misfire_grace_s, opts.max_instances, opts.timeout_s, opts.coalesce) == (5, 4, 9, True)
    date_row = ScheduleRow("j", "date", '{"run_date": "2026-01-01"}')
    assert options_for(spec, date_row, JobOptions()).is_one_shot


@pytest.mark.parametrize(("column", "value"), [
    ("misfire_grace_s", 1e308), ("misfire_grace_s", float("nan")), ("misfire_grace_s", "soon"),
    ("jitter_s", 1e9), ("jitter_s", -1.0), ("max_instances", 0), ("max_instances", -3), ("max_instances", 2.5),
    ("enabled", 2), ("enabled", -1), ("enabled", "yes"), ("enabled", None), ("coalesce", 2), ("coalesce", "no"),
    ("timezone", ""), ("timezone", "  "),
])
def test_absurd_row_options_are_refused_naming_the_column(column, value):
    row = ScheduleRow("j", "cron", "* * * * *", **{column: value})
    with pytest.raises(ConfigError, match=f"invalid {column}: .* is not allowed; use "):
        check_row_options(row)


def test_sensible_row_options_pass_and_a_negative_grace_means_no_limit():
    for row in (ScheduleRow("j", "cron", "* * * * *", misfire_grace_s=-5, jitter_s=0.5, max_instances=3),
                ScheduleRow("j", "cron", "* * * * *", misfire_grace_s=3600.0, jitter_s=86400, max_instances=1),
                ScheduleRow("j", "cron", "* * * * *"),
                ScheduleRow("j", "cron", "* * * * *", timezone="Europe/Berlin", enabled=False, coalesce=False)):
        check_row_options(row)


def test_only_enabled_0_stops_a_job_and_other_odd_values_go_on_to_be_refused():
    applied = {"two": row("two"), "null": row("null"), "off": row("off")}
    rows = [row("two", enabled=2), row("null", enabled=None), row("off", enabled=0), row("yes", enabled="yes")]
    plan = diff(applied, rows, registered)
    assert plan.stop == ("off",)  # the others keep their last good schedule once refused
    assert [r.job_id for r in plan.upsert] == ["two", "null", "yes"]


def test_a_row_with_absurd_options_is_reported_once_and_keeps_its_last_good_schedule():
    registry = Registry()
    registry.job("j")(_f)
    book, scheduled = ScheduleBook(), []
    good = ScheduleRow("j", "cron", "* * * * *")
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)

    def apply(row):
        return apply_plan(diff(book.last_seen(), [row], lambda _: True), book, registry, "UTC",
                          lambda job_id, trigger, r: scheduled.append(r), lambda _: None, now)

    assert apply(good).started == ["j"]
    bad = ScheduleRow("j", "cron", "* * * * *", misfire_grace_s=1e308, version=2)
    assert apply(bad).invalid == ["j"] and scheduled == [good]
    assert "misfire_grace_s" in book.problems["j"]
    assert diff(book.last_seen(), [bad], lambda _: True).is_empty  # the next tick: nothing new to report


def test_a_refused_row_leaves_the_last_good_rows_options_in_force():
    """The job keeps firing on its last good schedule, so its options must be that row's too:
    a refused 'soon' or 0 must never reach the runner."""
    registry = Registry()
    registry.job("j")(_f)
    book = ScheduleBook()
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    good = ScheduleRow("j", "cron", "* * * * *", misfire_grace_s=30, max_instances=2)
    for r in (good, ScheduleRow("j", "cron", "* * * * *", misfire_grace_s="soon", max_instances=0)):
        apply_plan(diff(book.last_seen(), [r], lambda _: True), book, registry, "UTC", lambda *a: None,
                   lambda _: None, now)
    assert book.applied["j"] == good and "misfire_grace_s" in book.problems["j"]
    opts = options_for(registry.get("j"), book.applied["j"], JobOptions())
    assert (opts.misfire_grace_s, opts.max_instances) == (30, 2)
    fixed = ScheduleRow("j", "cron", "*/5 * * * *")
    result = apply_plan(diff(book.last_seen(), [fixed], lambda _: True), book, registry, "UTC", lambda *a: None,
                        lambda _: None, now)
    assert result.started == ["j"] and book.applied["j"] == fixed and not book.refused and "j" not in book.problems


def test_an_interval_rows_created_at_sets_only_the_phase_so_it_has_fires_before_the_row_existed():
    from datetime import timedelta

    from piko.core.backfill import aligned_windows
    from piko.core.reconcile import build_trigger

    created = datetime(2026, 12, 6, 2, 41, 43, 409000, tzinfo=timezone.utc)
    trigger = build_trigger(ScheduleRow("iv", "interval", '{"seconds": 30}', created_at=created), "UTC")
    day_before = datetime(2026, 12, 5, 0, 0, tzinfo=timezone.utc)
    windows, _ = aligned_windows(trigger, day_before, day_before + timedelta(minutes=2), 100)
    assert len(windows) == 4 and all(w.end.microsecond == 409000 and w.end.second % 30 == 13 for w in windows)
    assert trigger.next_fire_time(created) == created + timedelta(seconds=30)  # firing is unchanged
