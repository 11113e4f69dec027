"""Properties of every trigger: next > after, the result matches, nothing in between, monotone.

Crontab strategies build the allowed sets first and render them as text, so the oracle
here never shares code with the parser. Around DST transitions, a minute-by-minute walk
over real instants (the definition of the semantics, written naively) is the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from piko.triggers import make_trigger  # noqa: E402

UTC = timezone.utc
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Sao_Paulo",
         "Asia/Kolkata", "Pacific/Chatham"]
FAST = settings(max_examples=150, deadline=None)
# (zone, instant of a DST transition) for the oracle walk
TRANSITIONS = [
    ("America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 3, 29, 1, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 10, 25, 1, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
]


@dataclass(frozen=True)
class Crontab:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # cron numbering, Sunday = 0
    is_and: bool
    is_fixed: bool  # Debian fixed-time (5 fields, minute and hour not starting with '*')

    def matches(self, local: datetime) -> bool:
        dom_ok = local.day in self.doms
        dow_ok = (local.weekday() + 1) % 7 in self.dows
        day_ok = dom_ok and dow_ok if self.is_and else dom_ok or dow_ok
        return (local.second in self.seconds and local.minute in self.minutes
                and local.hour in self.hours and local.month in self.months and day_ok)


@st.composite
def field(draw: st.DrawFn, low: int, high: int, near: tuple[int, int] | None = None) -> tuple[str, frozenset[int]]:
    kind = draw(st.sampled_from(["list", "range"] if near else ["star", "step", "list", "range"]))
    if kind == "star":
        return "*", frozenset(range(low, high + 1))
    if kind == "step":
        step = draw(st.integers(1, max(1, (high - low) // 2)))
        return f"*/{step}", frozenset(range(low, high + 1, step))
    lo, hi = near or (low, high)
    if kind == "range":
        first = draw(st.integers(lo, hi))
        last = draw(st.integers(first, hi))
        return f"{first}-{last}", frozenset(range(first, last + 1))
    values = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4))
    return ",".join(map(str, values)), frozenset(values)


@st.composite
def crontabs(draw: st.DrawFn, *, near_transition: bool = False) -> Crontab:
    six = draw(st.booleans()) and not near_transition  # the walk below steps in minutes
    seconds = draw(field(0, 59)) if six else ("0", frozenset({0}))
    minutes = draw(field(0, 59))
    hours = draw(field(0, 23, near=(0, 4) if near_transition else None))
    doms = draw(field(1, 31))
    months = draw(field(1, 12)) if not near_transition else ("*", frozenset(range(1, 13)))
    dows = draw(field(0, 6))
    parts = [minutes[0], hours[0], doms[0], months[0], dows[0]]
    return Crontab(
        text=" ".join(([seconds[0]] if six else []) + parts),
        seconds=seconds[1], minutes=minutes[1], hours=hours[1], doms=doms[1], months=months[1],
        dows=dows[1], is_and=doms[0].startswith("*") or dows[0].startswith("*"),
        is_fixed=not six and not minutes[0].startswith("*") and not hours[0].startswith("*"),
    )


instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1),
                        timezones=st.just(UTC))


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _is_gap_end(fire_at: datetime) -> bool:
    before = (fire_at - timedelta(seconds=1)).astimezone(fire_at.tzinfo)
    return before.utcoffset() < fire_at.utcoffset()


@FAST
@given(crontabs(), st.sampled_from(ZONES), instants)
def test_crontab_next_is_after_and_matches(spec: Crontab, zone: str, after: datetime) -> None:
    fire_at = make_trigger("cron", spec.text, zone).next_fire_time(after)
    if fire_at is None:
        return
    assert _utc(fire_at) > after
    local = _utc(fire_at).astimezone(ZoneInfo(zone))
    assert spec.matches(local) or (spec.is_fixed and _is_gap_end(local))


@FAST
@given(crontabs(), st.sampled_from(ZONES), instants, st.floats(0, 1))
def test_crontab_nothing_fires_between_after_and_next(
    spec: Crontab, zone: str, after: datetime, fraction: float
) -> None:
    trigger = make_trigger("cron", spec.text, zone)
    fire_at = trigger.next_fire_time(after)
    if fire_at is None:
        return
    between = after + (_utc(fire_at) - after) * fraction
    if between < _utc(fire_at):
        assert _utc(trigger.next_fire_time(between)) == _utc(fire_at)


@FAST
@given(crontabs(), st.sampled_from(ZONES), instants, st.timedeltas(timedelta(0), timedelta(days=40)))
def test_crontab_is_monotone(spec: Crontab, zone: str, after: datetime, later: timedelta) -> None:
    trigger = make_trigger("cron", spec.text, zone)
    first, second = trigger.next_fire_time(after), trigger.next_fire_time(after + later)
    if first is not None and second is not None:
        assert _utc(first) <= _utc(second)
    else:
        assert second is None


def _fixed_at(text: str, minutes: set[int], hours: set[int]) -> Crontab:
    every = frozenset(range(0, 32))
    return Crontab(text, frozenset({0}), frozenset(minutes), frozenset(hours), every, every, every,
                   is_and=True, is_fixed=True)


def _oracle(spec: Crontab, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Walk every minute: plain matching, plus Debian's rules for fixed-time jobs."""
    fires: list[datetime] = []
    instant = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    previous = (instant - timedelta(minutes=1)).astimezone(zone)
    while instant <= end:
        local = instant.astimezone(zone)
        jump = local.utcoffset() - previous.utcoffset()
        if not spec.is_fixed:
            is_fire = spec.matches(local)
        elif jump > timedelta(0):  # gap end: did a skipped wall time match?
            skipped = (previous.replace(tzinfo=None) + timedelta(minutes=1 + k) for k in range(jump // timedelta(minutes=1)))
            is_fire = spec.matches(local) or any(spec.matches(w) for w in skipped)
        else:
            second_pass = local.replace(fold=0).utcoffset() != local.utcoffset()
            is_fire = spec.matches(local) and not second_pass
        if is_fire:
            fires.append(instant)
        previous = local
        instant += timedelta(minutes=1)
    return fires


@settings(max_examples=80, deadline=None)
@given(crontabs(near_transition=True), st.sampled_from(TRANSITIONS), st.integers(-26 * 60, 60))
@example(_fixed_at("30 2 * * *", {30}, {2}), TRANSITIONS[0], -60)
@example(_fixed_at("15 2 * * *", {15}, {2}), TRANSITIONS[5], -60)
@example(_fixed_at("30 1 * * *", {30}, {1}), TRANSITIONS[1], -120)
@example(replace(_fixed_at("*/10 1 * * *", set(range(0, 60, 10)), {1}), is_fixed=False), TRANSITIONS[1], -20)
def test_crontab_matches_a_minute_by_minute_walk_across_dst(
    spec: Crontab, transition: tuple[str, datetime], minutes_before: int
) -> None:
    zone_name, change_at = transition
    start = change_at + timedelta(minutes=minutes_before)
    end = start + timedelta(hours=28)
    trigger = make_trigger("cron", spec.text, zone_name)
    got: list[datetime] = []
    current = trigger.next_fire_time(start)
    while current is not None and _utc(current) <= end:
        got.append(_utc(current))
        current = trigger.next_fire_time(current)
    assert got == _oracle(spec, ZoneInfo(zone_name), start, end)


# -- APScheduler-style dicts --------------------------------------------------------

FIELD_LIMITS = {"month": (1, 12), "day": (1, 31), "day_of_week": (0, 6), "hour": (0, 23),
                "minute": (0, 59), "second": (0, 59)}


@st.composite
def field_dicts(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, frozenset[int]]]:
    names = draw(st.lists(st.sampled_from(list(FIELD_LIMITS)), min_size=1, max_size=4, unique=True))
    spec, sets = {}, {}
    order = list(FIELD_LIMITS)
    last = max(order.index(name) for name in names)
    for name in order:
        low, high = FIELD_LIMITS[name]
        if name in names:
            spec[name], sets[name] = draw(field(low, high))
        elif order.index(name) > last and name != "day_of_week":
            sets[name] = frozenset({low})
        else:
            sets[name] = frozenset(range(low, high + 1))
    return spec, sets


@FAST
@given(field_dicts(), st.sampled_from(ZONES), instants)
def test_field_dict_next_is_after_matches_and_leaves_nothing_between(
    spec_sets: tuple[dict[str, str], dict[str, frozenset[int]]], zone: str, after: datetime
) -> None:
    spec, sets = spec_sets
    trigger = make_trigger("cron", spec, zone)
    fire_at = trigger.next_fire_time(after)
    if fire_at is None:
        return
    assert _utc(fire_at) > after
    local = _utc(fire_at).astimezone(ZoneInfo(zone))
    values = {"month": local.month, "day": local.day, "day_of_week": local.weekday(),
              "hour": local.hour, "minute": local.minute, "second": local.second}
    assert all(values[name] in sets[name] for name in sets)
    middle = after + (_utc(fire_at) - after) / 2
    if middle < _utc(fire_at):
        assert _utc(trigger.next_fire_time(middle)) == _utc(fire_at)


# -- intervals ------------------------------------------------------------------------


@FAST
@given(st.timedeltas(timedelta(seconds=1), timedelta(days=30)), instants, instants, st.sampled_from(ZONES))
def test_interval_fires_on_the_grid_just_after(
    every: timedelta, start: datetime, after: datetime, zone: str
) -> None:
    trigger = make_trigger("interval", {"seconds": every.total_seconds(), "start_date": start}, zone)
    fire_at = _utc(trigger.next_fire_time(after))
    assert fire_at > after
    assert (fire_at - start) % trigger.interval == timedelta(0)
    assert fire_at == start or fire_at - trigger.interval <= after
