"""piko.triggers: pure cron, interval and date schedules.

`make_trigger(kind, spec, tz).next_fire_time(after)` gives the first fire strictly after
`after`, or None. No asyncio, no I/O, no clock: a trigger is an immutable value and
next_fire_time a pure function of `after`. docs/triggers.md states the semantics.
"""

from piko.triggers.cron_fields import CronFieldsTrigger
from piko.triggers.cron_text import CronTextTrigger
from piko.triggers.date import DateTrigger
from piko.triggers.factory import AnyTrigger, make_trigger, trigger_from_stored
from piko.triggers.interval import IntervalTrigger
from piko.triggers.preview import next_fire_times, trigger_from_text

__all__ = [
    "AnyTrigger",
    "CronFieldsTrigger",
    "CronTextTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "make_trigger",
    "next_fire_times",
    "trigger_from_stored",
    "trigger_from_text",
]
