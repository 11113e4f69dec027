"""The queue role of every store (cluster execution): placing runs, claiming them, tokens, cancels."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from piko.core.placement import JobLimits
from piko.core.types import InstanceInfo, RunClaim, RunFinish, RunStatus
from piko.protocols import Store
from piko.store import make_store

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
S = RunStatus
ONE = JobLimits(max_instances=1, misfire_grace=None)
MANY = JobLimits(max_instances=1000, misfire_grace=None)


def fire(job_id: str, at: datetime = T0, *, status: RunStatus = S.PENDING, limit: int | None = 1, **kw) -> RunClaim:
    return RunClaim(job_id, at, status, kw.pop("started_at", at), kw.pop("instance_id", "leader"),
                    max_instances=limit, **kw)


async def statuses(store: Store) -> list[tuple[str, str]]:
    return [(r.job_id, r.status.value) for r in reversed(await store.recent_runs(limit=1000))]


async def test_a_new_fire_is_queued_or_started_as_asked_and_a_taken_time_is_not_placed_twice(store: Store) -> None:
    placed = await store.place_runs([fire("a"), fire("b", status=S.RUNNING, claim_token=7), fire("a")])
    assert [p[1] for p in placed] == [S.PENDING, S.RUNNING, S.PENDING] and placed[2][0] is None
    runs = {r.job_id: r for r in await store.recent_runs()}
    assert runs["a"].enqueued_at == T0 and runs["a"].started_at is None and runs["a"].instance_id == ""
    assert (runs["b"].claim_token, runs["b"].started_at, runs["b"].instance_id) == (7, T0, "leader")


async def test_a_fire_beyond_max_instances_in_the_whole_cluster_is_recorded_skipped(store: Store) -> None:
    placed = await store.place_runs([fire("j", T0, limit=2), fire("j", T0 + timedelta(seconds=1), limit=2),
                                     fire("j", T0 + timedelta(seconds=2), limit=2)])
    assert [p[1] for p in placed] == [S.PENDING, S.PENDING, S.SKIPPED]
    skipped = (await store.recent_runs(status=S.SKIPPED))[0]
    assert skipped.error_type == "MaxInstances" and "max_instances=2" in (skipped.error_message or "")


async def test_a_run_asking_to_start_while_its_job_is_at_its_limit_is_queued_instead(store: Store) -> None:
    await store.place_runs([fire("j", status=S.RUNNING, claim_token=1)])
    retry = fire("j", status=S.RUNNING, claim_token=2, take_lock=False, kind="retry", attempt=2)
    assert [p[1] for p in await store.place_runs([retry])] == [S.PENDING]


async def test_a_worker_claims_its_queues_oldest_first_up_to_its_capacity(store: Store) -> None:
    await store.place_runs([fire(f"j{n}", T0 + timedelta(seconds=n), queue="etl" if n < 4 else "io")
                            for n in range(6)])
    got = await store.claim_queued("w1", ["etl"], 3, 99, lambda job: ONE, T0 + timedelta(seconds=10))
    assert [r.job_id for r in got.started] == ["j0", "j1", "j2"] and got.missed == []
    assert all((r.status, r.instance_id, r.claim_token) == (S.RUNNING, "w1", 99) for r in got.started)
    assert all(r.started_at == T0 + timedelta(seconds=10) for r in got.started)
    rest = await store.claim_queued("w2", ["etl", "io"], 10, 5, lambda job: ONE, T0 + timedelta(seconds=10))
    assert [r.job_id for r in rest.started] == ["j3", "j4", "j5"]
    assert await store.queue_depths() == {}


async def test_a_claim_never_starts_more_runs_of_a_job_than_its_max_instances(store: Store) -> None:
    await store.place_runs([fire("j", T0 + timedelta(seconds=n), limit=None) for n in range(5)])
    two = JobLimits(max_instances=2, misfire_grace=None)
    first = await store.claim_queued("w1", ["default"], 10, 1, lambda job: two, T0)
    second = await store.claim_queued("w2", ["default"], 10, 2, lambda job: two, T0)
    assert len(first.started) == 2 and second.started == []
    await store.finish_runs([RunFinish(first.started[0].run_id, S.SUCCESS, T0, claim_token=1)])
    third = await store.claim_queued("w2", ["default"], 10, 2, lambda job: two, T0)
    assert len(third.started) == 1 and await store.queue_depths() == {"default": 2}


async def test_a_queued_first_fire_claimed_past_its_grace_is_missed_but_a_retry_still_runs(store: Store) -> None:
    await store.place_runs([fire("late"), fire("retry", kind="retry", attempt=2, limit=None)])
    grace = JobLimits(max_instances=5, misfire_grace=timedelta(seconds=60))
    got = await store.claim_queued("w", ["default"], 10, 3, lambda job: grace, T0 + timedelta(minutes=5))
    assert [r.job_id for r in got.started] == ["retry"]
    assert [(r.job_id, r.status, r.error_type) for r in got.missed] == [("late", S.MISSED, "Misfire")]
    assert "beyond misfire_grace_time 60.000s" in (got.missed[0].error_message or "")


async def test_runs_of_jobs_this_worker_has_no_code_for_stay_queued(store: Store) -> None:
    await store.place_runs([fire("theirs"), fire("mine")])
    got = await store.claim_queued("w", ["default"], 10, 3, lambda job: ONE if job == "mine" else None, T0)
    assert [r.job_id for r in got.started] == ["mine"] and await store.queue_depths() == {"default": 1}


async def test_an_end_is_written_only_under_the_claims_token(store: Store) -> None:
    await store.place_runs([fire("j")])
    (run,) = (await store.claim_queued("w", ["default"], 1, 41, lambda job: ONE, T0)).started
    assert await store.finish_runs([RunFinish(run.run_id, S.SUCCESS, T0, claim_token=40)]) == [run.run_id]
    assert await store.finish_runs([RunFinish(run.run_id, S.SUCCESS, T0, claim_token=41)]) == []
    assert (await store.get_run(run.run_id)).status is S.SUCCESS  # type: ignore[union-attr]


async def test_a_run_handed_to_a_new_attempt_refuses_its_old_claimers_late_end(store: Store) -> None:
    (old_id, _), = await store.place_runs([fire("j", status=S.RUNNING, claim_token=5, instance_id="frozen")])
    await store.abandon_orphans(T0, T0, dead_instances=["frozen"])
    again = fire("j", take_lock=False, rerun_if=frozenset({S.ABANDONED}), attempt=2, kind="retry", limit=None)
    assert [p[1] for p in await store.place_runs([again, again])] == [S.PENDING, S.PENDING]
    assert [r.attempt for r in await store.recent_runs(status=S.PENDING)] == [2]  # the second re-run: refused
    assert await store.finish_runs([RunFinish(old_id, S.SUCCESS, T0, claim_token=5)]) == [old_id]
    assert (await store.get_run(old_id)).status is S.ABANDONED  # type: ignore[union-attr]


async def test_cancel_ends_a_queued_run_at_once_and_flags_a_running_one_for_its_instance(store: Store) -> None:
    await store.place_runs([fire("j", T0), fire("j", T0 + timedelta(seconds=1), limit=None),
                            fire("k", status=S.RUNNING, claim_token=3, instance_id="w9")])
    (running,) = (await store.claim_queued("w1", ["default"], 1, 8, lambda job: MANY, T0)).started
    assert await store.request_cancel(job_id="j", by="ops@laptop", now=T0) == (1, 1)
    assert await store.cancel_requests("w1") == [(running.run_id, "ops@laptop")]
    assert await store.cancel_requests("w9") == []
    cancelled = (await store.recent_runs(status=S.CANCELLED))[0]
    assert cancelled.cancelled_by == "ops@laptop" and "before it started" in (cancelled.error_message or "")
    k = (await store.recent_runs("k"))[0]
    assert await store.request_cancel(run_id=k.run_id, by="cli", now=T0) == (0, 1)
    assert await store.request_cancel(run_id=k.run_id, by="cli", now=T0) == (0, 0)  # already asked


async def test_an_instance_row_says_what_it_serves(store: Store) -> None:
    me = InstanceInfo("w1", "h", 1, T0, role="worker", queues=("etl", "io"), capacity=50, running=3)
    await store.heartbeat(me, T0)
    (row,) = await store.list_instances()
    assert (row.role, row.queues, row.capacity, row.running) == ("worker", ("etl", "io"), 50, 3)


async def test_concurrent_workers_claim_each_queued_run_exactly_once(store: Store, store_url: str) -> None:
    await store.place_runs([fire(f"j{n}", T0 + timedelta(milliseconds=n), limit=None) for n in range(120)])
    others = [store] + [make_store(store_url) for _ in range(2)] if store.dialect != "memory" else [store] * 3
    for other in others[1:]:
        await other.open()
    try:
        async def worker(n: int) -> list[int]:
            got: list[int] = []
            while True:
                claim = await others[n % 3].claim_queued(f"w{n}", ["default"], 7, n, lambda job: MANY, T0)
                if not claim.started:
                    return got
                got += [r.run_id for r in claim.started]

        results = await asyncio.gather(*(worker(n) for n in range(6)))
    finally:
        for other in others[1:]:
            await other.close()
    claimed = Counter(run_id for got in results for run_id in got)
    assert len(claimed) == 120 and set(claimed.values()) == {1}


async def test_concurrent_claims_never_run_more_of_a_job_than_its_limit(store: Store, store_url: str) -> None:
    """Rounds of 6 workers claiming one job's queued runs at once (max_instances=2): after each
    round at most 2 are RUNNING; then they end and the next round starts from fresh rows."""
    if store.dialect == "memory":
        pytest.skip("one loop, no concurrency to race")
    others = [make_store(store_url) for _ in range(6)]
    for other in others:
        await other.open()
    two = JobLimits(max_instances=2, misfire_grace=None)
    try:
        for round_no in range(12):
            base = T0 + timedelta(minutes=round_no)
            await store.place_runs([fire("j", base + timedelta(milliseconds=n), limit=None) for n in range(12)])
            got = await asyncio.gather(*(o.claim_queued(f"w{n}", ["default"], 5, n + 1, lambda job: two, base)
                                         for n, o in enumerate(others)))
            started = [r for claim in got for r in claim.started]
            assert len(started) <= 2, f"round {round_no}: {len(started)} RUNNING"
            assert len(await store.recent_runs(status=S.RUNNING, limit=100)) == len(started)
            await store.finish_runs([RunFinish(r.run_id, S.SUCCESS, base, claim_token=r.claim_token)
                                     for r in started])
            await store.request_cancel(job_id="j", by="test", now=base)  # the queued rest: out of the way
    finally:
        for other in others:
            await other.close()
