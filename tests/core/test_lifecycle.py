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
