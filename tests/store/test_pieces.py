"""The pieces role of every store: a piece's parent, payload and result; finding pieces by key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from piko.core.types import RunClaim, RunFinish, RunStatus, ScheduleRow
from piko.protocols import Store

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
S = RunStatus


def piece(slot: str, at: datetime = T0, **kw) -> RunClaim:
    return RunClaim(slot, at, kw.pop("status", S.RUNNING), at, "i1", kind="piece", parent_run_id=kw.pop("parent", 1),
                    payload=kw.pop("payload", None), claim_token=kw.pop("claim_token", 5), **kw)


async def test_a_piece_keeps_its_parent_payload_and_result(store: Store) -> None:
    (run_id,) = await store.claim_runs([piece("t[p:1#0]", payload='{"month": "2026-01"}', parent=42)])
    assert run_id is not None
    assert await store.finish_runs([RunFinish(run_id, S.SUCCESS, T0 + timedelta(seconds=1), duration_s=1.0,
                                              claim_token=5, result='[1, "two"]')]) == []
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.parent_run_id, run.payload, run.result, run.kind) == (42, '{"month": "2026-01"}', '[1, "two"]', "piece")
    assert [r.run_id for r in await store.children([42, 7])] == [run_id]


async def test_pieces_answers_the_newest_row_of_each_slot_under_a_prefix_at_one_time(store: Store) -> None:
    first, other, later, elsewhere, like = await store.claim_runs([
        piece("t[p:1#0]"), piece("t[p:1#1]"), piece("t[p:1#0]", T0 + timedelta(minutes=1)),
        piece("t[q:1#0]"), piece("t[p_1#0]")])  # '_' is no wildcard here
    await store.finish_runs([RunFinish(first, S.FAILED, T0, claim_token=5)])  # type: ignore[arg-type]
    (retry,) = await store.claim_runs([piece("t[p:1#0]", attempt=2, take_lock=False,
                                             rerun_if=frozenset({S.FAILED}))])
    found = {r.job_id: (r.run_id, r.status) for r in await store.pieces("t[p:1#", T0)}
    assert found == {"t[p:1#0]": (retry, S.RUNNING), "t[p:1#1]": (other, S.RUNNING)}
    assert await store.pieces("T[P:1#", T0) == []  # a case-insensitive collation lets nothing else in


async def test_the_shards_column_is_stored_and_read_back(store: Store) -> None:
    await store.upsert_schedule(ScheduleRow("scan", "interval", '{"seconds": 5}', shards=8))
    (row,) = await store.load_schedules(["scan"])
    assert row.shards == 8
    await store.upsert_schedule(ScheduleRow("scan", "interval", '{"seconds": 5}', shards=None))
    (row,) = await store.load_schedules(["scan"])
    assert row.shards is None
