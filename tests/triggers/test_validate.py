"""Hostile input: whatever is passed, make_trigger answers a trigger or a TriggerSpecError, fast.

Deep nesting, ints too long for str(), huge strings and containers, absurd jitter: each
is refused with a TriggerSpecError naming the field, in well under 50 ms, because checks
look at sizes first and messages show a bounded preview. Also: every trigger refuses a
naive `after` with the same ValueError, and every trigger has a `jitter`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from piko.errors import TriggerSpecError
from piko.triggers import make_trigger, trigger_from_stored, trigger_from_text

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

UTC = timezone.utc
HUGE_INT = 10**5000  # str() and repr() raise ValueError past 4300 digits


def nested_list(depth: int) -> list:
    outer: list = []
    current = outer
    for _ in range(depth):
        current.append([])
        current = current[0]
    return outer


def nested_dict(depth: int) -> dict:
    outer: dict = {}
    current = outer
    for _ in range(depth):
        current["a"] = {}
        current = current["a"]
    return outer


DEEP = nested_list(5000)  # repr() raises RecursionError


class Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


# -- the bounded preview in every message ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DEEP, "[[[[...]]]]"),
        (nested_dict(3000), "{'a': {'a': {'a': {...}}}}"),
        (HUGE_INT, "<int of about 5001 digits>"),
        (-HUGE_INT, "<int of about 5001 digits>"),
        (10**29, repr(10**29)),
        ("x" * 10**7, "'" + "x" * 76 + "..."),
        (list(range(10**6)), "[0, 1, 2, 3, ...]"),
        ({f"k{i}": i for i in range(10**5)}, "{'k0': 0, 'k1': 1, 'k2': 2, 'k3': 3, ...}"),
        ((1,), "(1,)"),
        (set(), "set()"),
        (frozenset({1}), "frozenset({1})"),
        (Unshowable(), "<Unshowable>"),
        ([Unshowable()], "<list>"),
    ],
    ids=["list-5000-deep", "dict-3000-deep", "10**5000", "-10**5000", "10**29", "str-1e7", "list-1e6",
         "dict-1e5", "tuple-1", "empty-set", "frozenset", "repr-raises", "repr-raises-inside"],
)
def test_preview_is_short_and_never_raises(value: object, expected: str) -> None:
    shown = TriggerSpecError.preview(value)
    assert shown == expected
    assert len(shown) <= 80


def test_spec_error_keeps_the_spec_and_shows_only_a_preview() -> None:
    error = TriggerSpecError(DEEP, "bad")
    assert error.spec is DEEP
    assert str(error) == "invalid schedule: bad in [[[[...]]]]"


def _signed_power_of_ten(exponent: int) -> int:
    return 10 ** abs(exponent) * (1 if exponent > 0 else -1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from([5000, -5000]).map(_signed_power_of_ten)  # Hypothesis reprs its strategies
    | st.sampled_from([10**100, -(10**100), 1e300, "*/5 * * * *", "2026-01-01"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["minute", "hour", "day", "minutes", "run_date", "jitter", "cron", "x"]),
        inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["cron", "interval", "date"]), json_values, json_values)
def test_any_json_like_value_gives_a_trigger_or_a_spec_error(kind: str, spec: object, tz: object) -> None:
    for args in ((kind, spec, "UTC"), (kind, {"minute": spec}, "UTC"), ("cron", "* * * * *", tz),
                 ("interval", {"minutes": 1, "jitter": spec}, "UTC"), (spec, "* * * * *", "UTC")):
        try:
            make_trigger(*args)  # type: ignore[arg-type]
        except TriggerSpecError as error:
            assert len(TriggerSpecError.preview(error.spec)) <= 80


# -- hostile values in every position ---------------------------------------------------

POSITIONS = [
    # (kind, spec, tz, the fields the error may name)
    ("cron", "{value}", "UTC", {"cron", "key"}),  # a dict as the whole spec fails on its keys
    ("cron", {"minute": "{value}"}, "UTC", {"cron field 'minute'"}),
    ("cron", {"cron": "{value}"}, "UTC", {"cron expression"}),
    ("cron", {"minute": 5, "timezone": "{value}"}, "UTC", {"time zone"}),
    ("cron", {"minute": 5, "start_date": "{value}"}, "UTC", {"start_date"}),
    ("cron", "*/5 * * * *", "{value}", {"time zone"}),
    ("interval", "{value}", "UTC", {"interval", "key"}),
    ("interval", {"minutes": "{value}"}, "UTC", {"minutes", "interval"}),  # 10**5000 minutes: too long
    ("interval", {"minutes": 1, "start_date": "{value}"}, "UTC", {"start_date"}),
    ("date", "{value}", "UTC", {"run_date", "key"}),
    ("date", {"run_date": "{value}"}, "UTC", {"run_date"}),
    ("{value}", "* * * * *", "UTC", {"schedule_type"}),
]


def _placed(template: object, value: object) -> object:
    if template == "{value}":
        return value
    if isinstance(template, dict):
        return {key: _placed(item, value) for key, item in template.items()}
    return template


@pytest.mark.parametrize("value", [DEEP, nested_dict(3000), HUGE_INT],
                         ids=["list-5000-deep", "dict-3000-deep", "10**5000"])
@pytest.mark.parametrize(("kind", "spec", "tz", "fields"), POSITIONS,
                         ids=[f"{p[0]}-{i}" if isinstance(p[0], str) else f"kind-{i}" for i, p in enumerate(POSITIONS)])
def test_deep_nesting_and_huge_ints_are_spec_errors_naming_the_field(
    value: object, kind: object, spec: object, tz: object, fields: set[str]
) -> None:
    with pytest.raises(TriggerSpecError) as caught:
        make_trigger(_placed(kind, value), _placed(spec, value), _placed(tz, value))  # type: ignore[arg-type]
    assert caught.value.field in fields


def test_huge_interval_is_a_spec_error() -> None:
    with pytest.raises(TriggerSpecError, match="longer than 999999999 days") as caught:
        make_trigger("interval", {"minutes": HUGE_INT})
    assert caught.value.field == "interval"


# -- rejection time does not grow with the input ---------------------------------------

BIG_TEXT = "*" * 50_000_000
BIG_KEYS = {f"k{i}": 1 for i in range(10**6)}
BIG_LIST = list(range(10**6))
BIG_VALID_AND_UNKNOWN = {"minute": 5, **BIG_KEYS}
BIG_CRON_AND_UNKNOWN = {"cron": "* * * * *", **BIG_KEYS}


@pytest.mark.parametrize(
    "attempt",
    [
        lambda: make_trigger("cron", BIG_TEXT),
        lambda: make_trigger("cron", {"cron": BIG_TEXT}),
        lambda: make_trigger("cron", {"minute": BIG_TEXT}),
        lambda: make_trigger("cron", "* * * * *", tz=BIG_TEXT),
        lambda: make_trigger("cron", {BIG_TEXT: 1}),
        lambda: make_trigger(BIG_TEXT, "* * * * *"),
        lambda: make_trigger("date", BIG_TEXT),
        lambda: make_trigger("date", {"run_date": BIG_TEXT}),
        lambda: make_trigger("interval", {"minutes": 1, "start_date": BIG_TEXT}),
        lambda: trigger_from_stored("cron", BIG_TEXT, "UTC"),
        lambda: trigger_from_text(BIG_TEXT),
        lambda: make_trigger("cron", BIG_KEYS),
        lambda: make_trigger("interval", BIG_KEYS),
        lambda: make_trigger("cron", BIG_VALID_AND_UNKNOWN),
        lambda: make_trigger("cron", BIG_CRON_AND_UNKNOWN),
        lambda: make_trigger("cron", BIG_LIST),
        lambda: make_trigger("cron", {"minute": BIG_LIST}),
        lambda: make_trigger("interval", {"minutes": BIG_LIST}),
    ],
    ids=["text", "cron-key", "field", "tz", "key", "kind", "date", "run_date", "start_date", "stored",
         "cli-text", "1e6-keys", "1e6-interval-keys", "valid+1e6-keys", "cron+1e6-keys",
         "1e6-list", "1e6-list-field",
         "1e6-list-minutes"],
)
def test_rejecting_huge_input_takes_well_under_50_ms(attempt) -> None:
    started = time.perf_counter()
    with pytest.raises(TriggerSpecError) as caught:
        attempt()
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"took {elapsed * 1000:.1f} ms"
    assert len(str(caught.value)) < 1000


def test_unknown_keys_are_counted_without_listing_them_all() -> None:
    with pytest.raises(TriggerSpecError, match=r"unknown key 'k0', 'k1', 'k2' \(and 999997 more\)"):
        make_trigger("cron", BIG_KEYS)
    with pytest.raises(TriggerSpecError, match=r"unknown key 'x'; a cron spec takes"):
        make_trigger("cron", {"minute": 5, "hour": 1, "x": 2})


# -- jitter ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,spec", [("cron", {"minute": 5}), ("interval", {"minutes": 5})])
@pytest.mark.parametrize("jitter", [1e300, 10**100, HUGE_INT, 86_400.5], ids=["1e300", "10**100", "10**5000",
                                                                           "86400.5"])
def test_jitter_longer_than_a_day_is_refused_naming_jitter(kind: str, spec: dict, jitter: float) -> None:
    with pytest.raises(TriggerSpecError, match=r"more than 86400 \(1 day\)") as caught:
        make_trigger(kind, {**spec, "jitter": jitter})
    assert caught.value.field == "jitter"


@pytest.mark.parametrize("kind,spec", [("cron", {"minute": 5}), ("interval", {"minutes": 5})])
def test_jitter_up_to_a_day_is_carried(kind: str, spec: dict) -> None:
    assert make_trigger(kind, {**spec, "jitter": 86_400}).jitter == timedelta(days=1)
    assert make_trigger(kind, {**spec, "jitter": 0}).jitter == timedelta(0)
    assert make_trigger(kind, spec).jitter is None


def test_negative_jitter_is_refused_saying_why() -> None:
    with pytest.raises(TriggerSpecError, match="never fires early") as caught:
        make_trigger("cron", {"minute": 5, "jitter": -1})
    assert caught.value.field == "jitter"


@pytest.mark.parametrize("spec", ["*/5 * * * *", {"minute": 5}, {"minutes": 5}, "2026-01-01"])
def test_every_trigger_has_a_jitter_attribute(spec: object) -> None:
    kind = "interval" if spec == {"minutes": 5} else "date" if spec == "2026-01-01" else "cron"
    assert make_trigger(kind, spec).jitter is None


# -- naive `after` -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("cron", "*/5 * * * *"),
        ("cron", {"minute": 5}),
        ("cron", {"minute": 5, "start_date": "2026-01-01"}),
        ("cron", {"minute": 5, "end_date": "2026-01-01"}),
        ("interval", {"minutes": 5}),
        ("date", "2026-01-01"),
    ],
)
def test_every_trigger_refuses_a_naive_after_with_the_same_error(kind: str, spec: object) -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError) as caught:
        make_trigger(kind, spec, "America/New_York").next_fire_time(naive)  # type: ignore[arg-type]
    assert type(caught.value) is ValueError
    assert str(caught.value) == f"after must be an aware datetime, got naive {naive!r}"
