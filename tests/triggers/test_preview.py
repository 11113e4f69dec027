from __future__ import annotations

from datetime import datetime, timezone

import pytest

from piko.errors import ConfigError, TriggerSpecError
from piko.triggers import (
    CronFieldsTrigger,
    CronTextTrigger,
    DateTrigger,
    IntervalTrigger,
    make_trigger,
    next_fire_times,
    trigger_from_text,
)

UTC = timezone.utc
AFTER = datetime(2026, 1, 1, tzinfo=UTC)


def test_next_fire_times_lists_n_in_order() -> None:
    times = next_fire_times(make_trigger("cron", "0 */6 * * *"), AFTER, 3)
    assert times == [datetime(2026, 1, 1, h, tzinfo=UTC) for h in (6, 12, 18)]


def test_next_fire_times_stops_when_the_schedule_ends() -> None:
    assert len(next_fire_times(make_trigger("date", "2026-02-01"), AFTER, 10)) == 1
    assert next_fire_times(make_trigger("cron", "0 0 31 2 *"), AFTER, 10) == []


@pytest.mark.parametrize("n", [-1, 100_000])
def test_next_fire_times_refuses_silly_counts_with_a_config_error(n: int) -> None:
    with pytest.raises(ConfigError, match="between 0 and 10000"):  # a PikoError and a ValueError
        next_fire_times(make_trigger("cron", "@daily"), AFTER, n)


def test_command_line_prints_a_silly_count_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from piko.cli import main

    assert main(["next", "* * * * *", "-n", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "between 0 and 10000, got -1" in err


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("*/5 * * * *", CronTextTrigger),
        ("0 */5 * * * *", CronTextTrigger),
        ("@hourly", CronTextTrigger),
        ('"*/5 * * * *"', CronTextTrigger),
        ('{"cron": "@daily"}', CronTextTrigger),
        ('{"day_of_week": "mon-fri", "hour": 9}', CronFieldsTrigger),
        ('{"minutes": 10}', IntervalTrigger),
        ('{"run_date": "2026-01-08 10:00:00"}', DateTrigger),
        ("2026-01-08 10:00:00", DateTrigger),
    ],
)
def test_command_line_text_becomes_the_right_trigger(text: str, kind: type) -> None:
    assert isinstance(trigger_from_text(text, "Europe/Berlin"), kind)


def test_command_line_garbage_is_a_spec_error() -> None:
    with pytest.raises(TriggerSpecError, match="not valid JSON"):
        trigger_from_text("{minutes: 10}")
    with pytest.raises(TriggerSpecError, match="got 3 fields"):
        trigger_from_text("every five minutes")
