"""Wall-clock calendar search: the first wall time at or after a start that matches.

Knows nothing about zones (firing.py maps wall times to instants). Every field is a
lookup table `table[v]` = smallest allowed value >= v (or -1), and days are bitmasks
(bit d = day d), so one search is a handful of table reads. Which days match is the
`DayRule`'s business (crontab's OR/AND of day-of-month and day-of-week, or
APScheduler's ANDed fields). Years whose shape (weekday of 1 January, leap, previous
year leap) can never match are skipped in O(1), and at most YEAR_HORIZON candidate
years are tried, so a spec that can never fire (`0 0 31 2 *`) returns None quickly.
"""

from __future__ import annotations

from bisect import bisect_left
from calendar import isleap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import MAXYEAR, date
from functools import lru_cache
from typing import Protocol

YEAR_HORIZON = 400  # the Gregorian calendar repeats every 400 years
DENSE_DAYS = 4  # a calendar firing at least this often gets firing.py's steady-span shortcut
_MASK_MEMO = 512
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
LENGTH_MASKS = tuple(((1 << (n + 1)) - 1) & ~1 for n in range(32))  # bits 1..n
WallTime = tuple[int, int, int, int, int, int]
YearShape = tuple[int, bool, bool]  # weekday of 1 January (Mon=0), is leap, previous is leap


class DayRule(Protocol):
    """Which days of a month match: bit d of the mask is day d (1..31, never past month end)."""

    def day_mask(self, year: int, month: int) -> int: ...


@lru_cache(maxsize=4096)
def month_shape(year: int, month: int) -> tuple[int, int]:
    """(weekday of the 1st with Monday = 0, number of days)."""
    days = 29 if month == 2 and isleap(year) else _DAYS_IN_MONTH[month]
    return date(year, month, 1).weekday(), days


@lru_cache(maxsize=1024)
def year_shape(year: int) -> YearShape:
    return date(year, 1, 1).weekday(), isleap(year), isleap(year - 1)


@lru_cache(maxsize=1)
def shape_examples() -> dict[YearShape, int]:
    """One real year for each year shape; every shape occurs within one 400-year cycle."""
    examples: dict[YearShape, int] = {}
    for year in range(2001, 2401):
        examples.setdefault(year_shape(year), year)
    return examples


def next_table(values: Iterable[int], size: int) -> tuple[int, ...]:
    """t[v] = the smallest allowed value >= v, or -1; t[size] = -1 so v + 1 may overflow."""
    allowed = set(values)
    table = [-1] * (size + 1)
    upcoming = -1
    for value in range(size - 1, -1, -1):
        if value in allowed:
            upcoming = value
        table[value] = upcoming
    return tuple(table)


@dataclass(frozen=True, slots=True)
class WallCalendar:
    """Field sets for years, months, days (via the rule), hours, minutes and seconds."""

    months: tuple[int, ...]
    day_rule: DayRule
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]
    years: tuple[int, ...] | None = None  # sorted allowed years; None = any year
    _tables: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    _shapes: frozenset[YearShape] = field(init=False, repr=False, compare=False)
    is_dense: bool = field(init=False, repr=False, compare=False)  # fires at most DENSE_DAYS apart
    _is_every_day: bool = field(init=False, repr=False, compare=False)  # any year, month and day
    _masks: dict[int, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        tables = (
            next_table(self.months, 13),
            next_table(self.hours, 24),
            next_table(self.minutes, 60),
            next_table(self.seconds, 60),
        )
        object.__setattr__(self, "_tables", tables)
        shapes = frozenset(
            shape
            for shape, example in shape_examples().items()
            if any(self.day_rule.day_mask(example, month) for month in self.months)
        )
        object.__setattr__(self, "_shapes", shapes)
        gap = self._max_day_gap()
        object.__setattr__(self, "is_dense", self.years is None and gap <= DENSE_DAYS)
        object.__setattr__(self, "_is_every_day", self.years is None and gap == 1)

    def _max_day_gap(self) -> int:
        """The longest run of days without a fire over two sample years (32 if a month has none)."""
        if len(self.months) < 12:
            return 32
        gap = last = 0
        for year in (2026, 2027):
            for month in range(1, 13):
                mask, days = self.day_rule.day_mask(year, month), month_shape(year, month)[1]
                if not mask:
                    return 32
                for day in range(1, days + 1):
                    last += 1
                    if mask >> day & 1:
                        gap, last = max(gap, last), 0
        return gap

    def next_wall(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> WallTime | None:
        """The first matching wall time >= the given one (s may be 60: "the next minute")."""
        if self._is_every_day or (self.years is None and self._tables[0][mo] == mo and self._day_mask(y, mo) >> d & 1):
            found = self._time_at_or_after(h, mi, s)  # the common case: later the same day
            if found is not None:
                return y, mo, d, found[0], found[1], found[2]
        return self._search(y, mo, d, h, mi, s)

    def _search(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> WallTime | None:
        if not self._shapes:
            return None
        year = self._allowed_year(y)
        if year == -1:
            return None
        if year != y:
            mo, d, h, mi, s = 1, 1, 0, 0, 0
        found = self._in_year(year, mo, d, h, mi, s)
        for _ in range(YEAR_HORIZON):
            if found is not None:
                return found
            year = self._allowed_year(year + 1)
            if year == -1:
                return None
            if year_shape(year) in self._shapes:
                found = self._in_year(year, 1, 1, 0, 0, 0)
        return found

    def _day_mask(self, year: int, month: int) -> int:
        """The day rule's mask, memoised per calendar (a few months are asked again and again)."""
        key = year * 13 + month
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= _MASK_MEMO:
                self._masks.clear()
            mask = self._masks[key] = self.day_rule.day_mask(year, month)
        return mask

    def _allowed_year(self, year: int) -> int:
        """The first allowed year >= year, or -1."""
        if self.years is None:
            return year if year <= MAXYEAR else -1
        index = bisect_left(self.years, year)
        return self.years[index] if index < len(self.years) else -1

    def _in_year(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> WallTime | None:
        next_month = self._tables[0]
        while True:
            month = next_month[mo]
            if month < 0:
                return None
            if month != mo:
                d, h, mi, s = 1, 0, 0, 0
            days = self._day_mask(y, month) >> d << d
            if days & (1 << d):
                found = self._time_at_or_after(h, mi, s)
                if found is not None:
                    return (y, month, d, *found)
                days &= days - 1
            if days:
                day = (days & -days).bit_length() - 1
                return (y, month, day, self.hours[0], self.minutes[0], self.seconds[0])
            mo, d, h, mi, s = month + 1, 1, 0, 0, 0

    def _time_at_or_after(self, h: int, mi: int, s: int) -> tuple[int, int, int] | None:
        _, next_hour, next_minute, next_second = self._tables
        hour = next_hour[h]
        if hour == h:
            minute = next_minute[mi]
            if minute == mi:
                second = next_second[s]
                if second >= 0:
                    return h, mi, second
                minute = next_minute[mi + 1]
            if minute >= 0:
                return h, minute, self.seconds[0]
            hour = next_hour[h + 1]
        if hour >= 0:
            return hour, self.minutes[0], self.seconds[0]
        return None



def weekday_masks(weekdays: Iterable[int]) -> tuple[int, ...]:
    """Indexed by the weekday of the 1st (Mon=0): the days 1..31 falling on `weekdays` (Mon=0)."""
    wanted = frozenset(weekdays)
    return tuple(
        sum(1 << day for day in range(1, 32) if (first + day - 1) % 7 in wanted)
        for first in range(7)
    )
