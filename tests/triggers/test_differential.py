"""Differential tests against the libraries users come from (dev-only dependencies).

Crontab strings are compared with cronsim and croniter, outside DST (UTC and a zone
without DST). APScheduler dicts are compared with APScheduler 3.11 CronTrigger, also in
a DST zone, except where an offset change lies between `after` and the answers: there
APScheduler's known bugs (issue #606 class) and its gap rule make it differ on purpose.
Where the libraries disagree with cron itself, the cases are excluded and named below.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from piko.triggers import make_trigger

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
SEEDS = range(4)
CASES_PER_SEED = 300


def _field(rnd: random.Random, low: int, high: int) -> str:
    kind = rnd.random()
    if kind < 0.3:
        return "*"
    if kind < 0.45:
        return f"*/{rnd.randint(1, high - low + 1)}"
    first = rnd.randint(low, high - 1)
    last = rnd.randint(first + 1, high)  # never a-a/n: peers read it their own way (see the referee test below)
    if kind < 0.6:
        return str(first)
    if kind < 0.75:
        return f"{first}-{last}"
    if kind < 0.85:
        return f"{first}-{last}/{rnd.randint(1, 5)}"
    return ",".join(str(rnd.randint(low, high)) for _ in range(3))


def _crontab(rnd: random.Random, six: bool) -> str:
    fields = [_field(rnd, 0, 59), _field(rnd, 0, 23), _field(rnd, 1, 31), _field(rnd, 1, 12), _field(rnd, 0, 7)]
    return " ".join(([_field(rnd, 0, 59)] if six else []) + fields)


def _after(rnd: random.Random, tz: timezone | ZoneInfo = UTC, years: int = 30) -> datetime:
    base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rnd.randint(0, years * 31_536_000))
    return base.astimezone(tz)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_crontab_agrees_with_cronsim(seed: int, tz: str) -> None:
    cronsim = pytest.importorskip("cronsim")
    rnd = random.Random(seed)
    for _ in range(CASES_PER_SEED):
        expr, after = _crontab(rnd, six=rnd.random() < 0.3), _after(rnd, ZoneInfo(tz))
        expected = next(cronsim.CronSim(expr, after), None)
        assert make_trigger("cron", expr, tz).next_fire_time(after) == expected, (expr, after)


def _croniter_agrees_on_day_rule(expr: str) -> bool:
    """croniter ORs day-of-month and day-of-week even when one starts with '*/' (cron ANDs)."""
    dom, dow = expr.split()[-3], expr.split()[-1]
    return dom == "*" or dow == "*" or not (dom.startswith("*") or dow.startswith("*"))


@pytest.mark.parametrize("seed", SEEDS)
def test_crontab_agrees_with_croniter(seed: int) -> None:
    croniter = pytest.importorskip("croniter").croniter
    rnd = random.Random(100 + seed)
    checked = 0
    for _ in range(CASES_PER_SEED):
        six = rnd.random() < 0.3
        expr, after = _crontab(rnd, six), _after(rnd)
        if not _croniter_agrees_on_day_rule(expr):
            continue
        expected = croniter(expr, after, second_at_beginning=six).get_next(datetime)
        assert make_trigger("cron", expr).next_fire_time(after) == expected, (expr, after)
        checked += 1
    assert checked > CASES_PER_SEED // 3


def test_a_star_step_day_of_month_is_anded_with_day_of_week_as_in_cron() -> None:
    # cron: odd days that are Mondays (croniter ORs them; its cases are filtered out above)
    trigger = make_trigger("cron", "0 0 */2 * 1")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(6):
        nxt = trigger.next_fire_time(at)
        assert nxt is not None and nxt.day % 2 == 1 and nxt.weekday() == 0, nxt
        at = nxt


def _minutes_of(field: str) -> set[int]:
    """A crontab minute field `a-b/n` read as cron reads it (the referee; no peer involved)."""
    span, _, step = field.partition("/")
    first, _, last = span.partition("-")
    return set(range(int(first), int(last or first) + 1, int(step or 1)))


@pytest.mark.parametrize("field", ["5-5/10", "0-0/7", "59-59/2", "10-10/1"])
def test_a_one_value_range_with_a_step_is_that_one_value_as_in_cron(field: str) -> None:
    # Peers read `a-a/n` their own way, and differently from one release to the next (cronsim
    # read 5-5/10 as 5-59/10 before 2.9, croniter reads it as */10), so the referee is cron's rule.
    trigger = make_trigger("cron", f"{field} * * * *")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(5):
        nxt = trigger.next_fire_time(at)
        assert nxt is not None
        assert nxt.minute in _minutes_of(field) and nxt.second == 0
        assert all(m not in _minutes_of(field) for m in _minutes_between(at, nxt))
        at = nxt


def _minutes_between(start: datetime, end: datetime) -> list[int]:
    """The minutes strictly between two instants, as minute-of-hour values."""
    probe = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    out = []
    while probe < end:
        out.append(probe.minute)
        probe += timedelta(minutes=1)
    return out


# -- APScheduler dicts -----------------------------------------------------------------

LIMITS = {"year": (2026, 2031), "month": (1, 12), "day": (1, 31), "week": (1, 53), "day_of_week": (0, 6),
          "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
SPECIALS = {"day": ["last", "1st mon", "2nd tue,last thu", "last fri", "5th sun", "3rd wed,15"],
            "day_of_week": ["mon-fri", "sat,sun", "wed", "tue-thu"], "month": ["jan-mar", "dec", "feb,aug"]}


def _aps_value(rnd: random.Random, name: str) -> object:
    low, high = LIMITS[name]
    kind = rnd.random()
    if name == "year":  # bounded: APScheduler takes seconds to search up to 9999
        return rnd.choice(["2026-2031", 2027, "2026-2030/2", "2028,2030"])
    if name in SPECIALS and kind < 0.15:
        return rnd.choice(SPECIALS[name])
    if kind < 0.25:
        return "*" if kind < 0.2 else f"*/{rnd.randint(1, max(1, (high - low) // 2))}"
    first = rnd.randint(low, high - 1)
    last = rnd.randint(first + 1, high)
    if kind < 0.55:
        return rnd.randint(low, high)
    if kind < 0.7:
        return f"{first}-{last}"
    if kind < 0.8:
        return f"{first}-{last}/{rnd.randint(1, last - first)}"
    if kind < 0.85:
        return f"{first}/{rnd.randint(1, high - first)}"
    return ",".join(str(rnd.randint(low, high)) for _ in range(3))


def _offset_changes_between(tz: ZoneInfo, start: datetime, end: datetime) -> bool:
    return start.astimezone(tz).utcoffset() != end.astimezone(tz).utcoffset() or (end - start) > timedelta(days=150)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_field_dicts_agree_with_apscheduler(seed: int, tz: str) -> None:
    cron_trigger = pytest.importorskip("apscheduler.triggers.cron").CronTrigger
    zone = ZoneInfo(tz)
    rnd = random.Random(200 + seed)
    checked = 0
    for _ in range(CASES_PER_SEED):
        spec = {name: _aps_value(rnd, name) for name in LIMITS if rnd.random() < 0.35}
        if not spec:
            continue
        spec.setdefault("year", "2026-2031")
        after = _after(rnd, zone, years=5)
        ours = make_trigger("cron", spec, tz).next_fire_time(after)
        theirs = cron_trigger(timezone=zone, **spec).get_next_fire_time(None, after + timedelta(microseconds=1))
        if tz != "UTC" and (ours is None or theirs is None or _offset_changes_between(zone, after, max(ours, theirs))):
            continue  # APScheduler's DST handling differs by design or by bug; see test_cron_fields
        assert ours == theirs, (spec, after)
        checked += 1
    assert checked > CASES_PER_SEED // 4


@pytest.mark.parametrize(
    ("spec", "after", "ours", "theirs"),
    [
        # a skipped wall time: APScheduler returns the non-existent 02:30 EST (= 03:30 EDT)
        ({"hour": 2, "minute": 30}, datetime(2026, 3, 8, 1, tzinfo=NEW_YORK),
         datetime(2026, 3, 9, 2, 30, tzinfo=NEW_YORK), datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
        # in the second pass of a repeated hour, APScheduler answers a time before `after`
        ({"hour": 1, "minute": 30}, datetime(2026, 11, 1, 1, 45, tzinfo=NEW_YORK, fold=1),
         datetime(2026, 11, 2, 1, 30, tzinfo=NEW_YORK), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
    ],
)
def test_known_apscheduler_dst_differences(spec: dict, after: datetime, ours: datetime, theirs: datetime) -> None:
    cron_trigger = pytest.importorskip("apscheduler.triggers.cron").CronTrigger
    aps = cron_trigger(timezone=NEW_YORK, **spec).get_next_fire_time(None, after + timedelta(microseconds=1))
    assert aps is not None and aps.astimezone(UTC) == theirs
    assert make_trigger("cron", spec, "America/New_York").next_fire_time(after) == ours
