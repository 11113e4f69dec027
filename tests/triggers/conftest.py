from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def wall(dt: datetime | None) -> str | None:
    """A fire time as its local wall time and zone abbreviation, for readable assertions."""
    return None if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S %Z")


def fires(trigger, after: datetime, n: int) -> list[str]:
    out: list[str] = []
    current: datetime | None = after
    for _ in range(n):
        current = trigger.next_fire_time(current)
        if current is None:
            break
        out.append(wall(current))
    return out


@pytest.fixture(autouse=True, scope="session")
def _zones_available() -> None:
    try:
        ZoneInfo("Europe/Berlin")
    except Exception:  # pragma: no cover - depends on the machine
        pytest.skip("no IANA zone data (install tzdata)")
