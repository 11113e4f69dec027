"""The run lifecycle as one table: every move a run's status may make; the stores' SQL guards
are derived from it, so the code and the database cannot disagree.

    (new)     -> RUNNING, PENDING (queued for any worker), or born final: MISSED, SKIPPED,
                 UPSTREAM_FAILED (a workflow step whose dependencies did not succeed)
    PENDING   -> RUNNING (a worker claimed it) | CANCELLED (before it started) | MISSED (claimed
                 later than its misfire grace)
    RUNNING   -> SUCCESS | FAILED | TIMEOUT | CANCELLED | ABANDONED
    ABANDONED -> SUCCESS | FAILED | TIMEOUT | CANCELLED
Only the orphan sweep makes RUNNING -> ABANDONED (the instance stopped beating). The move out
of ABANDONED is the one way back: the instance was alive after all (a stalled loop, a store
outage) and its run's real end replaces the guess, unless the run was handed to a new
attempt meanwhile (its claim token was taken away). Every other final status never changes.
Pure: imports only piko.core.types and piko.errors.
"""

from __future__ import annotations

from piko.core.types import RunStatus
from piko.errors import IllegalTransition

__all__ = ["ABANDONABLE", "CLAIMABLE", "FINISHABLE", "LIVE", "RERUNNABLE", "TRANSITIONS", "IllegalTransition",
           "advance", "sql_in"]

_S = RunStatus
_ENDS = frozenset({_S.SUCCESS, _S.FAILED, _S.TIMEOUT, _S.CANCELLED})  # what a run's own end records

TRANSITIONS: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({_S.RUNNING, _S.PENDING, _S.MISSED, _S.SKIPPED, _S.UPSTREAM_FAILED}),
    _S.PENDING: frozenset({_S.RUNNING, _S.CANCELLED, _S.MISSED}),
    _S.RUNNING: _ENDS | {_S.ABANDONED},
    _S.ABANDONED: _ENDS,
}

# Derived guards: the statuses a row may be in for a run's end to be written over it, and for the
# orphan sweep to mark it ABANDONED. The stores put these (via sql_in) in their UPDATEs' WHERE.
FINISHABLE = frozenset(s for s, moves in TRANSITIONS.items() if s is not None and _ENDS <= moves)
ABANDONABLE = frozenset(s for s, moves in TRANSITIONS.items() if s is not None and _S.ABANDONED in moves)
CLAIMABLE = frozenset(s for s, moves in TRANSITIONS.items() if s is not None and _S.RUNNING in moves)  # by a worker
LIVE = frozenset({_S.PENDING, _S.RUNNING})  # what counts against a job's max_instances

# A time whose newest run ended so is not done: it may run again as a new attempt (the catch-up
# of a stateful job, `piko backfill --rerun-failed`). CANCELLED (shutdown, a lost leader term)
# and SKIPPED (max_instances, a window waiting its turn) never finished their work either.
RERUNNABLE = frozenset({_S.FAILED, _S.TIMEOUT, _S.CANCELLED, _S.ABANDONED, _S.MISSED, _S.SKIPPED,
                        _S.UPSTREAM_FAILED})


def advance(current: RunStatus | None, new: RunStatus) -> RunStatus:
    """Return `new` if the lifecycle allows current -> new, else raise IllegalTransition."""
    allowed = TRANSITIONS.get(current, frozenset())
    if new not in allowed:
        shown = current.value if current else "(new)"
        raise IllegalTransition(f"run status cannot go from {shown} to {new.value}")
    return new


def sql_in(statuses: frozenset[RunStatus]) -> str:
    """`('ABANDONED', 'RUNNING')`: a guard for a WHERE clause, in a stable order."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses, key=lambda s: s.value)) + ")"
