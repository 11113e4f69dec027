"""Dates in schedule specs: parse them, and place naive wall times in a zone.

Accepted text: YYYY-MM-DD, or YYYY-MM-DD HH:MM:SS[.ffffff] with ' ' or 'T', optionally
ending in Z or +HH:MM / -HH:MM (the forms APScheduler 3 accepts). A naive value is a wall
time in the trigger's zone read with fold=0: inside a DST gap it moves forward by the gap,
inside a repeated hour it means the first occurrence. Instants are supported when
datetime can hold them both in UTC and in the trigger's zone (years 1-9999 in each):
"9999-12-31 23:59:59" in New York is 10000-01-01 in UTC, and is refused.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from piko.errors import TriggerSpecError
from piko.triggers.validate import shown
from piko.triggers.zones import UTC, Zone

MAX_DATE_CHARS = 64
DATE_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?(Z|[+-]\d\d:\d\d)?)?",
    re.ASCII,
)
DATE_FORMS = "YYYY-MM-DD or YYYY-MM-DD HH:MM:SS[.ffffff] with optional 'T', 'Z' or +HH:MM"


def parse_instant(value: object, zone: Zone, *, field: str, spec: object) -> datetime:
    """parse_when, then in UTC; TriggerSpecError if UTC or `zone` cannot hold the instant."""
    return to_utc(parse_when(value, zone, field=field, spec=spec), zone, field=field, spec=spec)


def to_utc(when: datetime, zone: Zone, *, field: str, spec: object) -> datetime:
    """`when` (aware) in UTC, refusing what would overflow later, when shown in `zone`."""
    try:
        utc = when.astimezone(UTC)
        utc.astimezone(zone.tzinfo)
    except OverflowError:
        where = "UTC" if zone.name == "UTC" else f"both UTC and {zone.name}"
        raise TriggerSpecError(
            spec, f"{when.isoformat()} is outside the supported range: it must be in years "
            f"1-9999 in {where}", field,
        ) from None
    return utc


def parse_when(value: object, zone: Zone, *, field: str, spec: object) -> datetime:
    """An aware datetime from a datetime, a date or a date string; TriggerSpecError otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else localize(value, zone)
    if isinstance(value, date):
        return localize(datetime.combine(value, time()), zone)
    if isinstance(value, str):
        return _parse_text(value, zone, field=field, spec=spec)
    raise TriggerSpecError(
        spec, f"{type(value).__name__} {shown(value)} is not a date; give {DATE_FORMS}", field
    )


def _parse_text(text: str, zone: Zone, *, field: str, spec: object) -> datetime:
    match = DATE_RE.fullmatch(text.strip()) if len(text) <= MAX_DATE_CHARS else None
    if match is None:
        raise TriggerSpecError(spec, f"{shown(text)} is not a date; give {DATE_FORMS}", field)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        naive = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        tz = _offset_zone(offset) if offset else None
    except ValueError as exc:
        raise TriggerSpecError(spec, f"{shown(text)} is not a valid date: {exc}", field) from None
    return naive.replace(tzinfo=tz) if tz is not None else localize(naive, zone)


def _offset_zone(text: str) -> timezone:
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if minutes > 59:
        raise ValueError(f"offset minutes {minutes} outside 0-59")
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))  # raises past 24h


def localize(naive: datetime, zone: Zone) -> datetime:
    """Read a naive wall time in `zone` with fold=0 (a time in a gap moves forward)."""
    local = naive.replace(tzinfo=zone.tzinfo, fold=0)
    if zone.is_fixed:
        return local
    try:
        return local.astimezone(UTC).astimezone(zone.tzinfo)
    except OverflowError:
        return local

