"""Every store moves a run's status exactly as core/lifecycle.py's table allows, and no other way."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from piko.core.lifecycle import FINISHABLE, TRANSITIONS
from piko.core.types import RunClaim, RunStatus
from piko.protocols import Store

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
ENDS = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED)
EVERY = list(RunStatus)


async def run_in(store: Store, status: RunStatus, n: int) -> int:
    """A run row in `status`, reached the way piko reaches it (claim, end, sweep)."""
    at = T0 + timedelta(minutes=n)
    born_final = (RunStatus.MISSED, RunStatus.SKIPPED, RunStatus.PENDING, RunStatus.UPSTREAM_FAILED)
    born = status if status in born_final else RunStatus.RUNNING
    run_id = await store.claim_run(RunClaim(f"j{n}", at, born, at, f"inst-{n}"))
    assert run_id is not None
    if status in ENDS:
        await store.finish_run(run_id, status, at + timedelta(seconds=1))
    elif status is RunStatus.ABANDONED:
        await store.abandon_orphans(at, at, dead_instances=[f"inst-{n}"])
    return run_id


async def status_of(store: Store, run_id: int) -> RunStatus:
    run = await store.get_run(run_id)
    assert run is not None
    return run.status


@pytest.mark.parametrize("start", EVERY, ids=lambda s: s.value)
async def test_a_runs_end_replaces_exactly_the_statuses_the_table_allows(store: Store, start: RunStatus) -> None:
    """A run's end is written over a status that may move to every end (RUNNING, ABANDONED); a
    queued run that never started is cancelled another way (request_cancel), never 'finished'."""
    for n, end in enumerate(ENDS):
        run_id = await run_in(store, start, n)
        await store.finish_run(run_id, end, T0 + timedelta(hours=1))
        expected = end if start in FINISHABLE else start
        assert await status_of(store, run_id) is expected, f"{start.value} -> {end.value}"


@pytest.mark.parametrize("start", EVERY, ids=lambda s: s.value)
async def test_the_sweep_abandons_exactly_the_statuses_the_table_allows(store: Store, start: RunStatus) -> None:
    if start is RunStatus.RUNNING:
        pytest.skip("the sweep's own case, in test_contract")
    # a PENDING row belongs to no instance yet: the sweep leaves it for a worker
    run_id = await run_in(store, start, 0)
    await store.abandon_orphans(T0 + timedelta(hours=2), T0 + timedelta(hours=2), dead_instances=["inst-0"])
    expected = RunStatus.ABANDONED if RunStatus.ABANDONED in TRANSITIONS.get(start, frozenset()) else start
    assert await status_of(store, run_id) is expected
