"""Crontab strings (Vixie/ISC syntax) as triggers.

Five fields (minute hour day-of-month month day-of-week), or six with a leading seconds
field; `*`, `a`, `a-b`, `*/n`, `a-b/n` and lists; month and weekday names in any case; 0
and 7 are Sunday; @yearly @annually @monthly @weekly @daily @midnight @hourly. As in
cron, day-of-month and day-of-week are ORed when both are restricted, and ANDed when either
field's text starts with '*'. DST: 5-field jobs follow Debian cron (firing.py); a job is
fixed-time when neither its minute nor its hour field starts with '*'. 6-field strings use
plain wall-clock matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

from piko.errors import TriggerSpecError
from piko.triggers.firing import next_instant
from piko.triggers.validate import check_text, shown
from piko.triggers.wallclock import LENGTH_MASKS, WallCalendar, month_shape, weekday_masks
from piko.triggers.zones import Zone

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = {name: number for number, name in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
DAY_NAMES = {name: number for number, name in enumerate("sun mon tue wed thu fri sat".split())}
FIELDS_TEXT = "minute hour day-of-month month day-of-week"


@dataclass(frozen=True, slots=True)
class TextField:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None

    def allowed(self) -> str:
        span = f"{self.low}-{self.high}"
        if self.names is None:
            return span
        names = list(self.names)
        return f"{span} or {names[0]}-{names[-1]}"


SECOND = TextField("second", 0, 59)
MINUTE = TextField("minute", 0, 59)
HOUR = TextField("hour", 0, 23)
DAY_OF_MONTH = TextField("day-of-month", 1, 31)
MONTH = TextField("month", 1, 12, MONTH_NAMES)
DAY_OF_WEEK = TextField("day-of-week", 0, 7, DAY_NAMES)


@dataclass(frozen=True, slots=True)
class CrontabDays:
    """Crontab's day rule: day-of-month OR day-of-week, or AND when either starts with '*'."""

    dom_mask: int
    dow_by_first: tuple[int, ...]
    is_and: bool

    def day_mask(self, year: int, month: int) -> int:
        first, days = month_shape(year, month)
        dow = self.dow_by_first[first]
        mask = self.dom_mask & dow if self.is_and else self.dom_mask | dow
        return mask & LENGTH_MASKS[days]


@dataclass(frozen=True, slots=True)
class CronTextTrigger:
    """A crontab string in a zone; equal when the text (whitespace aside) and zone are."""

    expr: str
    zone: Zone
    calendar: WallCalendar = field(compare=False, repr=False)
    is_debian_fixed: bool = field(compare=False, repr=False)

    @property
    def jitter(self) -> timedelta | None:
        """Always None: crontab text has no jitter; here so every trigger has `.jitter`."""
        return None

    def next_fire_time(self, after: datetime) -> datetime | None:
        return next_instant(self.calendar, self.zone, after, self.is_debian_fixed)

    def describe(self) -> str:
        return f"cron {self.expr!r} {self.zone.name}"

    def __repr__(self) -> str:
        return f"CronTextTrigger({self.expr!r}, tz={self.zone.name!r})"


def parse_crontab(text: object, zone: Zone, spec: object = None) -> CronTextTrigger:
    """Parse a crontab line or macro; TriggerSpecError names the field and what is allowed."""
    spec = text if spec is None else spec
    parts = check_text(text, spec, "cron expression", "a crontab string").split()
    expr = " ".join(parts)
    if len(parts) == 1 and parts[0].startswith("@"):
        macro = MACROS.get(parts[0].lower())
        if macro is None:
            raise TriggerSpecError(
                spec, f"unknown macro {shown(parts[0])}; use one of {', '.join(MACROS)}", "cron macro"
            )
        expr, parts = parts[0].lower(), macro.split()
    if len(parts) not in (5, 6):
        raise TriggerSpecError(
            spec,
            f"got {len(parts)} fields; give 5 ({FIELDS_TEXT}), 6 with seconds first, or a macro "
            f"({', '.join(MACROS)})",
            "cron expression",
        )
    seconds = parse_field(parts[0], SECOND, spec) if len(parts) == 6 else {0}
    minute, hour, dom, month, dow = parts[-5:]
    weekdays = {(day - 1) % 7 for day in parse_field(dow, DAY_OF_WEEK, spec)}  # Mon=0; 7 is 0
    days = CrontabDays(
        dom_mask=sum(1 << day for day in parse_field(dom, DAY_OF_MONTH, spec)),
        dow_by_first=weekday_masks(weekdays),
        is_and=dom.startswith("*") or dow.startswith("*"),
    )
    calendar = WallCalendar(
        months=tuple(sorted(parse_field(month, MONTH, spec))),
        day_rule=days,
        hours=tuple(sorted(parse_field(hour, HOUR, spec))),
        minutes=tuple(sorted(parse_field(minute, MINUTE, spec))),
        seconds=tuple(sorted(seconds)),
    )
    is_fixed = len(parts) == 5 and not minute.startswith("*") and not hour.startswith("*")
    return CronTextTrigger(expr, zone, calendar, is_fixed)


def parse_field(text: str, spec_field: TextField, spec: object) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec_field, spec))
    return values


def _parse_item(item: str, spec_field: TextField, spec: object) -> range:
    base, has_step, step_text = item.partition("/")
    if base == "*":
        low, high = spec_field.low, spec_field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec_field, spec), _value(last, spec_field, spec)
        if low > high:
            _fail(spec, spec_field, f"range {shown(base)} runs backwards; write low-high")
    else:
        low = high = _value(base, spec_field, spec)
        if has_step:
            _fail(spec, spec_field, f"{shown(item)}: a step needs a range; write */n or a-b/n")
    step = _step(step_text, spec_field, spec) if has_step else 1
    return range(low, high + 1, step)


def _value(text: str, spec_field: TextField, spec: object) -> int:
    if text.isascii() and text.isdigit():
        number = int(text) if len(text) < 8 else spec_field.high + 1
        if spec_field.low <= number <= spec_field.high:
            return number
        _fail(spec, spec_field, f"{text} is outside {spec_field.allowed()}")
    if spec_field.names is not None and text.lower() in spec_field.names:
        return spec_field.names[text.lower()]
    what = "empty value" if not text else f"{shown(text)} is not a number"
    _fail(spec, spec_field, f"{what}; allowed: *, {spec_field.allowed()}, ranges a-b, steps /n, lists")


def _step(text: str, spec_field: TextField, spec: object) -> int:
    if text.isascii() and text.isdigit() and len(text) < 8 and int(text) >= 1:
        return int(text)
    _fail(spec, spec_field, f"step {shown(text)} is not a whole number >= 1")


def _fail(spec: object, spec_field: TextField, reason: str) -> NoReturn:
    raise TriggerSpecError(spec, reason, f"cron field '{spec_field.name}'")
