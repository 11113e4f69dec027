"""Pieces of a fire in leader mode (memory store, fake clock): ctx.map, shards, broadcast.

Judged by the rows the store holds and by what the handlers did (call lists): results come
back in item order, each piece is a row of its own with its parent, a failed piece is placed
again alone, a re-run parent reuses the pieces already done.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.fanout import ItemFailed, MapFailed
from piko.core.types import BackfillPolicy, RunRecord, RunStatus
from piko.errors import RegistrationError
from piko.settings import Settings
from piko.store.memory import MemoryStore
from tests.conftest import advance

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_60S = {"seconds": 60, "start_date": "2026-03-01 12:00:00"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_app(clock: FakeClock, **settings: Any) -> PikoApp:
    s = Settings(http_enabled=False, leader_enabled=False, tune_gc=False, poll_interval_s=3600, **settings)
    return PikoApp("fan", settings=s, store=MemoryStore(clock), clock=clock)


def rows(app: PikoApp) -> list[RunRecord]:
    return [r for _, r in sorted(app.store.t.runs.items())]  # type: ignore[attr-defined]


def parents(app: PikoApp, job_id: str) -> list[tuple[datetime, RunStatus]]:
    return [(r.scheduled_at, r.status) for r in rows(app) if r.job_id == job_id]


def test_map_returns_results_in_item_order_and_records_each_item_as_a_child_run() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        got: list[Any] = []

        @app.task("square")
        async def square(ctx: dict[str, Any], item: int) -> int:
            await asyncio.sleep(0.001 * (5 - item))  # later items end first: order comes from the index
            return item * item

        @app.job("parent", interval=EVERY_60S)
        async def parent(ctx: Any, scheduled_time: datetime) -> None:
            results = await ctx.map("square", range(5), concurrency=3)
            got.append((results, ctx.reduce(lambda a, b: a + b, results)))

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.05)
            await advance(clock, 0)
        assert got == [([0, 1, 4, 9, 16], 30)]
        assert parents(app, "parent") == [(at(60), RunStatus.SUCCESS)]
        parent_id = next(r.run_id for r in rows(app) if r.job_id == "parent")
        kids = [r for r in rows(app) if r.job_id.startswith("square[")]
        assert sorted(r.job_id for r in kids) == [f"square[parent:1#{i}]" for i in range(5)]
        assert {(r.status, r.kind, r.parent_run_id, r.scheduled_at) for r in kids} == {
            (RunStatus.SUCCESS, "piece", parent_id, at(60))}
        assert sorted(r.result for r in kids) == ["0", "1", "16", "4", "9"]

    asyncio.run(scenario())


def test_a_failed_item_is_retried_alone_and_fail_fast_or_collect_decide_what_the_parent_sees() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: Counter[int] = Counter()
        seen: list[Any] = []

        @app.task("flaky", retries=1)
        async def flaky(ctx: dict[str, Any], item: int) -> int:
            calls[item] += 1
            if item == 2 and calls[item] == 1:
                raise ValueError("first try of item 2")
            if item == 3:
                raise ValueError("item 3 always fails")
            return item

        @app.job("collect", interval=EVERY_60S)
        async def collect(ctx: Any, scheduled_time: datetime) -> None:
            seen.append(await ctx.map("flaky", [0, 1, 2, 3], on_error="collect"))

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
            await advance(clock, 0)
        (results,) = seen
        assert results[:3] == [0, 1, 2]
        assert isinstance(results[3], ItemFailed) and results[3].error_type == "ValueError"
        assert "always fails" in str(results[3])
        assert calls == Counter({0: 1, 1: 1, 2: 2, 3: 2})  # retries=1: item 3 twice, item 2 once more only
        item2 = [r.status for r in rows(app) if r.job_id == "flaky[collect:1#2]"]
        assert item2 == [RunStatus.FAILED, RunStatus.SUCCESS]
        assert [r.attempt for r in rows(app) if r.job_id == "flaky[collect:1#2]"] == [1, 2]

    asyncio.run(scenario())


def test_a_rerun_parent_reuses_the_items_already_done() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: Counter[int] = Counter()
        broken = {7}

        @app.task("work")
        async def work(ctx: dict[str, Any], item: int) -> int:
            calls[item] += 1
            if item in broken:
                raise RuntimeError("a bad day for item 7")
            return item + 100

        out: list[list[int]] = []

        @app.job("etl", interval=EVERY_60S, retries=1, retry_backoff=1)
        async def etl(ctx: Any, scheduled_time: datetime) -> None:
            out.append(await ctx.map("work", range(10), concurrency=4))

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
            await advance(clock, 0)
            assert parents(app, "etl") == [(at(60), RunStatus.FAILED)]
            broken.clear()  # the cause is fixed; the parent's retry comes after its backoff
            for _ in range(3):
                await advance(clock, 1)
                await asyncio.sleep(0.01)
            await advance(clock, 0)
        assert parents(app, "etl") == [(at(60), RunStatus.FAILED), (at(60), RunStatus.SUCCESS)]
        assert out == [[i + 100 for i in range(10)]]
        assert calls[7] == 2
        assert all(calls[i] == 1 for i in range(10) if i != 7), calls  # done items were not run again

    asyncio.run(scenario())


def test_map_refuses_an_unknown_task_and_an_item_that_is_not_json_with_the_reason() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)

        @app.task("t")
        async def t(ctx: dict[str, Any], item: Any) -> Any:
            return item

        @app.job("bad_task", interval=EVERY_60S)
        async def bad_task(ctx: Any, scheduled_time: datetime) -> None:
            await ctx.map("nope", [1])

        @app.job("bad_item", interval=EVERY_60S)
        async def bad_item(ctx: Any, scheduled_time: datetime) -> None:
            await ctx.map("t", [1, {2}])

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
        by_job = {r.job_id: r for r in rows(app)}
        assert by_job["bad_task"].status is RunStatus.FAILED
        assert "no task registered as 'nope'" in (by_job["bad_task"].error_message or "")
        assert by_job["bad_item"].status is RunStatus.FAILED
        assert "item 1 cannot be stored as JSON" in (by_job["bad_item"].error_message or "")

    asyncio.run(scenario())


def test_a_result_over_the_size_cap_fails_its_item_with_a_clear_error() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)

        @app.task("big")
        async def big(ctx: dict[str, Any], item: int) -> str:
            return "x" * (100_000 if item else 10)

        @app.job("p", interval=EVERY_60S)
        async def p(ctx: Any, scheduled_time: datetime) -> None:
            await ctx.map("big", [0, 1])

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
        kid = next(r for r in rows(app) if r.job_id == "big[p:1#1]")
        assert kid.status is RunStatus.FAILED and kid.error_type == "PieceError"
        assert "over the 65,536-byte cap" in (kid.error_message or "")
        parent = next(r for r in rows(app) if r.job_id == "p")
        assert parent.status is RunStatus.FAILED and parent.error_type == "MapFailed"

    asyncio.run(scenario())


def test_a_sharded_fire_runs_each_shard_once_and_retries_only_the_failed_one() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[tuple[int, int]] = []
        failed_once: set[int] = set()

        @app.job("scan", interval=EVERY_60S, shards=4, retries=1)
        async def scan(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append(ctx["shard"])
            if ctx["shard"][0] == 2 and 2 not in failed_once:
                failed_once.add(2)
                raise OSError("shard 2's disk hiccup")

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
            await advance(clock, 0)
        assert sorted(calls) == [(0, 4), (1, 4), (2, 4), (2, 4), (3, 4)]
        assert parents(app, "scan") == [(at(60), RunStatus.SUCCESS)]
        shard2 = [r.status for r in rows(app) if r.job_id == "scan[2/4]"]
        assert shard2 == [RunStatus.FAILED, RunStatus.SUCCESS]

    asyncio.run(scenario())


def test_the_shards_column_changes_the_split_while_it_runs() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[tuple[datetime, tuple[int, int]]] = []

        @app.job("scan", interval=EVERY_60S, shards=2)
        async def scan(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            calls.append((scheduled_time, ctx["shard"]))

        async with app:
            await advance(clock, 60)
            row = (await app.store.load_schedules(["scan"]))[0]
            await app.store.upsert_schedule(replace(row, shards=3))
            await app.live.reconcile_once()
            await advance(clock, 60)
        assert sorted(c for t, c in calls if t == at(60)) == [(0, 2), (1, 2)]
        assert sorted(c for t, c in calls if t == at(120)) == [(0, 3), (1, 3), (2, 3)]

    asyncio.run(scenario())


def test_a_stateful_sharded_job_moves_its_watermark_only_when_every_shard_of_the_window_succeeded() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        windows: list[tuple[int, Any]] = []
        fail = {1}

        @app.job("load", interval=EVERY_60S, shards=2, stateful=True, backfill_policy=BackfillPolicy.SKIP)
        async def load(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            windows.append((ctx["shard"][0], ctx["data_interval"]))
            if ctx["shard"][0] in fail:
                raise RuntimeError("shard 1 cannot reach its source")

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
            assert await app.store.get_watermark("load") is None
            fail.clear()
            await advance(clock, 60)
            await asyncio.sleep(0.02)
            await advance(clock, 0)
            mark = await app.store.get_watermark("load")
        assert parents(app, "load")[0] == (at(60), RunStatus.FAILED)
        assert parents(app, "load")[-1] == (at(120), RunStatus.SUCCESS)
        assert mark == at(120)
        assert {w.end for _, w in windows} == {at(60), at(120)}  # each shard got its fire's window

    asyncio.run(scenario())


def test_a_broadcast_fire_runs_once_here_in_leader_mode() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        seen: list[str] = []

        @app.job("refresh", interval=EVERY_60S, broadcast=True)
        async def refresh(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            seen.append(ctx["instance_id"])

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.01)
            await advance(clock, 0)
            me = app.runner.instance_id  # type: ignore[union-attr]
        assert seen == [me]
        assert [r.job_id for r in rows(app) if r.job_id.startswith("refresh[")] == [f"refresh[@{me}]"]

    asyncio.run(scenario())


@pytest.mark.parametrize("options, message", [
    ({"shards": 0}, "shards=0 must be an integer >= 1"),
    ({"shards": 5000}, "over 1000"),
    ({"shards": 2, "broadcast": True}, "not both"),
    ({"broadcast": "yes"}, "must be True or False"),
])
def test_bad_piece_options_are_refused_at_import(options: dict[str, Any], message: str) -> None:
    app = PikoApp("bad", settings=Settings(http_enabled=False))
    with pytest.raises(RegistrationError, match=message):
        @app.job("j", interval={"seconds": 5}, **options)
        async def j(ctx: Any, t: datetime) -> None: ...


def test_job_ids_may_not_contain_the_piece_bracket() -> None:
    app = PikoApp("bad", settings=Settings(http_enabled=False))
    with pytest.raises(RegistrationError, match="must not contain"):
        @app.job("a[1]", interval={"seconds": 5})
        async def j(ctx: Any, t: datetime) -> None: ...


def test_map_fail_fast_raises_map_failed_naming_the_item() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        raised: list[MapFailed] = []

        @app.task("t")
        async def t(ctx: dict[str, Any], item: int) -> int:
            if item == 1:
                raise KeyError("missing month")
            return item

        @app.job("p", interval=EVERY_60S)
        async def p(ctx: Any, scheduled_time: datetime) -> None:
            try:
                await ctx.map("t", [0, 1, 2], concurrency=1)
            except MapFailed as exc:
                raised.append(exc)
                raise

        async with app:
            await advance(clock, 60)
            await asyncio.sleep(0.02)
        (exc,) = raised
        assert "item 1 FAILED: KeyError" in str(exc) and [f.index for f in exc.failures] == [1]
        assert "t[p:1#2]" not in {r.job_id for r in rows(app)}  # fail_fast: item 2 was never placed

    asyncio.run(scenario())
