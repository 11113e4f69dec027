"""Timestamps as the stores write and read them: UTC text with microseconds, sortable as text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from piko.store.codec import TEXT_FORMAT, from_db, to_text

UTC = timezone.utc


@pytest.mark.parametrize("value", [
    datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC),  # no fraction: still six digits
    datetime(2026, 7, 8, 2, 30, 0, 5, tzinfo=ZoneInfo("America/New_York")),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3))),
    datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")),
])
def test_to_text_writes_utc_with_microseconds_and_reads_back_the_same_instant(value: datetime) -> None:
    text = to_text(value)
    assert text == value.astimezone(UTC).strftime(TEXT_FORMAT)
    assert from_db(text) == value


def test_to_text_keeps_none_and_refuses_naive_times() -> None:
    assert to_text(None) is None
    with pytest.raises(ValueError, match="naive"):
        to_text(datetime(2026, 1, 1))


def test_text_order_is_time_order() -> None:
    times = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=7 ** k) for k in range(12)]
    assert sorted(times, key=to_text) == sorted(times)  # type: ignore[arg-type]
