"""Interval triggers: fire at start + k * interval, in elapsed time.

Elapsed, not wall-clock: a one-day interval fires an hour earlier or later on the wall
clock after a DST change, as APScheduler's IntervalTrigger does. The interval is the sum
of weeks, days, hours, minutes and seconds (ints or floats, to the microsecond). end_date
is inclusive.

Without start_date the anchor is "when the schedule was created", which only the caller
knows: it passes `default_start` (reconcile passes the row's created_at, `piko next` its
--after). Without that either, the anchor is the Unix epoch in UTC, not the time of the
call: triggers read no clock (STYLE.md), so equal specs give equal triggers and the same
fire times on every machine ({"minutes": 10} then fires at :00, :10, ... UTC).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from piko.errors import TriggerSpecError
from piko.triggers.timeparse import localize, parse_instant, to_utc
from piko.triggers.validate import check_after, check_jitter, check_keys, check_number, shown
from piko.triggers.zones import UTC, Zone, resolve_zone

UNITS = ("weeks", "days", "hours", "minutes", "seconds")
OPTION_KEYS = ("start_date", "end_date", "timezone", "jitter")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IntervalTrigger:
    """Every `interval` from `start_at` (UTC), up to `end_at` inclusive."""

    interval: timedelta
    start_at: datetime
    zone: Zone
    end_at: datetime | None = None
    jitter: timedelta | None = None  # carried for the kernel, which applies it

    def next_fire_time(self, after: datetime) -> datetime | None:
        check_after(after)
        try:
            if after < self.start_at:
                fire_at = self.start_at
            else:
                fire_at = self.start_at + ((after - self.start_at) // self.interval + 1) * self.interval
            if self.end_at is not None and fire_at > self.end_at:
                return None
            return fire_at.astimezone(self.zone.tzinfo)
        except OverflowError:  # the next fire is past year 9999 in UTC or in the zone: none left
            return None

    def describe(self) -> str:
        until = f" until {self.end_at.isoformat()}" if self.end_at is not None else ""
        return f"every {_duration(self.interval)} from {self.start_at.isoformat()}{until} {self.zone.name}"

    def __repr__(self) -> str:
        until = f", end_at={self.end_at!r}" if self.end_at is not None else ""
        jitter = f", jitter={self.jitter!r}" if self.jitter is not None else ""
        return (f"IntervalTrigger({_duration(self.interval)}, start_at={self.start_at!r}"
                f"{until}, tz={self.zone.name!r}{jitter})")


def parse_interval(
    spec: object, zone: Zone, default_start: datetime | None = None
) -> IntervalTrigger:
    if not isinstance(spec, Mapping):
        raise TriggerSpecError(
            spec, f"{type(spec).__name__} {shown(spec)} is not a dict; give e.g. {{'minutes': 10}}",
            "interval",
        )
    check_keys(spec, (*UNITS, *OPTION_KEYS), "interval")
    if spec.get("timezone") is not None:
        zone = resolve_zone(spec["timezone"], spec)
    interval = _interval(spec)
    if default_start is not None and default_start.tzinfo is None:
        default_start = localize(default_start, zone)  # in the spec's own timezone, if it has one
    start_at = _when(spec, "start_date", zone)
    if start_at is None:
        start_at = to_utc(default_start or EPOCH, zone, field="default_start", spec=spec)
    end_at = _when(spec, "end_date", zone)
    if end_at is not None and end_at < start_at:
        raise TriggerSpecError(
            spec, f"end_date {end_at.isoformat()} is before the start {start_at.isoformat()}, so "
            "the schedule could never fire (APScheduler accepts it silently)", "end_date",
        )
    return IntervalTrigger(interval, start_at, zone, end_at, check_jitter(spec.get("jitter"), spec))


def _interval(spec: Mapping[str, object]) -> timedelta:
    amounts = {unit: check_number(spec[unit], spec, unit) for unit in UNITS if unit in spec}
    if not amounts:
        raise TriggerSpecError(spec, f"no length given; set one or more of {', '.join(UNITS)}", "interval")
    try:
        interval = timedelta(**amounts)
    except OverflowError:
        raise TriggerSpecError(
            spec, f"{shown(amounts)} is longer than {timedelta.max.days} days", "interval"
        ) from None
    if interval <= timedelta(0):
        raise TriggerSpecError(
            spec, f"{shown(amounts)} adds up to {interval}; the interval must be at least 1 microsecond",
            "interval",
        )
    return _one_of(interval)


@functools.lru_cache(maxsize=1024)
def _one_of(length: timedelta) -> timedelta:
    """Equal lengths as one object: a table of interval schedules repeats a few lengths, and
    each trigger keeps its own for as long as its schedule runs."""
    return length


def _when(spec: Mapping[str, object], key: str, zone: Zone) -> datetime | None:
    value = spec.get(key)
    return None if value is None else parse_instant(value, zone, field=key, spec=spec)


def _duration(interval: timedelta) -> str:
    seconds = interval.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
