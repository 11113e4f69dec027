from __future__ import annotations

from datetime import datetime, timedelta, timezone

from piko.core.backfill import previous_fire, window_for, windows_between
from piko.core.types import DataInterval
from piko.triggers import make_trigger

UTC = timezone.utc
H = [datetime(2026, 3, 1, h, tzinfo=UTC) for h in range(24)]
HOURLY = make_trigger("cron", {"minute": 0}, tz="UTC")


def test_previous_fire_is_the_last_fire_strictly_before():
    assert previous_fire(HOURLY, H[10]) == H[9]
    assert previous_fire(HOURLY, H[10] + timedelta(minutes=1)) == H[10]


def test_previous_fire_of_a_date_trigger_before_its_time_is_none():
    once = make_trigger("date", {"run_date": "2026-03-01 10:00:00"}, tz="UTC")
    assert previous_fire(once, H[10]) is None


def test_window_is_half_open_previous_fire_to_fire_or_from_the_watermark():
    assert window_for(HOURLY, H[10], None) == DataInterval(H[9], H[10])
    assert window_for(HOURLY, H[10], H[7]) == DataInterval(H[7], H[10])


def test_windows_between_are_in_order_bounded_and_count_the_rest():
    windows, extra = windows_between(HOURLY, H[9], H[12] + timedelta(minutes=30), limit=2)
    assert windows == [DataInterval(H[9], H[10]), DataInterval(H[10], H[11])] and extra == 1


def test_windows_follow_the_jobs_own_zone_across_dst():
    daily = make_trigger("cron", "0 0 * * *", tz="Europe/Berlin")
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)  # Mar 29 00:00 CET
    windows, _ = windows_between(daily, start, start + timedelta(days=2), limit=10)
    assert [w.end - w.start for w in windows] == [timedelta(hours=23), timedelta(hours=24)]


def test_no_window_reason_names_a_schedules_first_fire_its_end_or_its_next_fire():
    from piko.core.backfill import no_window_reason

    once = make_trigger("date", {"run_date": "2026-03-01 10:00:00"}, tz="UTC")
    assert no_window_reason(once, H[1]) == "the schedule's first fire is at 2026-03-01T10:00:00+00:00"
    assert no_window_reason(once, H[11]).startswith("the schedule has no fire after 2026-03-01T11:00:00+00:00 "
                                                    "(its last fire was at 2026-03-01T10:00:00+00:00)")
    starts_later = make_trigger("cron", {"minute": 0, "start_date": "2026-03-01 05:00:00"}, tz="UTC")
    assert no_window_reason(starts_later, H[1]) == "the schedule's first fire is at 2026-03-01T05:00:00+00:00"
    assert no_window_reason(HOURLY, H[1] + timedelta(minutes=10)) == \
        "the schedule's next fire after 2026-03-01T01:10:00+00:00 is at 2026-03-01T02:00:00+00:00"
