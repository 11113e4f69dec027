import pytest

from piko.core.lifecycle import IllegalTransition, advance
from piko.core.types import RunStatus as S


def test_running_may_end_in_every_final_status():
    for final in (S.SUCCESS, S.FAILED, S.TIMEOUT, S.CANCELLED, S.ABANDONED):
        assert advance(S.RUNNING, final) is final


def test_final_status_never_changes_again():
    with pytest.raises(IllegalTransition, match="cannot go from SUCCESS to FAILED"):
        advance(S.SUCCESS, S.FAILED)


def test_missed_and_skipped_are_born_final():
    assert advance(None, S.MISSED) is S.MISSED
    with pytest.raises(IllegalTransition):
        advance(S.MISSED, S.RUNNING)


def test_the_derived_guards_follow_the_table():
    from piko.core.lifecycle import ABANDONABLE, CLAIMABLE, FINISHABLE, TRANSITIONS

    ends = {S.SUCCESS, S.FAILED, S.TIMEOUT, S.CANCELLED}
    assert FINISHABLE == {S.RUNNING, S.ABANDONED} == {s for s, m in TRANSITIONS.items() if s and ends <= m}
    assert ABANDONABLE == {S.RUNNING}
    assert CLAIMABLE == {S.PENDING}


def test_a_queued_run_starts_is_cancelled_or_missed_but_never_ends_otherwise():
    assert advance(S.PENDING, S.RUNNING) is S.RUNNING
    assert advance(S.PENDING, S.CANCELLED) is S.CANCELLED
    assert advance(S.PENDING, S.MISSED) is S.MISSED
    with pytest.raises(IllegalTransition, match="cannot go from PENDING to SUCCESS"):
        advance(S.PENDING, S.SUCCESS)
    assert not S.PENDING.is_final and not S.RUNNING.is_final and S.MISSED.is_final
