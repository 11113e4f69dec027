from __future__ import annotations

import pytest

from piko.core.registry import Registry
from piko.errors import RegistrationError


async def ok(ctx, scheduled_time):
    return None


def test_plain_function_is_rejected_with_the_job_id():
    reg = Registry()
    with pytest.raises(RegistrationError, match=r"job 'sync': handler .*sync_fn must be an 'async def'"):
        @reg.job("sync")
        def sync_fn(ctx, scheduled_time):
            pass


def test_duplicate_job_id_is_rejected():
    reg = Registry()
    reg.job("a")(ok)

    async def other(ctx, scheduled_time):
        pass

    with pytest.raises(RegistrationError, match="'a' is already registered"):
        reg.job("a")(other)


def test_two_schedules_and_bad_options_are_rejected():
    reg = Registry()
    with pytest.raises(RegistrationError, match="at most one of cron=, interval=, date="):
        reg.job("x", cron="* * * * *", interval={"seconds": 1})(ok)
    with pytest.raises(RegistrationError, match="max_instances=0"):
        reg.job("y", max_instances=0)(ok)
    with pytest.raises(RegistrationError, match="backfill_policy"):
        reg.job("z", backfill_policy="sometimes")(ok)


def test_default_schedule_becomes_a_row_with_json_fields():
    reg = Registry()
    reg.job("every10", interval={"seconds": 10}, timezone="Europe/Berlin")(ok)
    row = reg.get("every10").default_schedule_row()
    assert (row.schedule_type, row.schedule_expr, row.timezone) == ("interval", '{"seconds": 10}', "Europe/Berlin")


def test_a_schedule_equal_to_a_valid_one_but_of_another_type_is_still_refused() -> None:
    """Pass: registration remembers schedules already checked, but {"seconds": True} (equal to
    {"seconds": 1} as a key) is refused after 1 was accepted, and a bad one named by its job."""
    from piko.core.registry import build_spec
    from piko.errors import TriggerSpecError

    async def handler(ctx, scheduled_time):
        pass

    for i in range(3):
        build_spec(f"ok{i}", handler, interval={"seconds": 1})
    with pytest.raises(TriggerSpecError):
        build_spec("flag", handler, interval={"seconds": True})
    with pytest.raises(TriggerSpecError, match="job 'late'"):
        build_spec("late", handler, interval={"seconds": -1})
