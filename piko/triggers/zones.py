"""Time zones for triggers: resolving a name, and finding the exact instant of a transition.

A `Zone` is a named tzinfo plus one fact used on the hot path: whether it is a fixed
offset (UTC, `Etc/*`, `datetime.timezone`), for which wall time and elapsed time never
disagree and the DST logic in firing.py is skipped. Zone names resolve through the
standard library's `zoneinfo` only. Pure: no clock, no I/O beyond zoneinfo's own loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from piko.errors import TriggerSpecError
from piko.triggers.validate import shown

UTC = timezone.utc
MAX_ZONE_NAME = 255
_FIXED_NAMES = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu"}
)
_ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Zone:
    """A time zone as a value: equal by name, so triggers compare by their spec."""

    name: str
    tzinfo: tzinfo = field(compare=False)
    is_fixed: bool = field(compare=False)

    def __repr__(self) -> str:
        return repr(self.name)


UTC_ZONE = Zone("UTC", UTC, True)


def resolve_zone(tz: object, spec: object = None) -> Zone:
    """Turn a zone name, a tzinfo or None (UTC) into a Zone; raise TriggerSpecError otherwise."""
    if tz is None or tz == "UTC":
        return UTC_ZONE
    if isinstance(tz, str):
        return Zone(tz, _load_zoneinfo(tz, spec), _is_fixed_name(tz))
    if isinstance(tz, ZoneInfo):
        if tz.key is None:  # ZoneInfo.from_file: named after its file; DST handling stays on
            return Zone(str(tz), tz, False)
        return Zone(tz.key, tz, _is_fixed_name(tz.key))
    if isinstance(tz, timezone):
        return Zone(tz.tzname(None) or str(tz), tz, True)
    if isinstance(tz, tzinfo):
        legacy_name = getattr(tz, "zone", None)  # pytz: its arithmetic ignores fold, use zoneinfo
        if isinstance(legacy_name, str):
            return resolve_zone(legacy_name, spec)
        return Zone(str(tz), tz, False)
    raise TriggerSpecError(
        spec if spec is not None else tz,
        f"{type(tz).__name__} {shown(tz)} is not a time zone; give an IANA name such as "
        "'Europe/Berlin', 'UTC', or a tzinfo",
        "time zone",
    )


def _load_zoneinfo(name: str, spec: object) -> ZoneInfo:
    if not name or len(name) > MAX_ZONE_NAME:
        reason = f"{shown(name)} is not an IANA zone name"
    else:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            reason = f"unknown zone {shown(name)}"
    raise TriggerSpecError(
        spec if spec is not None else name,
        f"{reason}; give an IANA name such as 'Europe/Berlin' or 'UTC'",
        "time zone",
    )


def _is_fixed_name(name: str) -> bool:
    return name in _FIXED_NAMES or name.startswith("Etc/")


def offset_at(tz: tzinfo, utc_naive: datetime) -> timedelta:
    """The zone's UTC offset at an instant given as a naive UTC datetime."""
    offset = tz.fromutc(utc_naive.replace(tzinfo=tz)).utcoffset()
    return offset if offset is not None else timedelta(0)


def transition_after(tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first whole second in (low, high] (naive UTC) whose offset differs from low's.

    The caller knows the offsets at low and high differ; DST changes are at most a few
    hours apart from the bounds we pass, so this bisection takes about 15 steps.
    """
    low = low.replace(microsecond=0)
    before = offset_at(tz, low)
    lo, hi = 0, max(1, int((high - low).total_seconds()) + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset_at(tz, low + mid * _ONE_SECOND) == before:
            lo = mid
        else:
            hi = mid
    return low + hi * _ONE_SECOND

