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
        _check_custom(tz, spec)
        return Zone(str(tz), tz, False)
    raise TriggerSpecError(
        spec if spec is not None else tz,
        f"{type(tz).__name__} {shown(tz)} is not a time zone; give an IANA name such as "
        "'Europe/Berlin', 'UTC', or a tzinfo",
        "time zone",
    )


def _check_custom(tz: tzinfo, spec: object) -> None:
    """A hand-written tzinfo must give an offset under a day for naive probes: fail at build
    time, not at the first fire."""
    try:
        for probe in (datetime(2000, 1, 15), datetime(2000, 7, 15)):
            offset = tz.utcoffset(probe)
            if not isinstance(offset, timedelta) or abs(offset) >= timedelta(days=1):
                raise ValueError(f"utcoffset() returned {offset!r}")
    except Exception as exc:
        raise TriggerSpecError(spec if spec is not None else tz,
                               f"tzinfo {shown(tz)} is not usable: {type(exc).__name__}: {exc}",
                               "time zone") from None


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



# -- steady spans: stretches of one offset whose wall times occur exactly once ----------------
_STEP = timedelta(days=1)  # no zone has changed its offset and back within a day
_SCAN_STEPS = 370  # a year and a bit each way
_SPANS_PER_ZONE = 8
_ZONES_KEPT = 256
# keyed by the tzinfo itself, not id(): a freed zone's id can be reused by another zone
Span = tuple[datetime, datetime, timedelta, tuple[int, ...]]  # lo, hi (aware UTC), offset, hi's wall fields
_spans: dict[tzinfo, list[Span]] = {}


def cached_span(tz: tzinfo, at_utc: datetime) -> Span | None:
    """The known steady span (see steady_span) holding at_utc (aware UTC), if one was found before."""
    spans = _spans.get(tz)
    if spans:
        for index, span in enumerate(spans):
            if span[0] <= at_utc < span[1]:
                if index:
                    spans.insert(0, spans.pop(index))
                return span
    return None


def steady_span(tz: tzinfo, at_utc: datetime) -> Span:
    """(lo, hi, offset, hi_wall): aware UTC bounds around at_utc of one offset, where every wall
    time of [lo + offset, hi + offset) occurs once and only there: lo is past the wall times that
    a fall-back at the span's start repeats, hi is the next transition; hi_wall is hi + offset
    as (year, month, day, hour, minute, second), for comparing wall times directly. Cached per zone (a
    scan in days plus a bisection at each end, about 750 offset look-ups or 0.3 ms, once per
    span), so dense schedules skip the DST search in firing.py away from transitions.
    """
    found = cached_span(tz, at_utc)
    if found is not None:
        return found
    here = at_utc.replace(tzinfo=None, microsecond=0)
    offset = offset_at(tz, here)
    hi, lo = here + _SCAN_STEPS * _STEP, here - _SCAN_STEPS * _STEP
    for step in range(1, _SCAN_STEPS + 1):
        probe = here + step * _STEP
        if offset_at(tz, probe) != offset:
            hi = transition_after(tz, probe - _STEP, probe)
            break
    for step in range(1, _SCAN_STEPS + 1):
        probe = here - step * _STEP
        before = offset_at(tz, probe)
        if before != offset:
            start = transition_after(tz, probe, probe + _STEP)
            lo = start + max(timedelta(0), before - offset)  # past the wall times a fall-back repeats
            break
    end = hi + offset
    span = (lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC), offset,
            (end.year, end.month, end.day, end.hour, end.minute, end.second))
    if tz not in _spans and len(_spans) >= _ZONES_KEPT:
        _spans.clear()
    spans = _spans.setdefault(tz, [])
    spans.insert(0, span)
    del spans[_SPANS_PER_ZONE:]
    return span
