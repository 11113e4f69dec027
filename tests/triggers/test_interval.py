from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from piko.errors import TriggerSpecError
from piko.triggers import IntervalTrigger, make_trigger, trigger_from_stored
from tests.triggers.conftest import NEW_YORK, fires

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def interval(spec: dict, tz: object = "UTC", **kwargs: object) -> IntervalTrigger:
    trigger = make_trigger("interval", spec, tz, **kwargs)
    assert isinstance(trigger, IntervalTrigger)
    return trigger


def test_fires_at_start_plus_multiples_of_the_interval() -> None:
    trigger = interval({"minutes": 10, "start_date": "2026-01-01 00:00:00"})
    assert fires(trigger, utc(2026, 1, 1, 0, 25), 2) == ["2026-01-01 00:30:00 UTC", "2026-01-01 00:40:00 UTC"]


def test_before_the_start_the_first_fire_is_the_start() -> None:
    trigger = interval({"hours": 1, "start_date": "2026-01-01 00:00:00"})
    assert trigger.next_fire_time(utc(2025, 6, 1)) == utc(2026, 1, 1)
    assert trigger.next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 1, 1)  # strictly after


def test_units_are_summed_and_floats_allowed() -> None:
    assert interval({"hours": 1, "minutes": 30, "seconds": 0.5}).interval == timedelta(hours=1.5, seconds=0.5)
    assert interval({"weeks": 1, "days": 1}).interval == timedelta(days=8)


def test_one_day_interval_is_elapsed_time_across_dst() -> None:
    trigger = interval({"days": 1, "start_date": "2026-03-07 09:00:00"}, "America/New_York")
    assert fires(trigger, datetime(2026, 3, 7, 8, tzinfo=NEW_YORK), 3) == [
        "2026-03-07 09:00:00 EST", "2026-03-08 10:00:00 EDT", "2026-03-09 10:00:00 EDT"]


def test_end_date_is_inclusive() -> None:
    trigger = interval({"minutes": 30, "start_date": "2026-01-01 00:00:00", "end_date": "2026-01-01 01:00:00"})
    assert fires(trigger, utc(2025, 1, 1), 5) == [
        "2026-01-01 00:00:00 UTC", "2026-01-01 00:30:00 UTC", "2026-01-01 01:00:00 UTC"]


def test_default_start_anchors_an_interval_without_start_date() -> None:
    created_at = utc(2026, 1, 1, 0, 7)
    trigger = interval({"minutes": 10}, default_start=created_at)
    assert trigger.next_fire_time(utc(2026, 1, 1, 1)) == utc(2026, 1, 1, 1, 7)


def test_without_any_start_the_anchor_is_the_unix_epoch() -> None:
    trigger = interval({"minutes": 7})
    assert trigger.start_at == utc(1970, 1, 1)
    fire_at = trigger.next_fire_time(utc(2026, 1, 1))
    assert fire_at is not None and (fire_at - utc(1970, 1, 1)) % timedelta(minutes=7) == timedelta(0)


def test_start_date_wins_over_default_start() -> None:
    trigger = interval({"hours": 1, "start_date": "2026-01-01 00:30:00"}, default_start=utc(2020, 1, 1))
    assert trigger.start_at == utc(2026, 1, 1, 0, 30)


def test_results_are_in_the_trigger_zone() -> None:
    fire_at = interval({"hours": 1}, "Asia/Shanghai").next_fire_time(utc(2026, 1, 1))
    assert fire_at is not None and str(fire_at.tzinfo) == "Asia/Shanghai"


def test_far_future_overflow_returns_none() -> None:
    assert interval({"days": 999_999}).next_fire_time(datetime.max.replace(tzinfo=UTC) - timedelta(days=1)) is None


def test_stored_json_and_equality() -> None:
    stored = trigger_from_stored("interval", '{"minutes": 10, "start_date": "2026-01-01 00:00:00"}', "UTC")
    assert stored == interval({"seconds": 600, "start_date": "2026-01-01T00:00:00Z"})
    assert stored.describe() == "every 10m from 2026-01-01T00:00:00+00:00 UTC"
    assert "IntervalTrigger(10m" in repr(stored)


def test_a_naive_default_start_is_a_wall_time_in_the_specs_own_timezone() -> None:
    trigger = interval({"hours": 1, "timezone": "Asia/Tokyo"}, "UTC", default_start=datetime(2026, 1, 1, 9, 30))
    assert trigger.start_at == utc(2026, 1, 1, 0, 30)


@pytest.mark.parametrize("key", ["start_date", "end_date"])
@pytest.mark.parametrize("value", ["9999-12-31 23:59:59", "0001-01-01 00:00:00+05:00"])
def test_bounds_outside_the_supported_range_are_spec_errors(key: str, value: str) -> None:
    with pytest.raises(TriggerSpecError, match="outside the supported range") as caught:
        interval({"hours": 1, key: value}, "America/New_York")
    assert caught.value.field == key


def test_a_fire_the_zone_cannot_show_is_none_not_an_overflow() -> None:
    trigger = interval({"minutes": 30, "start_date": "9999-12-31 15:00:00Z"}, "Asia/Shanghai")
    assert trigger.next_fire_time(utc(9999, 12, 31, 15, 10)) == utc(9999, 12, 31, 15, 30)
    assert trigger.next_fire_time(utc(9999, 12, 31, 15, 40)) is None  # 10000-01-01 00:00 in Shanghai


def test_end_before_start_says_why_it_is_refused() -> None:
    with pytest.raises(TriggerSpecError, match="could never fire"):
        interval({"hours": 1, "start_date": "2026-02-01", "end_date": "2026-01-01"})
