"""Building triggers: from Python values (make_trigger) and from stored rows (trigger_from_stored).

Everything invalid becomes a TriggerSpecError at build time, never at fire time. A stored
cron `schedule_expr` may be raw crontab text, a JSON string ("\"*/5 * * * *\""),
{"cron": "..."}, or a JSON object of APScheduler fields; interval and date rows hold
JSON objects (a date row may also hold a bare date string).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from itertools import islice
from typing import Union

from piko.errors import TriggerSpecError
from piko.triggers.cron_fields import CronFieldsTrigger, parse_cron_fields
from piko.triggers.cron_text import CronTextTrigger, parse_crontab
from piko.triggers.date import DateTrigger, parse_date
from piko.triggers.interval import IntervalTrigger, parse_interval
from piko.triggers.validate import check_text, decode_json, shown
from piko.triggers.zones import Zone, resolve_zone

AnyTrigger = Union[CronTextTrigger, CronFieldsTrigger, IntervalTrigger, DateTrigger]
KINDS = ("cron", "interval", "date")


def make_trigger(
    kind: str,
    spec: str | Mapping[str, object],
    tz: str | tzinfo | None = "UTC",
    *,
    default_start: datetime | None = None,
) -> AnyTrigger:
    """A trigger for `spec`; `tz=None` means UTC.

    `default_start` is when the schedule was created: it anchors an interval without
    start_date. Without it that anchor is the Unix epoch, never "now" (interval.py says why).
    """
    zone = resolve_zone(tz, spec)
    if kind == "cron":
        return _cron(spec, zone)
    if kind == "interval":
        return parse_interval(spec, zone, default_start)
    if kind == "date":
        return parse_date(spec, zone)
    raise TriggerSpecError(
        spec, f"unknown schedule type {shown(kind)}; use one of {', '.join(KINDS)}", "schedule_type"
    )


def trigger_from_stored(
    schedule_type: str,
    schedule_expr: str,
    tz: str | None,
    *,
    default_start: datetime | None = None,
) -> AnyTrigger:
    """Decode what a `scheduled_job` row holds and build its trigger."""
    text = check_text(schedule_expr, schedule_expr, "schedule_expr", "text")
    stripped = text.strip()
    decoded: object = text
    if stripped[:1] in ("{", '"', "["):
        decoded = decode_json(stripped, text)
    elif schedule_type == "interval":
        raise TriggerSpecError(
            text, 'an interval is stored as a JSON object such as {"minutes": 10}', "schedule_expr"
        )
    if not isinstance(decoded, (str, dict)):
        raise TriggerSpecError(
            text, f"JSON {type(decoded).__name__} is neither a string nor an object", "schedule_expr"
        )
    return make_trigger(schedule_type, decoded, tz, default_start=default_start)


def _cron(spec: object, zone: Zone) -> CronTextTrigger | CronFieldsTrigger:
    if isinstance(spec, str):
        return parse_crontab(spec, zone)
    if not isinstance(spec, Mapping):
        raise TriggerSpecError(
            spec, f"{type(spec).__name__} {shown(spec)} is not a cron spec; give a crontab "
            "string, {'cron': '...'} or APScheduler fields", "cron",
        )
    if "cron" in spec:
        if len(spec) != 1:
            others = ", ".join(shown(key, 20) for key in islice(spec, 4) if key != "cron")
            raise TriggerSpecError(
                spec, f"{{'cron': ...}} takes no other keys, got {others}", "cron"
            )
        return parse_crontab(spec["cron"], zone, spec)
    return parse_cron_fields(spec, zone)
