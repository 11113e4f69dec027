from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from piko.errors import TriggerSpecError
from piko.triggers import DateTrigger, make_trigger, trigger_from_stored
from tests.triggers.conftest import NEW_YORK, wall

UTC = timezone.utc


def when(spec: object, tz: object = "UTC") -> DateTrigger:
    trigger = make_trigger("date", spec, tz)
    assert isinstance(trigger, DateTrigger)
    return trigger


def test_fires_once_at_run_date_in_the_zone() -> None:
    trigger = when({"run_date": "2026-01-08 10:00:00"}, "Asia/Shanghai")
    assert trigger.next_fire_time(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 8, 2, tzinfo=UTC)
    assert trigger.next_fire_time(datetime(2026, 1, 8, 2, tzinfo=UTC)) is None  # strictly after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-08", datetime(2026, 1, 8, tzinfo=UTC)),
        ("2026-01-08 10:00:00", datetime(2026, 1, 8, 10, tzinfo=UTC)),
        ("2026-01-08T10:00:00.25", datetime(2026, 1, 8, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-08T10:00:00Z", datetime(2026, 1, 8, 10, tzinfo=UTC)),
        ("2026-01-08 10:00:00+02:00", datetime(2026, 1, 8, 8, tzinfo=UTC)),
        ("2026-01-08 10:00:00-05:30", datetime(2026, 1, 8, 15, 30, tzinfo=UTC)),
        ("2026-1-8 9:05:07", datetime(2026, 1, 8, 9, 5, 7, tzinfo=UTC)),
    ],
)
def test_accepted_date_forms(text: str, expected: datetime) -> None:
    assert when({"run_date": text}).run_at == expected


def test_bare_string_date_and_datetime_values() -> None:
    assert when("2026-01-08 10:00:00") == when({"run_date": "2026-01-08 10:00:00"})
    assert when({"run_date": date(2026, 1, 8)}).run_at == datetime(2026, 1, 8, tzinfo=UTC)
    assert when({"run_date": datetime(2026, 1, 8, 10)}, "Asia/Tokyo").run_at == datetime(2026, 1, 8, 1, tzinfo=UTC)


def test_wall_time_in_a_gap_moves_forward_by_the_gap() -> None:
    trigger = when({"run_date": "2026-03-08 02:30:00"}, "America/New_York")
    assert wall(trigger.next_fire_time(datetime(2026, 1, 1, tzinfo=UTC))) == "2026-03-08 03:30:00 EDT"


def test_wall_time_in_an_overlap_means_the_first_occurrence() -> None:
    trigger = when({"run_date": "2026-11-01 01:30:00"}, "America/New_York")
    assert wall(trigger.next_fire_time(datetime(2026, 1, 1, tzinfo=UTC))) == "2026-11-01 01:30:00 EDT"
    assert trigger.run_at == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_after_is_compared_as_an_instant_in_any_zone() -> None:
    trigger = when({"run_date": "2026-11-01 01:30:00"}, "America/New_York")  # 05:30 UTC
    second_pass = datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1)  # 06:10 UTC
    assert trigger.next_fire_time(second_pass) is None
    assert trigger.next_fire_time(second_pass - timedelta(hours=1)) is not None


def test_stored_json_and_text() -> None:
    assert trigger_from_stored("date", '{"run_date": "2026-01-08"}', "UTC") == when("2026-01-08")
    assert trigger_from_stored("date", "2026-01-08", None) == when("2026-01-08")


def test_describe_and_repr() -> None:
    trigger = when({"run_date": "2026-01-08 10:00:00"}, "Asia/Shanghai")
    assert trigger.describe() == "once at 2026-01-08T10:00:00+08:00 Asia/Shanghai"
    assert repr(trigger) == "DateTrigger('2026-01-08T02:00:00+00:00', tz='Asia/Shanghai')"


# -- the ends of the calendar ---------------------------------------------------------


@pytest.mark.parametrize(
    ("run_date", "tz"),
    [
        ("9999-12-31 23:59:59", "America/New_York"),  # 10000-01-01 in UTC
        ("0001-01-01 00:00:00", "Asia/Shanghai"),  # year 0 in UTC
        ("9999-12-31 23:59:59-05:00", "UTC"),
        ("0001-01-01 00:00:00+05:00", "UTC"),
        ("9999-12-31 20:00:00Z", "Asia/Shanghai"),  # fine in UTC, 10000-01-01 on the wall clock
        (datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))), "UTC"),
    ],
)
def test_run_date_outside_the_supported_range_is_a_spec_error(run_date: object, tz: str) -> None:
    with pytest.raises(TriggerSpecError, match="outside the supported range") as caught:
        when({"run_date": run_date}, tz)
    assert caught.value.field == "run_date"


def test_run_dates_at_the_ends_that_fit_are_accepted() -> None:
    assert when("9999-12-31 18:59:59", "America/New_York").run_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert when("0001-01-01 08:05:43", "Asia/Shanghai").run_at == datetime(1, 1, 1, tzinfo=UTC)
