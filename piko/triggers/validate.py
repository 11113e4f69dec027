"""Shared checks on raw schedule specs, so every parser rejects bad input the same way.

Each check raises TriggerSpecError naming the field, showing the (shortened) value and
saying what is allowed. Checks run before any expensive work, so hostile input (huge
strings, huge dicts, NaN) is refused in microseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from piko.errors import TriggerSpecError

MAX_SPEC_CHARS = 1000  # crontab text and single field expressions
MAX_JSON_CHARS = 10_000  # a stored schedule_expr


def shown(value: object, limit: int = 40) -> str:
    """repr(value), shortened for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_text(value: object, spec: object, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise TriggerSpecError(spec, f"{type(value).__name__} {shown(value)} is not {what}", field)
    if len(value) > MAX_SPEC_CHARS:
        raise TriggerSpecError(
            spec, f"text of {len(value)} characters is too long (at most {MAX_SPEC_CHARS})", field
        )
    return value


def check_keys(spec: Mapping[Any, object], allowed: Collection[str], kind: str) -> None:
    unknown = [key for key in spec if key not in allowed]
    if unknown:
        names = ", ".join(shown(key, 30) for key in unknown[:3])
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
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
        raise TriggerSpecError(spec, f"{value} is negative; give a number >= 0", field)
    return value


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
