"""Every class of rejected input: a TriggerSpecError at build time, fast, saying what and why."""

from __future__ import annotations

import time
from datetime import tzinfo

import pytest

from piko.errors import ConfigError, TriggerSpecError
from piko.triggers import make_trigger, trigger_from_stored

HUGE = "1," * 500_000 + "1 * * * *"

CASES = [
    # (kind, spec, tz, field, fragments of the message)
    # -- crontab text
    ("cron", "61 * * * *", "UTC", "cron field 'minute'",
     ["invalid cron field 'minute': 61 is outside 0-59 in '61 * * * *'"]),
    ("cron", "0 24 * * *", "UTC", "cron field 'hour'", ["24 is outside 0-23"]),
    ("cron", "0 0 0 * *", "UTC", "cron field 'day-of-month'", ["0 is outside 1-31"]),
    ("cron", "0 0 * 13 *", "UTC", "cron field 'month'", ["13 is outside 1-12 or jan-dec"]),
    ("cron", "0 0 * * 8", "UTC", "cron field 'day-of-week'", ["8 is outside 0-7 or sun-sat"]),
    ("cron", "60 0 0 * * *", "UTC", "cron field 'second'", ["60 is outside 0-59"]),
    ("cron", "99999999999999999999 * * * *", "UTC", "cron field 'minute'", ["is outside 0-59"]),
    ("cron", "0 0 * foo *", "UTC", "cron field 'month'", ["'foo' is not a number", "jan-dec"]),
    ("cron", "mon * * * *", "UTC", "cron field 'minute'", ["'mon' is not a number"]),
    ("cron", "\u0661 * * * *", "UTC", "cron field 'minute'", ["is not a number"]),
    ("cron", "0 5-1 * * *", "UTC", "cron field 'hour'", ["'5-1' runs backwards"]),
    ("cron", "*/0 * * * *", "UTC", "cron field 'minute'", ["step '0' is not a whole number >= 1"]),
    ("cron", "5/15 * * * *", "UTC", "cron field 'minute'", ["a step needs a range", "a-b/n"]),
    ("cron", "1,,2 * * * *", "UTC", "cron field 'minute'", ["empty value"]),
    ("cron", "* * * *", "UTC", "cron expression", ["got 4 fields", "give 5 (minute hour"]),
    ("cron", "* * * * * * *", "UTC", "cron expression", ["got 7 fields"]),
    ("cron", "", "UTC", "cron expression", ["got 0 fields"]),
    ("cron", "@reboot", "UTC", "cron macro", ["unknown macro '@reboot'", "@hourly"]),
    ("cron", HUGE, "UTC", "cron expression", ["too long (at most 1000)"]),
    ("cron", 5, "UTC", "cron", ["int 5 is not a cron spec"]),
    ("cron", None, "UTC", "cron", ["NoneType None is not a cron spec"]),
    ("cron", {"cron": 5}, "UTC", "cron expression", ["int 5 is not a crontab string"]),
    ("cron", {"cron": "* * * * *", "hour": 1}, "UTC", "cron", ["takes no other keys", "'hour'"]),
    # -- APScheduler field dicts
    ("cron", {}, "UTC", "cron fields", ["no cron field given", "year, month"]),
    ("cron", {"minutes": 5}, "UTC", "key", ["unknown key 'minutes'", "takes year, month, day, week"]),
    ("cron", {str(i): i for i in range(100_000)}, "UTC", "key", ["(and 99997 more)"]),
    ("cron", {"hour": 24}, "UTC", "cron field 'hour'", ["24 is outside 0-23"]),
    ("cron", {"year": 1969}, "UTC", "cron field 'year'", ["1969 is outside 1970-9999"]),
    ("cron", {"minute": 1.5}, "UTC", "cron field 'minute'", ["float 1.5 is not an int or a string"]),
    ("cron", {"minute": float("nan")}, "UTC", "cron field 'minute'", ["float nan is not an int"]),
    ("cron", {"minute": True}, "UTC", "cron field 'minute'", ["bool True is not an int"]),
    ("cron", {"minute": [1, 2]}, "UTC", "cron field 'minute'", ["list [1, 2] is not an int"]),
    ("cron", {"minute": "*/60"}, "UTC", "cron field 'minute'", ["step 60 is wider than the range"]),
    ("cron", {"minute": "*/0"}, "UTC", "cron field 'minute'", ["step 0 must be at least 1"]),
    ("cron", {"hour": "every day"}, "UTC", "cron field 'hour'", ["'every day' is not an expression", "a-b/n"]),
    ("cron", {"day": "1st foo"}, "UTC", "cron field 'day'", ["'foo' is not a name", "mon..sun"]),
    ("cron", {"day": "first mon"}, "UTC", "cron field 'day'", ["is not an expression", "last fri"]),
    ("cron", {"day_of_week": "fri-mon"}, "UTC", "cron field 'day_of_week'", ["runs backwards"]),
    ("cron", {"day_of_week": "mon-fri/2"}, "UTC", "cron field 'day_of_week'", ["is not an expression"]),
    ("cron", {"day_of_week": 7}, "UTC", "cron field 'day_of_week'", ["7 is outside 0-6"]),
    ("cron", {"month": "janvier"}, "UTC", "cron field 'month'", ["'janvier' is not a name", "jan..dec"]),
    ("cron", {"hour": "x" * 5000}, "UTC", "cron field 'hour'", ["too long"]),
    ("cron", {"hour": 1, "start_date": "yesterday"}, "UTC", "start_date", ["'yesterday' is not a date"]),
    ("cron", {"hour": 1, "start_date": "2026-02-30"}, "UTC", "start_date", ["is not a valid date"]),
    ("cron", {"hour": 1, "start_date": "2026-02-01", "end_date": "2026-01-01"}, "UTC", "end_date",
     ["is before start_date"]),
    ("cron", {"hour": 1, "jitter": -1}, "UTC", "jitter", ["-1 is negative"]),
    ("cron", {"hour": 1, "timezone": "Mars/Olympus"}, "UTC", "time zone", ["unknown zone 'Mars/Olympus'"]),
    # -- interval
    ("interval", "10m", "UTC", "interval", ["str '10m' is not a dict"]),
    ("interval", {"minutes": 0}, "UTC", "interval", ["adds up to 0:00:00", "at least 1 microsecond"]),
    ("interval", {"seconds": 1e-9}, "UTC", "interval", ["adds up to 0:00:00"]),
    ("interval", {"minutes": -5}, "UTC", "minutes", ["-5 is negative"]),
    ("interval", {"minutes": float("nan")}, "UTC", "minutes", ["nan is not a finite number"]),
    ("interval", {"hours": float("inf")}, "UTC", "hours", ["inf is not a finite number"]),
    ("interval", {"minutes": "10"}, "UTC", "minutes", ["str '10' is not a number"]),
    ("interval", {"minutes": True}, "UTC", "minutes", ["bool True is not a number"]),
    ("interval", {"days": 1e20}, "UTC", "interval", ["is longer than 999999999 days"]),
    ("interval", {"minute": 10}, "UTC", "key", ["unknown key 'minute'", "takes weeks, days, hours"]),
    ("interval", {}, "UTC", "interval", ["no length given"]),
    ("interval", {"hours": 1, "start_date": "2026-02-01", "end_date": "2026-01-01"}, "UTC", "end_date",
     ["is before the start"]),
    # -- date
    ("date", {}, "UTC", "run_date", ["run_date is missing", "YYYY-MM-DD"]),
    ("date", {"run_date": "tomorrow"}, "UTC", "run_date", ["'tomorrow' is not a date", "YYYY-MM-DD"]),
    ("date", {"run_date": "2026-13-01"}, "UTC", "run_date", ["is not a valid date", "month must be in 1..12"]),
    ("date", {"run_date": "2026-01-01 10:00:00+25:00"}, "UTC", "run_date", ["is not a valid date"]),
    ("date", {"run_date": 1767225600}, "UTC", "run_date", ["int 1767225600 is not a date"]),
    ("date", {"run_date": "2026-01-01" + " " * 100}, "UTC", "run_date", ["is not a date"]),
    ("date", 3.5, "UTC", "run_date", ["float 3.5 is not a date spec"]),
    ("date", {"run_date": "2026-01-01", "when": 1}, "UTC", "key", ["unknown key 'when'"]),
    # -- zones and kinds
    ("cron", "* * * * *", "Mars/Olympus", "time zone", ["unknown zone 'Mars/Olympus'", "Europe/Berlin"]),
    ("cron", "* * * * *", "../../etc/passwd", "time zone", ["unknown zone"]),
    ("cron", "* * * * *", "", "time zone", ["'' is not an IANA zone name"]),
    ("cron", "* * * * *", "A" * 10_000, "time zone", ["is not an IANA zone name"]),
    ("cron", "* * * * *", 5, "time zone", ["int 5 is not a time zone"]),
    ("weekly", "* * * * *", "UTC", "schedule_type", ["unknown schedule type 'weekly'", "cron, interval, date"]),
]


@pytest.mark.parametrize(("kind", "spec", "tz", "field", "fragments"), CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_rejected_spec_names_field_value_and_what_is_allowed(
    kind: str, spec: object, tz: object, field: str, fragments: list[str]
) -> None:
    started = time.perf_counter()
    with pytest.raises(TriggerSpecError) as caught:
        make_trigger(kind, spec, tz)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert caught.value.field == field
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert elapsed < 0.05, f"took {elapsed * 1000:.1f} ms"


def test_errors_are_config_and_value_errors() -> None:
    with pytest.raises(ValueError):
        make_trigger("cron", "61 * * * *")
    with pytest.raises(ConfigError):
        make_trigger("cron", "61 * * * *")


@pytest.mark.parametrize(
    ("schedule_type", "stored", "fragment"),
    [
        ("cron", '{"minute": ', "not valid JSON"),
        ("cron", "[1, 2]", "JSON list is neither a string nor an object"),
        ("cron", "[" * 50_000, "too long"),
        ("cron", '"61 * * * *"', "61 is outside 0-59"),
        ("interval", "10 minutes", 'stored as a JSON object such as {"minutes": 10}'),
        ("date", '{"run_date": null}', "run_date is missing"),
        ("cron", "", "got 0 fields"),
    ],
)
def test_stored_garbage_is_a_spec_error(schedule_type: str, stored: str, fragment: str) -> None:
    with pytest.raises(TriggerSpecError, match=None) as caught:
        trigger_from_stored(schedule_type, stored, "UTC")
    assert fragment in str(caught.value)


def test_stored_expr_that_is_not_text_is_refused() -> None:
    with pytest.raises(TriggerSpecError, match="is not text"):
        trigger_from_stored("cron", 5, "UTC")  # type: ignore[arg-type]


class _NoOffset(tzinfo):
    def utcoffset(self, dt):  # type: ignore[override]
        return None

    def dst(self, dt):  # type: ignore[override]
        return None


class _Raising(_NoOffset):
    def utcoffset(self, dt):  # type: ignore[override]
        raise RuntimeError("offset table missing")


@pytest.mark.parametrize("tz", [_NoOffset(), _Raising()])
@pytest.mark.parametrize(("kind", "spec"), [("cron", "* * * * *"), ("interval", {"seconds": 5}),
                                            ("date", {"run_date": "2026-01-01 00:00:00"})])
def test_a_broken_tzinfo_is_refused_when_the_trigger_is_built(tz, kind, spec) -> None:
    with pytest.raises(TriggerSpecError, match="invalid time zone: tzinfo .* is not usable"):
        make_trigger(kind, spec, tz=tz)
