from __future__ import annotations

from datetime import datetime, timedelta, timezone

from piko.core.policy import decide_fires, retry_delay
from piko.core.types import RunStatus

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)


def test_on_time_fire_runs():
    (d,) = decide_fires([T], T + S, timedelta(seconds=60), coalesce=True)
    assert d.status is RunStatus.RUNNING


def test_missed_fire_beyond_grace_is_recorded_as_missed_with_how_late():
    (d,) = decide_fires([T], T + 90 * S, timedelta(seconds=60), coalesce=True)
    assert d.status is RunStatus.MISSED and "late by 90.000s" in d.reason


def test_no_grace_limit_runs_however_late():
    (d,) = decide_fires([T], T + timedelta(days=3), None, coalesce=False)
    assert d.status is RunStatus.RUNNING


def test_coalesce_runs_only_the_newest_of_a_backlog_and_records_the_rest():
    ds = decide_fires([T, T + 10 * S, T + 20 * S], T + 21 * S, timedelta(seconds=60), coalesce=True)
    assert [d.status for d in ds] == [RunStatus.MISSED, RunStatus.MISSED, RunStatus.RUNNING]
    assert all("coalesced" in d.reason for d in ds[:2])


def test_without_coalesce_each_backlog_time_within_grace_runs():
    ds = decide_fires([T, T + 10 * S, T + 20 * S], T + 65 * S, timedelta(seconds=60), coalesce=False)
    assert [d.status for d in ds] == [RunStatus.MISSED, RunStatus.RUNNING, RunStatus.RUNNING]


def test_retry_delay_grows_exponentially_up_to_the_cap():
    assert [retry_delay(a, 1.0, 10.0, 0.0) for a in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert retry_delay(1, 1.0, 10.0, 0.999) >= 0.5


def test_busy_reason_says_whether_earlier_fires_run_or_wait_on_the_store():
    from piko.core.policy import busy_reason, grace_of

    assert busy_reason(1, 1, 1) == "max_instances=1 reached: 1 run(s) still going"
    waiting = busy_reason(2, 3, 1)
    assert "3 earlier fire(s) still in progress, 1 in the handler" in waiting and "store" in waiting
    assert grace_of(None) is None and grace_of(1.5).total_seconds() == 1.5
