from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from piko.triggers import CronTextTrigger, make_trigger
from tests.triggers.conftest import LORD_HOWE, NEW_YORK, fires, wall

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ny(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK, fold=fold)


def cron(expr: str, tz: object = "UTC") -> CronTextTrigger:
    trigger = make_trigger("cron", expr, tz)
    assert isinstance(trigger, CronTextTrigger)
    return trigger


# -- syntax ------------------------------------------------------------------------


def test_every_five_minutes_fires_on_multiples_of_five() -> None:
    assert fires(cron("*/5 * * * *"), utc(2026, 1, 1, 0, 3), 3) == [
        "2026-01-01 00:05:00 UTC", "2026-01-01 00:10:00 UTC", "2026-01-01 00:15:00 UTC"]


def test_next_fire_is_strictly_after_an_exact_match() -> None:
    assert cron("0 * * * *").next_fire_time(utc(2026, 1, 1, 5)) == utc(2026, 1, 1, 6)


def test_microseconds_after_a_match_move_to_the_next_match() -> None:
    assert cron("* * * * * *").next_fire_time(utc(2026, 1, 1, 5, 0, 0) + timedelta(microseconds=1)) == utc(
        2026, 1, 1, 5, 0, 1)


def test_any_whitespace_separates_fields() -> None:
    assert cron(" 0\t9  * *\n1-5 ") == cron("0 9 * * 1-5")


def test_month_and_weekday_names_in_any_case() -> None:
    assert fires(cron("30 9 * JAN-feb Mon-FRI"), utc(2026, 1, 1), 2) == [
        "2026-01-01 09:30:00 UTC", "2026-01-02 09:30:00 UTC"]


def test_day_of_week_seven_and_zero_are_sunday() -> None:
    assert cron("0 0 * * 7").next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 4)
    assert cron("0 0 * * 0").next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 4)
    assert cron("0 0 * * 5-7").next_fire_time(utc(2026, 1, 3, 1)) == utc(2026, 1, 4)


def test_range_with_step_and_lists() -> None:
    assert fires(cron("10-30/10,45 8 * * *"), utc(2026, 1, 1), 5) == [
        "2026-01-01 08:10:00 UTC", "2026-01-01 08:20:00 UTC", "2026-01-01 08:30:00 UTC",
        "2026-01-01 08:45:00 UTC", "2026-01-02 08:10:00 UTC"]


def test_six_fields_have_seconds_first() -> None:
    assert fires(cron("*/20 0 12 * * *"), utc(2026, 1, 1), 3) == [
        "2026-01-01 12:00:00 UTC", "2026-01-01 12:00:20 UTC", "2026-01-01 12:00:40 UTC"]


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
     ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
     ("@hourly", "0 * * * *")],
)
def test_macros_fire_like_their_expansion(macro: str, same_as: str) -> None:
    after = utc(2026, 5, 17, 13, 14)
    assert fires(cron(macro), after, 3) == fires(cron(same_as), after, 3)


# -- day-of-month and day-of-week ----------------------------------------------------


def test_restricted_day_of_month_and_day_of_week_are_ored() -> None:
    # the 13th, and every Friday
    assert fires(cron("0 0 13 * 5"), utc(2026, 1, 1), 4) == [
        "2026-01-02 00:00:00 UTC", "2026-01-09 00:00:00 UTC", "2026-01-13 00:00:00 UTC",
        "2026-01-16 00:00:00 UTC"]


def test_star_step_day_of_month_is_anded_with_day_of_week() -> None:
    # odd days that are Mondays
    assert fires(cron("0 0 */2 * 1"), utc(2026, 1, 1), 3) == [
        "2026-01-05 00:00:00 UTC", "2026-01-19 00:00:00 UTC", "2026-02-09 00:00:00 UTC"]


def test_first_seven_days_and_star_step_seven_weekday_is_the_first_sunday() -> None:
    assert fires(cron("0 0 1-7 * */7"), utc(2026, 1, 1), 3) == [
        "2026-01-04 00:00:00 UTC", "2026-02-01 00:00:00 UTC", "2026-03-01 00:00:00 UTC"]


# -- calendar edge cases -------------------------------------------------------------


def test_february_29th_fires_only_in_leap_years() -> None:
    assert fires(cron("0 0 29 2 *"), utc(2026, 1, 1), 3) == [
        "2028-02-29 00:00:00 UTC", "2032-02-29 00:00:00 UTC", "2036-02-29 00:00:00 UTC"]


def test_february_29th_skips_2100_which_is_not_a_leap_year() -> None:
    assert cron("0 0 29 2 *").next_fire_time(utc(2097, 1, 1)) == utc(2104, 2, 29)


def test_the_31st_skips_shorter_months() -> None:
    assert fires(cron("0 12 31 * *"), utc(2026, 1, 31, 13), 3) == [
        "2026-03-31 12:00:00 UTC", "2026-05-31 12:00:00 UTC", "2026-07-31 12:00:00 UTC"]


def test_year_end_rolls_into_the_next_year() -> None:
    assert cron("59 23 31 12 *").next_fire_time(utc(2026, 12, 31, 23, 59)) == utc(2027, 12, 31, 23, 59)


@pytest.mark.parametrize("expr", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_date_that_never_exists_returns_none_quickly(expr: str) -> None:
    started = time.perf_counter()
    assert cron(expr, "Europe/Berlin").next_fire_time(utc(2026, 1, 1)) is None
    assert time.perf_counter() - started < 0.05


def test_fires_near_the_end_of_the_calendar_then_none() -> None:
    assert cron("0 0 1 1 *").next_fire_time(utc(9999, 1, 1)) is None
    assert cron("59 23 31 12 *").next_fire_time(utc(9999, 6, 1)) == utc(9999, 12, 31, 23, 59)


def test_after_in_another_zone_is_compared_as_an_instant() -> None:
    after = datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))  # 00:00 UTC
    assert cron("0 1 * * *").next_fire_time(after) == utc(2026, 1, 1, 1)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        cron("* * * * *").next_fire_time(datetime(2026, 1, 1))


# -- DST: Debian cron for 5 fields ---------------------------------------------------


def test_fixed_time_job_in_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    assert fires(cron("30 2 * * *", "America/New_York"), ny(2026, 3, 8, 1), 2) == [
        "2026-03-08 03:00:00 EDT", "2026-03-09 02:30:00 EDT"]


def test_fixed_time_job_with_several_skipped_times_fires_once() -> None:
    assert fires(cron("0,15,30,45 2 * * *", "America/New_York"), ny(2026, 3, 8, 1), 2) == [
        "2026-03-08 03:00:00 EDT", "2026-03-09 02:00:00 EDT"]


def test_fixed_time_job_fires_only_in_the_first_pass_of_the_repeated_hour() -> None:
    assert fires(cron("30 1 * * *", "America/New_York"), ny(2026, 11, 1, 1), 2) == [
        "2026-11-01 01:30:00 EDT", "2026-11-02 01:30:00 EST"]


def test_fixed_time_job_after_the_first_pass_waits_for_the_next_day() -> None:
    after = ny(2026, 11, 1, 1, 5, fold=1)  # 01:05 EST, second pass
    assert wall(cron("30 1 * * *", "America/New_York").next_fire_time(after)) == "2026-11-02 01:30:00 EST"


def test_wildcard_job_skipped_times_do_not_fire() -> None:
    assert fires(cron("*/30 2 * * *", "America/New_York"), ny(2026, 3, 7, 23), 2) == [
        "2026-03-09 02:00:00 EDT", "2026-03-09 02:30:00 EDT"]


def test_wildcard_hour_job_jumps_over_the_gap() -> None:
    assert wall(cron("0 */2 * * *", "America/New_York").next_fire_time(ny(2026, 3, 8, 0, 30))) == (
        "2026-03-08 04:00:00 EDT")


def test_wildcard_job_fires_in_both_passes_of_the_repeated_hour() -> None:
    assert fires(cron("*/10 1 * * *", "America/New_York"), ny(2026, 11, 1, 1, 45), 3) == [
        "2026-11-01 01:50:00 EDT", "2026-11-01 01:00:00 EST", "2026-11-01 01:10:00 EST"]


def test_hourly_macro_is_a_wildcard_job() -> None:
    assert fires(cron("@hourly", "America/New_York"), ny(2026, 11, 1, 0, 30), 3) == [
        "2026-11-01 01:00:00 EDT", "2026-11-01 01:00:00 EST", "2026-11-01 02:00:00 EST"]


def test_daily_macro_is_a_fixed_time_job() -> None:
    # Sao Paulo once sprang forward at midnight: 00:00 did not exist on 2018-11-04
    assert wall(cron("@daily", "America/Sao_Paulo").next_fire_time(
        datetime(2018, 11, 3, 12, tzinfo=timezone.utc))) == "2018-11-04 01:00:00 -02"


def test_thirty_minute_dst_gap_in_lord_howe() -> None:
    after = datetime(2026, 10, 3, 12, tzinfo=LORD_HOWE)
    assert fires(cron("15 2 * * *", LORD_HOWE), after, 2) == [
        "2026-10-04 02:30:00 +11", "2026-10-05 02:15:00 +11"]
    assert fires(cron("*/15 2 * * *", LORD_HOWE), after, 2) == [
        "2026-10-04 02:30:00 +11", "2026-10-04 02:45:00 +11"]


def test_thirty_minute_dst_overlap_in_lord_howe() -> None:
    after = datetime(2026, 4, 5, 1, 20, tzinfo=LORD_HOWE)
    assert fires(cron("*/15 1 * * *", LORD_HOWE), after, 4) == [
        "2026-04-05 01:30:00 +11", "2026-04-05 01:45:00 +11", "2026-04-05 01:30:00 +1030",
        "2026-04-05 01:45:00 +1030"]
    assert fires(cron("45 1 * * *", LORD_HOWE), after, 2) == [
        "2026-04-05 01:45:00 +11", "2026-04-06 01:45:00 +1030"]


# -- DST: plain wall clock for 6 fields -----------------------------------------------


def test_six_field_skipped_wall_times_never_fire() -> None:
    assert wall(cron("0 30 2 * * *", "America/New_York").next_fire_time(ny(2026, 3, 8, 1))) == (
        "2026-03-09 02:30:00 EDT")


def test_six_field_repeated_wall_times_fire_in_both_passes() -> None:
    assert fires(cron("0 30 1 * * *", "America/New_York"), ny(2026, 11, 1, 1), 3) == [
        "2026-11-01 01:30:00 EDT", "2026-11-01 01:30:00 EST", "2026-11-02 01:30:00 EST"]


# -- values -----------------------------------------------------------------------


def test_equal_by_text_and_zone_and_hashable() -> None:
    assert cron("*/5 * * * *", "Europe/Berlin") == cron("*/5  *  * * *", "Europe/Berlin")
    assert cron("*/5 * * * *", "Europe/Berlin") != cron("*/5 * * * *", "Europe/Paris")
    assert len({cron("@daily"), cron("@daily"), cron("0 0 * * *")}) == 2


def test_repr_and_describe_show_the_text_and_zone() -> None:
    trigger = cron("*/5 * * * *", "Europe/Berlin")
    assert repr(trigger) == "CronTextTrigger('*/5 * * * *', tz='Europe/Berlin')"
    assert trigger.describe() == "cron '*/5 * * * *' Europe/Berlin"


def test_tz_none_means_utc() -> None:
    assert make_trigger("cron", "0 0 * * *", None) == cron("0 0 * * *", "UTC")
    assert cron("0 0 * * *", None).next_fire_time(utc(2026, 1, 1)).utcoffset() == timedelta(0)


# -- the ends of the calendar (firing.py's supported range) ----------------------------

DATETIME_MIN = datetime.min.replace(tzinfo=UTC)


def test_after_datetime_min_fires_from_the_first_wall_time_the_zone_can_show() -> None:
    assert cron("*/5 * * * *").next_fire_time(DATETIME_MIN) == utc(1, 1, 1, 0, 5)
    # New York's 0001-01-01 00:00 (LMT, -4:56:02) is 04:56:02 UTC: earlier wall times are year 0
    first = cron("*/5 * * * *", "America/New_York").next_fire_time(DATETIME_MIN)
    assert first is not None and first.replace(tzinfo=None) == datetime(1, 1, 1)
    assert first.astimezone(UTC) == utc(1, 1, 1, 4, 56, 2)
    assert cron("0 12 * * *", "Etc/GMT+5").next_fire_time(DATETIME_MIN) == datetime(
        1, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))


def test_a_fire_past_year_9999_in_utc_is_none_in_every_zone() -> None:
    assert cron("0 23 31 12 *", "UTC").next_fire_time(utc(9999, 12, 1)) == utc(9999, 12, 31, 23)
    for zone in ("America/New_York", "Etc/GMT+5"):  # 23:00 there is 10000-01-01 04:00 UTC
        fire_at = cron("0 23 31 12 *", zone).next_fire_time(utc(9999, 12, 1))
        assert fire_at is None, zone
    assert cron("*/5 * * * *", "Asia/Shanghai").next_fire_time(datetime.max.replace(tzinfo=UTC)) is None
