"""Zones: names, tzinfo objects, and ZoneInfo objects loaded from a file (no key)."""

from __future__ import annotations

from datetime import datetime, timezone
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
