"""The expression grammar of APScheduler 3 cron fields, parsed into value sets.

Per field, a comma-separated list of: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n` (a to the
field's maximum); month names (jan-dec) and weekday names (mon-sun, Monday = 0) with
ranges; for `day` also `last` and `1st`..`5th` / `last` + weekday name ("last fri", with
spaces between the words, as APScheduler's pattern ' +' requires).
What APScheduler refuses we refuse too (steps wider than the range, backwards ranges,
values outside year 1970-9999, month 1-12, day 1-31, week 1-53, day_of_week 0-6,
hour 0-23, minute/second 0-59), and trailing text it silently ignores we reject (a
tab between "last" and "fri": APScheduler reads "last", the last day of the month).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from piko.errors import TriggerSpecError
from piko.triggers.validate import MAX_SPEC_CHARS, shown

FIELD_ORDER = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
LIMITS = {"year": (1970, 9999), "month": (1, 12), "day": (1, 31), "week": (1, 53),
          "day_of_week": (0, 6), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
WEEKDAYS = "mon tue wed thu fri sat sun".split()
POSITIONS = ("1st", "2nd", "3rd", "4th", "5th", "last")
_NAMED = {"month": (MONTHS, 1), "day_of_week": (WEEKDAYS, 0)}  # names, number of the first
_SEPARATOR = re.compile(" *, *")
_ALL = re.compile(r"\*(?:/(\d+))?", re.ASCII)
_NUMBERS = re.compile(r"(\d+)(?:-(\d+))?(?:/(\d+))?", re.ASCII)
_NAMES = re.compile(r"([a-z]+)(?:-([a-z]+))?", re.ASCII)
_POSITION = re.compile(r"(1st|2nd|3rd|4th|5th|last) +([a-z]+)", re.ASCII)
_MAX_DIGITS = 6


@dataclass(frozen=True, slots=True)
class FieldExprs:
    """One parsed field: its normalised text and what it allows."""

    text: str
    values: frozenset[int]
    is_all: bool = False  # contains a plain '*'
    is_last_day: bool = False
    positions: tuple[tuple[int, int], ...] = ()  # day only: (POSITIONS index, weekday Mon=0)


def parse_field_value(name: str, value: object, source: object) -> FieldExprs:
    """Parse the value of field `name` (an int or a string) as APScheduler 3 would."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        _fail(source, name, f"{type(value).__name__} {shown(value)} is not an int or a string")
    if isinstance(value, int) and abs(value) >= 10**_MAX_DIGITS:  # before str(): 10**5000 raises
        _fail(source, name, f"{shown(value)} is outside {LIMITS[name][0]}-{LIMITS[name][1]}")
    if isinstance(value, str) and len(value) > MAX_SPEC_CHARS:  # before strip() and lower() copy it
        _fail(source, name, f"text of {len(value)} characters is too long (at most {MAX_SPEC_CHARS})")
    raw_items = _SEPARATOR.split(str(value).strip().lower())
    items = [" ".join(raw.split()) for raw in raw_items]
    values: set[int] = set()
    positions: list[tuple[int, int]] = []
    for raw, item in zip(raw_items, items, strict=True):
        if name == "day" and item == "last":
            continue
        # on the raw text: APScheduler's "last +fri" takes spaces only ("last\tfri" is "last")
        match = _POSITION.fullmatch(raw.strip()) if name == "day" else None
        if match:
            positions.append((POSITIONS.index(match[1]), _name_number(match[2], WEEKDAYS, 0, name, source)))
        elif name == "day" and _POSITION.fullmatch(item):
            _fail(source, name, f"{shown(raw.strip())} has a tab or line break between its words; "
                  f"write {item!r} (APScheduler reads it as 'last' or refuses it)")
        else:
            # APScheduler matches each item with a '$'-anchored pattern: one trailing LF passes,
            # any other tab or line break is refused, so it is refused here too
            if any(c in (raw[:-1] if raw.endswith("\n") else raw) for c in "\t\n\r\x0b\x0c"):
                _fail(source, name, f"{shown(raw)} holds a tab or line break; separate items with ',' "
                      "and spaces")
            values.update(_parse_item(item, name, source))
    return FieldExprs(
        text=",".join(items),
        values=frozenset(values),
        is_all="*" in items,
        is_last_day="last" in items and name == "day",
        positions=tuple(sorted(set(positions))),
    )


def _parse_item(item: str, name: str, source: object) -> range:
    low, high = LIMITS[name]
    match = _ALL.fullmatch(item)
    if match:
        step = _step(match[1], high - low, name, source)
        return range(low, high + 1, step)
    match = _NUMBERS.fullmatch(item)
    if match:
        return _numbers(match[1], match[2], match[3], name, source)
    match = _NAMES.fullmatch(item) if name in _NAMED else None
    if match:
        names, first_number = _NAMED[name]
        first = _name_number(match[1], names, first_number, name, source)
        last = _name_number(match[2], names, first_number, name, source) if match[2] else first
        if first > last:
            _fail(source, name, f"range {shown(item)} runs backwards; write low-high")
        return range(first, last + 1)
    _fail(source, name, f"{shown(item)} is not an expression; allowed: {_allowed(name)}")


def _numbers(first_text: str, last_text: str | None, step_text: str | None,
             name: str, source: object) -> range:
    low, high = LIMITS[name]
    first = _number(first_text, name, source)
    last = first if last_text is None and step_text is None else high
    if last_text is not None:
        last = _number(last_text, name, source)
        if first > last:
            _fail(source, name, f"range {first}-{last} runs backwards; write low-high")
    # APScheduler measures a step against (last or max) - first, so for it 0-0/n spans the
    # whole field while 5-5/n spans nothing: 0-0/n is accepted (n up to the field's width)
    # and means just 0, 5-5/n is refused. We accept and refuse exactly the same.
    span = (last if last_text is None or last else high) - first
    step = _step(step_text, span, name, source) if step_text is not None else 1
    return range(first, last + 1, step)


def _number(text: str, name: str, source: object) -> int:
    low, high = LIMITS[name]
    digits = text.lstrip("0") or "0"  # leading zeros are allowed, as int() allows them
    number = int(digits) if len(digits) <= _MAX_DIGITS else high + 1
    if not low <= number <= high:
        _fail(source, name, f"{_short(text)} is outside {low}-{high}")
    return number


def _step(text: str | None, span: int, name: str, source: object) -> int:
    if text is None:
        return 1
    digits = text.lstrip("0") or "0"
    step = int(digits) if len(digits) <= _MAX_DIGITS else span + 1
    if step < 1:
        _fail(source, name, f"step {_short(text)} must be at least 1")
    if step > span:
        _fail(source, name, f"step {_short(text)} is wider than the range it divides ({span})")
    return step


def _short(digits: str) -> str:
    """Digit text for a message, bounded: a 990-digit number shows its size instead."""
    return digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"


def _name_number(text: str, names: list[str], first_number: int, name: str, source: object) -> int:
    if text in names:
        return names.index(text) + first_number
    _fail(source, name, f"{shown(text)} is not a name; use {names[0]}..{names[-1]}")


def _allowed(name: str) -> str:
    low, high = LIMITS[name]
    allowed = f"*, */n, a, a-b, a-b/n, a/n with {low}-{high}"
    if name in _NAMED:
        names = _NAMED[name][0]
        allowed += f", names {names[0]}..{names[-1]} and name ranges"
    if name == "day":
        allowed += ", last, 1st..5th or last + weekday (e.g. 'last fri')"
    return allowed + "; comma-separated lists"


def _fail(source: object, name: str, reason: str) -> NoReturn:
    raise TriggerSpecError(source, reason, f"cron field '{name}'")
