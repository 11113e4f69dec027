from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from piko.errors import TriggerSpecError
from piko.triggers import CronFieldsTrigger, make_trigger, trigger_from_stored
from tests.triggers.conftest import NEW_YORK, fires, wall

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fields(spec: dict, tz: object = "UTC") -> CronFieldsTrigger:
    trigger = make_trigger("cron", spec, tz)
    assert isinstance(trigger, CronFieldsTrigger)
    return trigger


# -- defaults as APScheduler 3 ------------------------------------------------------


def test_minute_alone_fires_every_hour_at_zero_seconds() -> None:
    assert fires(fields({"minute": 0}), utc(2026, 1, 1, 0, 0, 1), 2) == [
        "2026-01-01 01:00:00 UTC", "2026-01-01 02:00:00 UTC"]


def test_fields_between_given_ones_stay_star() -> None:
    # {"day": 1, "minute": 30}: every hour at :30:00 on the 1st
    assert fires(fields({"day": 1, "minute": 30}), utc(2026, 1, 1, 22), 3) == [
        "2026-01-01 22:30:00 UTC", "2026-01-01 23:30:00 UTC", "2026-02-01 00:30:00 UTC"]


def test_month_alone_fires_at_midnight_on_the_first() -> None:
    assert fires(fields({"month": "jun"}), utc(2026, 1, 1), 2) == [
        "2026-06-01 00:00:00 UTC", "2027-06-01 00:00:00 UTC"]


def test_day_of_week_alone_defaults_time_but_not_day() -> None:
    assert fires(fields({"day_of_week": "mon"}), utc(2026, 1, 1), 2) == [
        "2026-01-05 00:00:00 UTC", "2026-01-12 00:00:00 UTC"]


def test_week_alone_fires_every_day_of_that_iso_week() -> None:
    assert fires(fields({"week": 1}), utc(2026, 1, 3), 3) == [
        "2026-01-04 00:00:00 UTC", "2027-01-04 00:00:00 UTC", "2027-01-05 00:00:00 UTC"]


def test_year_alone_fires_once_at_new_year() -> None:
    trigger = fields({"year": 2030})
    assert fires(trigger, utc(2026, 1, 1), 2) == ["2030-01-01 00:00:00 UTC"]


def test_none_values_count_as_not_given() -> None:
    assert fields({"minute": 5, "hour": None}) == fields({"minute": 5})


def test_equal_by_effective_fields() -> None:
    assert fields({"minute": 0}) == fields({"minute": "0", "second": 0})
    assert hash(fields({"minute": 0})) == hash(fields({"minute": "0", "second": "0"}))


# -- day expressions ----------------------------------------------------------------


def test_all_fields_are_anded() -> None:
    # the 13th only when it is a Friday (crontab would OR these)
    assert fires(fields({"day": 13, "day_of_week": "fri"}), utc(2026, 1, 1), 2) == [
        "2026-02-13 00:00:00 UTC", "2026-03-13 00:00:00 UTC"]


def test_last_day_of_month() -> None:
    assert fires(fields({"day": "last", "hour": 23}), utc(2028, 1, 31, 23), 3) == [
        "2028-02-29 23:00:00 UTC", "2028-03-31 23:00:00 UTC", "2028-04-30 23:00:00 UTC"]


def test_nth_and_last_weekday_list() -> None:
    assert fires(fields({"day": "2nd tue,last thu", "hour": 9}), utc(2026, 1, 1), 4) == [
        "2026-01-13 09:00:00 UTC", "2026-01-29 09:00:00 UTC", "2026-02-10 09:00:00 UTC",
        "2026-02-26 09:00:00 UTC"]


def test_fifth_weekday_skips_months_without_one() -> None:
    assert fires(fields({"day": "5th fri"}), utc(2026, 1, 1), 3) == [
        "2026-01-30 00:00:00 UTC", "2026-05-29 00:00:00 UTC", "2026-07-31 00:00:00 UTC"]


def test_day_of_week_zero_is_monday_and_names_work() -> None:
    assert fields({"day_of_week": 0}).next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 5)
    assert fields({"day_of_week": "SUN"}).next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 4)


def test_start_step_a_slash_n_runs_to_the_maximum() -> None:
    assert fires(fields({"minute": "50/5"}), utc(2026, 1, 1), 3) == [
        "2026-01-01 00:50:00 UTC", "2026-01-01 00:55:00 UTC", "2026-01-01 01:50:00 UTC"]


def test_february_29th_on_a_monday_is_decades_apart() -> None:
    trigger = fields({"month": 2, "day": 29, "day_of_week": "mon"})
    assert fires(trigger, utc(2026, 1, 1), 2) == ["2044-02-29 00:00:00 UTC", "2072-02-29 00:00:00 UTC"]


def test_impossible_combination_returns_none() -> None:
    assert fields({"month": 2, "day": 30}).next_fire_time(utc(2026, 1, 1)) is None
    assert fields({"year": 2027, "month": 2, "day": 29}).next_fire_time(utc(2026, 1, 1)) is None


# -- start and end -------------------------------------------------------------------


def test_start_and_end_dates_are_inclusive_wall_times_in_the_zone() -> None:
    trigger = fields({"hour": "*/6", "start_date": "2026-01-01 06:00:00",
                      "end_date": "2026-01-01 18:00:00"}, "Asia/Shanghai")
    assert fires(trigger, utc(2025, 1, 1), 5) == [
        "2026-01-01 06:00:00 CST", "2026-01-01 12:00:00 CST", "2026-01-01 18:00:00 CST"]


def test_timezone_key_in_the_dict_overrides_tz() -> None:
    trigger = fields({"hour": 9, "timezone": "Asia/Tokyo"}, "UTC")
    assert trigger.next_fire_time(utc(2025, 12, 31, 12)) == utc(2026, 1, 1, 0)


def test_jitter_is_carried_not_applied() -> None:
    trigger = fields({"minute": 0, "jitter": 30})
    assert trigger.jitter == timedelta(seconds=30)
    assert trigger.next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 1, 1)


# -- DST: plain wall-clock matching ----------------------------------------------------


def test_skipped_wall_time_never_fires() -> None:
    trigger = fields({"hour": 2, "minute": 30}, "America/New_York")
    assert wall(trigger.next_fire_time(datetime(2026, 3, 8, 1, tzinfo=NEW_YORK))) == "2026-03-09 02:30:00 EDT"


def test_repeated_wall_time_fires_in_both_passes() -> None:
    trigger = fields({"hour": 1, "minute": 30}, "America/New_York")
    assert fires(trigger, datetime(2026, 11, 1, 1, tzinfo=NEW_YORK), 3) == [
        "2026-11-01 01:30:00 EDT", "2026-11-01 01:30:00 EST", "2026-11-02 01:30:00 EST"]


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        # the day after a transition is not skipped (APScheduler issue #606 class)
        ({"hour": 2, "minute": 30}, datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK), "2026-03-09 02:30:00 EDT"),
        ({"hour": 1, "minute": 30}, datetime(2026, 11, 1, 1, 45, tzinfo=NEW_YORK, fold=1),
         "2026-11-02 01:30:00 EST"),
        # nor the next month
        ({"day": 8, "hour": 2, "minute": 30}, datetime(2026, 3, 8, 1, tzinfo=NEW_YORK),
         "2026-04-08 02:30:00 EDT"),
        ({"day": "last", "hour": 0}, datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), "2026-11-30 00:00:00 EST"),
    ],
)
def test_no_carry_across_offset_changes(spec: dict, after: datetime, expected: str) -> None:
    assert wall(fields(spec, "America/New_York").next_fire_time(after)) == expected


def test_sub_hour_fields_keep_firing_through_the_gap() -> None:
    trigger = fields({"minute": "*/30"}, "America/New_York")
    assert fires(trigger, datetime(2026, 3, 8, 1, 15, tzinfo=NEW_YORK), 3) == [
        "2026-03-08 01:30:00 EST", "2026-03-08 03:00:00 EDT", "2026-03-08 03:30:00 EDT"]


# -- stored forms --------------------------------------------------------------------


def test_stored_json_object_of_fields() -> None:
    stored = trigger_from_stored("cron", '{"day_of_week": "mon-fri", "hour": 9}', "Europe/Berlin")
    assert stored == fields({"day_of_week": "mon-fri", "hour": 9}, "Europe/Berlin")


def test_describe_and_repr_show_given_fields() -> None:
    trigger = fields({"day_of_week": "mon-fri", "hour": 9}, "Europe/Berlin")
    assert trigger.describe() == "cron {day_of_week='mon-fri', hour='9'} Europe/Berlin"
    assert repr(trigger) == "CronFieldsTrigger(day_of_week='mon-fri', hour='9', tz='Europe/Berlin')"


# -- APScheduler 3.11's accepted syntax ------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ({"minute": "0-0/1"}, utc(2026, 1, 1, 0, 0, 1), ["2026-01-01 01:00:00 UTC", "2026-01-01 02:00:00 UTC"]),
        ({"hour": "0-0/5"}, utc(2026, 1, 1, 0, 0, 1), ["2026-01-02 00:00:00 UTC", "2026-01-03 00:00:00 UTC"]),
        ({"day_of_week": "0-0/3"}, utc(2026, 1, 1), ["2026-01-05 00:00:00 UTC", "2026-01-12 00:00:00 UTC"]),
    ],
)
def test_zero_to_zero_with_a_step_is_just_zero(spec: dict, after: datetime, expected: list[str]) -> None:
    assert fires(fields(spec), after, 2) == expected


@pytest.mark.parametrize("text", ["5-5/1", "0-0/60", "3-3/2"])
def test_other_one_value_ranges_with_a_step_are_refused_as_by_apscheduler(text: str) -> None:
    with pytest.raises(TriggerSpecError, match="wider than the range"):
        fields({"minute": text})


@pytest.mark.parametrize("text", ["0-0/1", "0-0/59", "0-0/60", "5-5/1", "0-1/2", "0/59", "0/60", "58/1", "59/1",
                                  "*/59", "*/60"])
def test_step_rules_accept_and_refuse_what_apscheduler_does(text: str) -> None:
    cron_trigger = pytest.importorskip("apscheduler.triggers.cron").CronTrigger
    try:
        cron_trigger(minute=text)
        aps_accepts = True
    except ValueError:
        aps_accepts = False
    try:
        fields({"minute": text})
        piko_accepts = True
    except TriggerSpecError:
        piko_accepts = False
    assert piko_accepts == aps_accepts


def test_a_tab_inside_a_weekday_position_is_refused_not_reread() -> None:
    # APScheduler reads "last\tfri" as "last" (the last day); piko used to read "last fri"
    with pytest.raises(TriggerSpecError, match="tab or line break") as caught:
        fields({"day": "last\tfri"})
    assert caught.value.field == "cron field 'day'"
    assert fields({"day": "last  fri"}) == fields({"day": "last fri"})
    assert fields({"day": "2nd tue ,  last thu"}) == fields({"day": "2nd tue,last thu"})


def test_end_date_before_start_date_says_why_it_is_refused() -> None:
    with pytest.raises(TriggerSpecError, match="could never fire"):
        fields({"hour": 1, "start_date": "2026-02-01", "end_date": "2026-01-01"})


# -- the ends of the calendar ------------------------------------------------------------


def test_last_hour_of_year_9999_fires_only_where_utc_can_hold_it() -> None:
    spec = {"year": 9999, "month": 12, "day": 31, "hour": 23}
    assert fields(spec).next_fire_time(utc(2026, 1, 1)) == utc(9999, 12, 31, 23)
    assert fields(spec, "Asia/Tokyo").next_fire_time(utc(2026, 1, 1)) == utc(9999, 12, 31, 14)
    assert fields(spec, "America/New_York").next_fire_time(utc(2026, 1, 1)) is None  # 10000-01-01 04:00 UTC


def test_start_date_outside_the_supported_range_is_a_spec_error() -> None:
    with pytest.raises(TriggerSpecError, match="outside the supported range") as caught:
        fields({"hour": 1, "start_date": "0001-01-01 00:00:00"}, "Asia/Shanghai")
    assert caught.value.field == "start_date"


# -- parity corners found by differential testing against APScheduler 3.11 ---------------


def test_leading_zeros_of_any_length_are_accepted_as_apscheduler_does() -> None:
    assert fields({"minute": "0000007"}).next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 7)
    assert fields({"minute": "*/0000030"}).next_fire_time(utc(2026, 1, 1, 0, 1)) == utc(2026, 1, 1, 0, 30)


@pytest.mark.parametrize("value", ["5\t,6", "1,\t2", "5\r\n,6", "1,\n2"])
def test_tabs_and_line_breaks_inside_a_list_are_refused_as_apscheduler_does(value: str) -> None:
    with pytest.raises(TriggerSpecError, match="holds a tab or line break"):
        fields({"minute": value})


def test_spaces_around_commas_and_one_trailing_line_feed_pass_as_in_apscheduler() -> None:
    assert fields({"minute": "5\n,6"}) == fields({"minute": "5,6"}) == fields({"minute": "5 , 6"})


@pytest.mark.parametrize("value", ["1-" + "9" * 990, "*/" + "7" * 990])
def test_a_long_number_is_shown_by_its_size_in_the_message(value: str) -> None:
    with pytest.raises(TriggerSpecError, match=r"\(990 digits\)") as caught:
        fields({"minute": value})
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Tokyo"])
def test_dense_schedules_fire_near_both_ends_of_the_supported_years(tz: str) -> None:
    """The steady-span shortcut scans a year each way: near year 1 and 9999 the full search answers."""
    late = fields({"minute": "*/5"}, tz).next_fire_time(utc(9999, 6, 1))
    early = fields({"minute": "*/5"}, tz).next_fire_time(utc(1, 6, 1))
    assert late is not None and late.year == 9999 and late.minute % 5 == 0 and late > utc(9999, 6, 1)
    assert early is not None and early.year == 1 and early.minute % 5 == 0 and early > utc(1, 6, 1)
