"""The CPU worker and task lifecycles: every legal move is taken, illegal ones are refused."""

from __future__ import annotations

import pytest

from piko.compute.states import TASK_MOVES, WORKER_MOVES, TaskState, WorkerState, advance
from piko.errors import IllegalTransition

W, T = WorkerState, TaskState

LEGAL_MOVES = [(old, new) for table in (WORKER_MOVES, TASK_MOVES) for old, news in table.items() for new in news]


@pytest.mark.parametrize(("old", "new"), LEGAL_MOVES, ids=lambda s: s.value)
def test_every_move_in_the_tables_is_accepted(old, new):
    assert advance(old, new) is new


def test_every_state_has_a_row_is_reachable_and_can_reach_the_final_state():
    for table, start, final in ((WORKER_MOVES, W.STARTING, W.DEAD), (TASK_MOVES, T.QUEUED, T.FINISHED)):
        assert set(table) == set(type(start))
        assert table[final] == frozenset()
        assert _reachable(table, start) == set(type(start))
        assert all(final in _reachable(table, state) for state in table)


def _reachable(table, start) -> set:
    seen, frontier = {start}, [start]
    while frontier:
        for new in table[frontier.pop()] - seen:
            seen.add(new)
            frontier.append(new)
    return seen


def test_a_dead_worker_never_comes_back():
    with pytest.raises(IllegalTransition, match="a CPU worker cannot go from dead to idle .*it is final"):
        advance(W.DEAD, W.IDLE)


def test_a_worker_that_is_leaving_service_never_takes_work_again():
    for leaving in (W.RETIRING, W.KILLED, W.STOPPING):
        for back in (W.IDLE, W.BUSY):
            with pytest.raises(IllegalTransition, match=f"from {leaving.value} to {back.value}"):
                advance(leaving, back)


def test_a_starting_worker_is_idle_before_it_is_busy():
    with pytest.raises(IllegalTransition, match="from starting to busy .*may go to dead, idle, killed, stopping"):
        advance(W.STARTING, W.BUSY)


def test_a_task_runs_at_most_once():
    with pytest.raises(IllegalTransition, match="a CPU task cannot go from finished to running"):
        advance(T.FINISHED, T.RUNNING)
    with pytest.raises(IllegalTransition, match="from running to queued"):
        advance(T.RUNNING, T.QUEUED)
