"""CPU worker and task lifecycles as transition tables, and the one function that advances them.

A worker starts, turns idle once it reported READY, and moves between idle and busy; it
leaves service retiring (its task quota is spent), killed, or stopping (the pool closes),
and every state ends in dead when its process has exited. A task is queued, then running
on a worker, then finished (answered, failed, cancelled or timed out); a queued task may
finish without ever running. Dead and finished never change again. Pure: imports only errors.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from piko.errors import IllegalTransition


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RETIRING = "retiring"  # spent its max_tasks_per_worker: its socket is closed, it exits by itself
    KILLED = "killed"  # SIGKILLed, or its initializer failed
    STOPPING = "stopping"  # the pool is closing: its socket is closed, it exits by itself
    DEAD = "dead"  # its process has exited (or was reaped without the loop)


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


_W, _T = WorkerState, TaskState

WORKER_MOVES: Mapping[WorkerState, frozenset[WorkerState]] = {
    _W.STARTING: frozenset({_W.IDLE, _W.KILLED, _W.STOPPING, _W.DEAD}),
    _W.IDLE: frozenset({_W.BUSY, _W.KILLED, _W.STOPPING, _W.DEAD}),
    _W.BUSY: frozenset({_W.IDLE, _W.RETIRING, _W.KILLED, _W.DEAD}),
    _W.RETIRING: frozenset({_W.KILLED, _W.DEAD}),
    _W.STOPPING: frozenset({_W.KILLED, _W.DEAD}),  # killed: its initializer failed while stopping
    _W.KILLED: frozenset({_W.DEAD}),
    _W.DEAD: frozenset(),
}

TASK_MOVES: Mapping[TaskState, frozenset[TaskState]] = {
    _T.QUEUED: frozenset({_T.RUNNING, _T.FINISHED}),
    _T.RUNNING: frozenset({_T.FINISHED}),
    _T.FINISHED: frozenset(),
}

S = TypeVar("S", WorkerState, TaskState)


def advance(current: S, new: S) -> S:
    """Return `new` if its table allows current -> new, else raise IllegalTransition."""
    is_worker = isinstance(current, WorkerState)
    moves: Mapping[Any, frozenset[Any]] = WORKER_MOVES if is_worker else TASK_MOVES
    what = "CPU worker" if is_worker else "CPU task"
    if new not in moves[current]:
        allowed = ", ".join(sorted(s.value for s in moves[current])) or "nothing: it is final"
        raise IllegalTransition(f"a {what} cannot go from {current.value} to {new.value} "
                                f"(from {current.value} it may go to {allowed})")
    return new
