"""From matching wall times to fire instants: every cron flavour's DST rule, in one place.

Plain wall-clock matching (6-field crontab, APScheduler dicts, 5-field wildcard jobs): an
instant fires when its wall time matches; a wall time skipped by a gap never fires and a
repeated wall time fires in both passes. Debian cron's fixed-time rule (5-field jobs whose
minute and hour fields do not start with '*'): matching wall times inside a gap fire once,
at the first instant after the gap; in a repeated hour only the first pass fires.

Why looking near `after` is enough: wall time only runs backwards at a fall-back, so the
only instants after `after` whose wall time is earlier than after's are in the second pass
of an overlap `after` is in. Every other candidate is the first matching wall time w after
after's; transitions between them only skip or repeat wall times before w, none of which
match. So one search, plus a look at w itself (unique, repeated or skipped), decides.
Fixed-offset zones skip all of this: wall time is elapsed time.

Range: a fire exists only if datetime can hold it both in UTC and as a wall time in the
zone (years 1-9999 in each). Near datetime.max the search runs out of representable
instants and answers None; near datetime.min an `after` whose wall time would fall before
0001-01-01 searches from 0001-01-01 00:00:00 wall time, the first fire the zone can show.
"""

from __future__ import annotations

from datetime import MAXYEAR, datetime, timedelta, timezone, tzinfo

from piko.triggers.validate import naive_after
from piko.triggers.wallclock import DENSE_DAYS, WallCalendar, WallTime
from piko.triggers.zones import Zone, cached_span, steady_span, transition_after

_UTC = timezone.utc
_FIRST_WALL: WallTime = (1, 1, 1, 0, 0, 0)
_NEAR_MIN = datetime(1, 1, 2, tzinfo=_UTC)  # UTC offsets are under a day
_MAX_STEPS = 64  # each step passes one gap or one repeated wall time; a few suffice
Candidate = tuple[datetime, WallTime, int]  # (naive UTC instant, wall time, fold)


def next_instant(
    calendar: WallCalendar, zone: Zone, after: datetime, is_debian_fixed: bool = False
) -> datetime | None:
    """The first instant strictly after `after` whose wall time in `zone` fires."""
    # check_after, inlined for the hot path; utcoffset() is a third of a call's time, and UTC
    # (what the kernel passes) or the zone's own tzinfo (our previous answer) is aware without asking
    tz = zone.tzinfo
    if after.tzinfo is not _UTC and after.tzinfo is not tz and (after.tzinfo is None or after.utcoffset() is None):
        raise naive_after(after)
    try:
        try:
            if zone.is_fixed:  # the hot path: wall time is elapsed time
                local = after.astimezone(tz)
                wall = calendar.next_wall(
                    local.year, local.month, local.day, local.hour, local.minute, local.second + 1
                )
                if wall is None:
                    return None
                fire_at = datetime(*wall, 0, tz)
                if wall[0] == MAXYEAR:
                    fire_at.astimezone(_UTC)  # raises if UTC cannot hold it
                return fire_at
            found_at = _in_steady_span(calendar, tz, after) if calendar.is_dense else None
            if found_at is not None:
                return found_at if found_at is not _NO_FIRE else None
            found = _next_in_zone(calendar, tz, after, is_debian_fixed)
        except OverflowError:
            if after >= _NEAR_MIN:  # past year 9999 in UTC or in the zone: no fire left
                return None
            # after's wall time is before year 1, so every wall time from 0001-01-01 00:00
            # is a later instant (no zone has DST there): the first of them is the answer
            found = _first_from(calendar, tz, _FIRST_WALL, None, is_debian_fixed)
    except OverflowError:
        return None
    if found is None:
        return None
    _, wall, fold = found
    return datetime(*wall, tzinfo=tz, fold=fold)


_NO_FIRE = datetime.min  # _in_steady_span's "no fire at all" (None means "ask the DST search")
_DENSE = timedelta(days=DENSE_DAYS)
_SPANS_FROM, _SPANS_UNTIL = datetime(2, 3, 1, tzinfo=_UTC), datetime(9998, 10, 1, tzinfo=_UTC)  # a span is worth finding for schedules that fire this often


def _in_steady_span(calendar: WallCalendar, tz: tzinfo, after: datetime) -> datetime | None:
    """The hot path away from transitions: inside a steady span, wall time is UTC plus one offset.

    Only for dense calendars (a fire at least every DENSE_DAYS days: sparse ones would search
    twice). Answers only when `after` and the fire both lie in one steady span (looked up, and
    found once when the fire is near); else None, and the full DST search decides.
    """
    after_utc = after if after.tzinfo is _UTC else after.astimezone(_UTC)
    if not _SPANS_FROM <= after_utc < _SPANS_UNTIL:  # a span's year-long scan would leave datetime's range
        return None
    span = cached_span(tz, after_utc)
    if span is None:
        offset = after.utcoffset()
        assert offset is not None
        wall = _next_wall_at(calendar, after_utc + offset)
        if wall is None or datetime(*wall, tzinfo=_UTC) - offset - after_utc > _DENSE:
            return None  # far away (or never): not worth finding a span for
        span = steady_span(tz, after_utc)
        if after_utc < span[0]:  # in the wall times a fall-back repeats
            return None
    local = after_utc + span[2]
    wall = calendar.next_wall(local.year, local.month, local.day, local.hour, local.minute, local.second + 1)
    if wall is None:
        return _NO_FIRE
    return datetime(*wall, tzinfo=tz) if wall < span[3] else None


def _next_wall_at(calendar: WallCalendar, local: datetime) -> WallTime | None:
    return calendar.next_wall(local.year, local.month, local.day, local.hour, local.minute, local.second + 1)


def _next_in_zone(
    calendar: WallCalendar, tz: tzinfo, after: datetime, is_debian_fixed: bool
) -> Candidate | None:
    local = after if after.tzinfo is tz else after.astimezone(tz)
    own, other = local.utcoffset(), tz.utcoffset(_naive(local, 1 - local.fold))
    if other != own and after.tzinfo is tz:  # maybe a wall time in a gap: read it as an instant
        local = after.astimezone(_UTC).astimezone(tz)
        own, other = local.utcoffset(), tz.utcoffset(_naive(local, 1 - local.fold))
    assert own is not None and other is not None
    start = _fields_after(local)
    if other == own:  # the usual case: `after` is not inside a repeated hour
        return _first_from(calendar, tz, start, None, is_debian_fixed)
    after_utc = local.replace(tzinfo=None) - own
    if other > own:  # in the second pass
        if is_debian_fixed:  # skip the rest of it
            change_at = transition_after(tz, after_utc - (other - own), after_utc)
            start = max(start, _fields(change_at + other))
        return _first_from(calendar, tz, start, after_utc, is_debian_fixed)
    candidate = _first_from(calendar, tz, start, after_utc, is_debian_fixed)
    if is_debian_fixed:
        return candidate
    second_pass = _in_coming_second_pass(calendar, tz, after_utc, own, other, start)
    if second_pass is None or (candidate is not None and candidate[0] < second_pass[0]):
        return candidate
    return second_pass


def _in_coming_second_pass(
    calendar: WallCalendar, tz: tzinfo, after_utc: datetime, own: timedelta, other: timedelta,
    start: WallTime,
) -> Candidate | None:
    """Wall times already passed in the first pass of an overlap, repeating after it."""
    change_at = transition_after(tz, after_utc, after_utc + (own - other))
    wall = calendar.next_wall(*_fields(change_at + other))
    if wall is None or wall >= start:
        return None
    return datetime(*wall) - other, wall, 1


def _first_from(
    calendar: WallCalendar, tz: tzinfo, start: WallTime, after_utc: datetime | None,
    is_debian_fixed: bool,
) -> Candidate | None:
    """The first fire from the first matching wall time >= start.

    after_utc None: `after` is in no repeated hour, so every instant of a wall time >= start
    is later than it and needs no comparison.
    """
    for _ in range(_MAX_STEPS):
        wall = calendar.next_wall(*start)
        if wall is None:
            return None
        naive = datetime(*wall)
        first = tz.utcoffset(naive)
        second = tz.utcoffset(datetime(*wall, fold=1))
        assert first is not None and second is not None
        if first >= second:  # a unique or a repeated wall time
            if after_utc is None or naive - first > after_utc:
                return naive - first, wall, 0
            if first > second and not is_debian_fixed and naive - second > after_utc:
                return naive - second, wall, 1
            start = (*wall[:5], wall[5] + 1)
            continue
        change_at = transition_after(tz, naive - second, naive - first)  # a skipped wall time
        resume = _fields(change_at + second)
        if is_debian_fixed and (after_utc is None or change_at > after_utc):
            return change_at, resume, 0
        start = resume
    return None


def _naive(local: datetime, fold: int) -> datetime:
    return datetime(local.year, local.month, local.day, local.hour, local.minute, local.second,
                    local.microsecond, fold=fold)


def _fields_after(local: datetime) -> WallTime:
    """The wall-time search start just after `local` (second 60 means the next minute)."""
    return local.year, local.month, local.day, local.hour, local.minute, local.second + 1


def _fields(wall: datetime) -> WallTime:
    return wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second
