"""APScheduler 3 style cron dicts ({"day_of_week": "mon-fri", "hour": 9}) as triggers.

Fields year month day week day_of_week hour minute second, all ANDed; day_of_week 0 is
Monday. Defaults exactly as APScheduler 3: fields less significant than the least
significant given field take their minimum, unset fields between given ones stay '*'.
start_date and end_date are inclusive. DST: plain wall-clock matching (a skipped wall time
never fires, a repeated one fires in both passes), computed from scratch on every call,
so there is no carry across an offset change (APScheduler issue #606). The expression
grammar lives in field_exprs.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

from piko.errors import TriggerSpecError
from piko.triggers.field_exprs import FIELD_ORDER, FieldExprs, parse_field_value
from piko.triggers.firing import next_instant
from piko.triggers.timeparse import parse_instant
from piko.triggers.validate import check_after, check_jitter, check_keys
from piko.triggers.wallclock import LENGTH_MASKS, WallCalendar, month_shape, weekday_masks
from piko.triggers.zones import Zone, resolve_zone

DEFAULTS = {"year": "*", "month": "1", "day": "1", "week": "*", "day_of_week": "*",
            "hour": "0", "minute": "0", "second": "0"}
OPTION_KEYS = ("start_date", "end_date", "timezone", "jitter")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FieldDays:
    """APScheduler's day rule: day AND day_of_week AND week, for one month at a time."""

    dom_mask: int
    is_last_day: bool
    positions: tuple[tuple[int, int], ...]  # (0..4 for 1st..5th or 5 for last, weekday Mon=0)
    dow_by_first: tuple[int, ...]
    weeks: frozenset[int] | None

    def day_mask(self, year: int, month: int) -> int:
        first, days = month_shape(year, month)
        mask = self.dom_mask
        if self.is_last_day:
            mask |= 1 << days
        for nth, weekday in self.positions:
            first_hit = (weekday - first) % 7 + 1
            day = first_hit + 7 * (nth if nth < 5 else (days - first_hit) // 7)
            if day <= days:
                mask |= 1 << day
        mask &= self.dow_by_first[first] & LENGTH_MASKS[days]
        if self.weeks is not None and mask:
            mask &= _iso_week_mask(year, month, self.weeks)
        return mask


@lru_cache(maxsize=1024)
def _iso_week_mask(year: int, month: int, weeks: frozenset[int]) -> int:
    days = month_shape(year, month)[1]
    return sum(1 << day for day in range(1, days + 1)
               if date(year, month, day).isocalendar()[1] in weeks)


@dataclass(frozen=True, slots=True)
class CronFieldsTrigger:
    """An APScheduler-style cron dict in a zone; equal when the effective fields are."""

    fields: tuple[tuple[str, str], ...]  # all eight, after defaulting, in FIELD_ORDER
    zone: Zone
    start_at: datetime | None = None  # UTC
    end_at: datetime | None = None  # UTC
    jitter: timedelta | None = None  # carried for the kernel, which applies it
    given: tuple[str, ...] = field(default=(), compare=False, repr=False)
    calendar: WallCalendar | None = field(default=None, compare=False, repr=False)

    def next_fire_time(self, after: datetime) -> datetime | None:
        check_after(after)  # before comparing: naive < aware would be a TypeError
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _MICROSECOND  # start_at is inclusive
        assert self.calendar is not None
        found = next_instant(self.calendar, self.zone, after)
        if found is None or (self.end_at is not None and found > self.end_at):
            return None
        return found

    def describe(self) -> str:
        shown = ", ".join(f"{name}={text!r}" for name, text in self.fields if name in self.given)
        bounds = "".join(
            f" {label} {when.isoformat()}"
            for label, when in (("from", self.start_at), ("until", self.end_at))
            if when is not None
        )
        return f"cron {{{shown}}}{bounds} {self.zone.name}"

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={text!r}" for name, text in self.fields if name in self.given)
        extra = "".join(
            f", {label}={value!r}"
            for label, value in (("start_at", self.start_at), ("end_at", self.end_at),
                                 ("jitter", self.jitter))
            if value is not None
        )
        return f"CronFieldsTrigger({given}, tz={self.zone.name!r}{extra})"


def parse_cron_fields(
    spec: Mapping[str, object], zone: Zone, source: object = None
) -> CronFieldsTrigger:
    """Build a trigger from an APScheduler 3 CronTrigger keyword dict."""
    source = spec if source is None else source
    check_keys(spec, (*FIELD_ORDER, *OPTION_KEYS), "cron")
    if spec.get("timezone") is not None:
        zone = resolve_zone(spec["timezone"], source)
    given = tuple(name for name in FIELD_ORDER if spec.get(name) is not None)
    if not given:
        raise TriggerSpecError(
            source,
            f"no cron field given; set at least one of {', '.join(FIELD_ORDER)} "
            "(APScheduler would fire every second)",
            "cron fields",
        )
    exprs = {name: parse_field_value(name, _effective(name, given, spec), source)
             for name in FIELD_ORDER}
    start_at, end_at = _bounds(spec, zone, source)
    return CronFieldsTrigger(
        fields=tuple((name, exprs[name].text) for name in FIELD_ORDER),
        zone=zone,
        start_at=start_at,
        end_at=end_at,
        jitter=check_jitter(spec.get("jitter"), source),
        given=given,
        calendar=_calendar(exprs),
    )


def _effective(name: str, given: tuple[str, ...], spec: Mapping[str, object]) -> object:
    if name in given:
        return spec[name]
    last_given = max(FIELD_ORDER.index(each) for each in given)
    return DEFAULTS[name] if FIELD_ORDER.index(name) > last_given else "*"


def _bounds(
    spec: Mapping[str, object], zone: Zone, source: object
) -> tuple[datetime | None, datetime | None]:
    start_at, end_at = (
        None if spec.get(key) is None
        else parse_instant(spec[key], zone, field=key, spec=source)
        for key in ("start_date", "end_date")
    )
    if start_at is not None and end_at is not None and end_at < start_at:
        raise TriggerSpecError(
            source, f"end_date {end_at.isoformat()} is before start_date {start_at.isoformat()}, "
            "so the schedule could never fire (APScheduler accepts it silently)", "end_date",
        )
    return start_at, end_at


def _calendar(exprs: Mapping[str, FieldExprs]) -> WallCalendar:
    day = exprs["day"]
    week = exprs["week"]
    days = FieldDays(
        dom_mask=sum(1 << value for value in day.values),
        is_last_day=day.is_last_day,
        positions=day.positions,
        dow_by_first=weekday_masks(exprs["day_of_week"].values),
        weeks=None if week.is_all else frozenset(week.values),
    )
    year = exprs["year"]
    return WallCalendar(
        months=tuple(sorted(exprs["month"].values)),
        day_rule=days,
        hours=tuple(sorted(exprs["hour"].values)),
        minutes=tuple(sorted(exprs["minute"].values)),
        seconds=tuple(sorted(exprs["second"].values)),
        years=None if year.is_all else tuple(sorted(year.values)),
    )
