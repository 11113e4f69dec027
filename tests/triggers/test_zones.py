"""Zones: names, tzinfo objects, and ZoneInfo objects loaded from a file (no key)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from piko.errors import TriggerSpecError
from piko.triggers import make_trigger
from piko.triggers.zones import resolve_zone

UTC = timezone.utc
NEW_YORK_FILE = Path("/usr/share/zoneinfo/America/New_York")


def test_zoneinfo_from_a_file_is_a_zone_with_dst() -> None:
    if not NEW_YORK_FILE.exists():
        pytest.skip("no system zone files")
    with NEW_YORK_FILE.open("rb") as handle:
        from_file = ZoneInfo.from_file(handle)
    assert from_file.key is None
    zone = resolve_zone(from_file)
    assert zone.tzinfo is from_file and not zone.is_fixed and "from_file" in zone.name
    trigger = make_trigger("cron", "30 2 * * *", tz=from_file)  # Debian rule in the spring gap
    fire_at = trigger.next_fire_time(datetime(2026, 3, 8, 6, tzinfo=UTC))
    assert fire_at == datetime(2026, 3, 8, 7, tzinfo=UTC)  # 03:00 EDT, just after the gap


def test_a_non_zone_is_a_spec_error() -> None:
    with pytest.raises(TriggerSpecError, match="is not a time zone"):
        resolve_zone(3.5)


@pytest.mark.parametrize("name, at, lo, hi", [
    # Berlin 2026: summer time from 03-29 01:00 UTC to 10-25 01:00 UTC
    ("Europe/Berlin", datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
     datetime(2026, 10, 25, 1, tzinfo=UTC)),
    # the winter after it starts one hour late: 02:00-03:00 wall time repeats from the summer's end
    ("Europe/Berlin", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC),
     datetime(2027, 3, 28, 1, tzinfo=UTC)),
    # Lord Howe: a 30-minute change; standard time 2026-04-04 15:00 UTC to 10-03 15:30 UTC
    ("Australia/Lord_Howe", datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 4, 4, 15, 30, tzinfo=UTC),
     datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
])
def test_steady_spans_end_at_transitions_and_start_after_the_repeated_wall_times(name, at, lo, hi) -> None:
    from piko.triggers.zones import steady_span

    found_lo, found_hi, _, _ = steady_span(ZoneInfo(name), at)
    assert (found_lo, found_hi) == (lo, hi)


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"])
@pytest.mark.parametrize("expr", ["* * * * *", "*/7 * * * *", "0 2 * * *", "30 1 * * *", "0 */2 * * *"])
def test_the_steady_span_shortcut_agrees_with_the_full_dst_search_all_year(name, expr) -> None:
    """Successive fires through a whole year, transitions included, against the full search."""
    from piko.triggers import firing

    trigger = make_trigger("cron", expr, tz=name)
    zone = ZoneInfo(name)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    step = {"* * * * *": 3600 * 7 + 13, "*/7 * * * *": 3600 * 5 + 7}.get(expr, 3600 * 11 + 1)
    while at < datetime(2027, 1, 1, tzinfo=UTC):
        fast = trigger.next_fire_time(at)
        cand = firing._next_in_zone(trigger.calendar, zone, at, trigger.is_debian_fixed)
        assert cand is not None and fast is not None
        assert fast == datetime(*cand[1], tzinfo=zone, fold=cand[2]), (expr, at)
        assert fast.utcoffset() == datetime(*cand[1], tzinfo=zone, fold=cand[2]).utcoffset()
        at = at + timedelta(seconds=step)
