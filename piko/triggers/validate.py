"""Shared checks on raw schedule specs, so every parser rejects bad input the same way.

Each check raises TriggerSpecError naming the field, showing the (shortened) value and
saying what is allowed. Checks run before any expensive work and look at a bounded part
of their input (a length, a few keys), and values are shown through a bounded preview,
so hostile input (huge strings, huge dicts, deep nesting, 10**5000, NaN) is refused in
microseconds. `check_after` is the one check on what next_fire_time is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from piko.errors import TriggerSpecError

MAX_SPEC_CHARS = 1000  # crontab text and single field expressions
MAX_JSON_CHARS = 10_000  # a stored schedule_expr
# Jitter delays a fire by a random 0..jitter; a day is more than any job needs and keeps
# every jittered time far from timedelta's limits.
MAX_JITTER = timedelta(days=1)


def shown(value: object, limit: int = 40) -> str:
    """repr(value), shortened for messages, at a cost that does not grow with the value."""
    return TriggerSpecError.preview(value, limit)


def check_after(after: datetime) -> None:
    """Every next_fire_time refuses a naive `after` the same way, before comparing it."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise naive_after(after)


def naive_after(after: datetime) -> ValueError:
    """The error for a naive `after`, for hot paths that inline check_after's test."""
    return ValueError(f"after must be an aware datetime, got naive {after!r}")


def check_text(value: object, spec: object, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise TriggerSpecError(spec, f"{type(value).__name__} {shown(value)} is not {what}", field)
    if len(value) > MAX_SPEC_CHARS:
        raise TriggerSpecError(
            spec, f"text of {len(value)} characters is too long (at most {MAX_SPEC_CHARS})", field
        )
    return value


def check_keys(spec: Mapping[Any, object], allowed: Collection[str], kind: str) -> None:
    """Refuse unknown keys, looking at no more than len(allowed) + 3 of them."""
    unknown_count = len(spec) - sum(1 for key in allowed if key in spec)
    if unknown_count:
        # among the first len(allowed) + 3 keys at least min(3, unknown_count) are unknown
        first_keys = islice(spec, len(allowed) + 3)
        unknown = [key for key in first_keys if key not in allowed][:3]
        names = ", ".join(shown(key, 30) for key in unknown)
        more = f" (and {unknown_count - 3} more)" if unknown_count > 3 else ""
        raise TriggerSpecError(
            spec,
            f"unknown key {names}{more}; a {kind} spec takes {', '.join(allowed)}",
            "key",
        )


def check_number(value: object, spec: object, field: str) -> float | int:
    """A finite, non-negative int or float (bool is refused: True is not a duration)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TriggerSpecError(
            spec, f"{type(value).__name__} {shown(value)} is not a number", field
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise TriggerSpecError(spec, f"{value} is not a finite number", field)
    if value < 0:
        raise TriggerSpecError(spec, f"{shown(value)} is negative; give a number >= 0", field)
    return value


def check_jitter(value: object, spec: object) -> timedelta | None:
    """None, or 0 to MAX_JITTER seconds: a jitter only ever delays a fire."""
    if value is None:
        return None
    limit_s = int(MAX_JITTER.total_seconds())
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise TriggerSpecError(
            spec, f"{shown(value)} is negative; jitter delays each fire by a random 0 to jitter "
            f"seconds and never fires early (APScheduler would), so give 0 to {limit_s}", "jitter",
        )
    seconds = check_number(value, spec, "jitter")
    if seconds > limit_s:
        raise TriggerSpecError(
            spec, f"{shown(value)} seconds is more than {limit_s} (1 day); give 0 to {limit_s}",
            "jitter",
        )
    return timedelta(seconds=seconds)


def decode_json(text: str, spec: object) -> object:
    """Parse stored JSON with a size cap; garbage becomes a TriggerSpecError."""
    if len(text) > MAX_JSON_CHARS:
        raise TriggerSpecError(
            spec, f"stored text of {len(text)} characters is too long (at most {MAX_JSON_CHARS})"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TriggerSpecError(spec, f"not valid JSON ({exc})", "schedule_expr") from None
