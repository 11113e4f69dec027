"""Previews for people: the next n fire times, and a schedule typed on the command line.

Used by `python -m piko next "EXPR" [-n 10] [--tz ZONE]`. On the command line the kind is
guessed: a JSON object with run_date is a date, one with weeks/days/hours/minutes/seconds
an interval, any other object or text a cron spec (crontab text, macro, {"cron": ...} or
APScheduler fields); a bare date string is a date.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from piko.errors import ConfigError, TriggerSpecError
from piko.triggers.factory import AnyTrigger, make_trigger
from piko.triggers.interval import UNITS
from piko.triggers.timeparse import DATE_RE
from piko.triggers.validate import check_text, decode_json

if TYPE_CHECKING:  # piko.ports imports asyncio; this module stays pure
    from piko.protocols import Trigger

MAX_PREVIEW = 10_000


def next_fire_times(trigger: Trigger, after: datetime, n: int) -> list[datetime]:
    """Up to n fire times strictly after `after`, in order (fewer if the schedule ends).

    A count outside 0..MAX_PREVIEW is a ConfigError (a PikoError and a ValueError), so the
    CLI prints it as one line instead of a traceback.
    """
    if not 0 <= n <= MAX_PREVIEW:
        raise ConfigError(f"the number of fire times must be between 0 and {MAX_PREVIEW}, got {n}")
    fire_times: list[datetime] = []
    fire_at = after
    while len(fire_times) < n:
        found = trigger.next_fire_time(fire_at)
        if found is None:
            break
        fire_times.append(found)
        fire_at = found
    return fire_times


def trigger_from_text(
    text: str, tz: str | tzinfo | None = "UTC", *, default_start: datetime | None = None
) -> AnyTrigger:
    """A trigger from what a user typed: crontab text, a macro, a date, or a JSON object."""
    stripped = check_text(text, text, "schedule", "text").strip()
    if DATE_RE.fullmatch(stripped):
        return make_trigger("date", stripped, tz)
    if not stripped.startswith(("{", '"')):
        return make_trigger("cron", stripped, tz)
    decoded = decode_json(stripped, text)
    if isinstance(decoded, str):
        return trigger_from_text(decoded, tz, default_start=default_start)
    if not isinstance(decoded, Mapping):
        raise TriggerSpecError(text, "JSON that is not an object or a string", "schedule")
    if "run_date" in decoded:
        return make_trigger("date", decoded, tz)
    if any(unit in decoded for unit in UNITS):
        return make_trigger("interval", decoded, tz, default_start=default_start)
    return make_trigger("cron", decoded, tz)
