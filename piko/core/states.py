"""The run lifecycle as a transition table, and the one function that advances it.

RUNNING ends in SUCCESS, FAILED, TIMEOUT, CANCELLED or ABANDONED (the process died).
MISSED and SKIPPED rows are born final. A final status never changes again, except that
the orphan sweep may only ever turn RUNNING into ABANDONED.
"""

from __future__ import annotations

from piko.core.types import RunStatus
from piko.errors import IllegalTransition

__all__ = ["TRANSITIONS", "IllegalTransition", "advance"]

_S = RunStatus

TRANSITIONS: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({_S.RUNNING, _S.MISSED, _S.SKIPPED}),
    _S.RUNNING: frozenset({_S.SUCCESS, _S.FAILED, _S.TIMEOUT, _S.CANCELLED, _S.ABANDONED}),
}

# A time whose newest run ended so is not done: it may run again as a new attempt (the catch-up
# of a stateful job, `piko backfill --rerun-failed`). CANCELLED (shutdown, a lost leader term)
# and SKIPPED (max_instances, a window waiting its turn) never finished their work either.
RERUNNABLE = frozenset({_S.FAILED, _S.TIMEOUT, _S.CANCELLED, _S.ABANDONED, _S.MISSED, _S.SKIPPED})


def advance(current: RunStatus | None, new: RunStatus) -> RunStatus:
    """Return `new` if the lifecycle allows current -> new, else raise IllegalTransition."""
    allowed = TRANSITIONS.get(current, frozenset())
    if new not in allowed:
        shown = current.value if current else "(new)"
        raise IllegalTransition(f"run status cannot go from {shown} to {new.value}")
    return new
