"""One-shot triggers: fire once at run_date, if that is strictly after `after`.

run_date is a datetime or a date string (timeparse.py); a naive one is a wall time in
the trigger's zone read with fold=0 (in a gap it moves forward, in an overlap it means
the first occurrence).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from piko.errors import TriggerSpecError
from piko.triggers.timeparse import DATE_FORMS, parse_instant
from piko.triggers.validate import check_after, check_keys, shown
from piko.triggers.zones import Zone, resolve_zone

KEYS = ("run_date", "timezone")


@dataclass(frozen=True, slots=True)
class DateTrigger:
    run_at: datetime  # UTC
    zone: Zone

    @property
    def jitter(self) -> timedelta | None:
        """Always None: a one-shot run is not jittered; here so every trigger has `.jitter`."""
        return None

    def next_fire_time(self, after: datetime) -> datetime | None:
        check_after(after)
        return self.run_at.astimezone(self.zone.tzinfo) if self.run_at > after else None

    def describe(self) -> str:
        return f"once at {self.run_at.astimezone(self.zone.tzinfo).isoformat()} {self.zone.name}"

    def __repr__(self) -> str:
        return f"DateTrigger({self.run_at.isoformat()!r}, tz={self.zone.name!r})"


def parse_date(spec: object, zone: Zone) -> DateTrigger:
    """From {"run_date": ...}, a bare date string, or a datetime."""
    value = spec
    if isinstance(spec, Mapping):
        check_keys(spec, KEYS, "date")
        if spec.get("timezone") is not None:
            zone = resolve_zone(spec["timezone"], spec)
        if spec.get("run_date") is None:
            raise TriggerSpecError(spec, f"run_date is missing; give {DATE_FORMS}", "run_date")
        value = spec["run_date"]
    elif not isinstance(spec, (str, date)):
        raise TriggerSpecError(
            spec, f"{type(spec).__name__} {shown(spec)} is not a date spec; give "
            "{'run_date': '2026-01-08 10:00:00'} or a date string", "run_date",
        )
    run_at = parse_instant(value, zone, field="run_date", spec=spec)
    return DateTrigger(run_at, zone)
