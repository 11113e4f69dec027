"""Workflows in leader mode (memory store, fake clock): DAG order, upstream values, failure
propagation, all_done, re-run from a step, declaration errors. Judged by what each step saw and
by the rows."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from piko import PikoApp
from piko.clock import FakeClock
from piko.core.types import RunRecord, RunStatus
from piko.errors import RegistrationError, StoreError
from piko.settings import Settings
from piko.store.memory import MemoryStore
from tests.conftest import advance

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_60S = {"seconds": 60, "start_date": "2026-03-01 12:00:00"}


def make_app(clock: FakeClock) -> PikoApp:
    s = Settings(http_enabled=False, leader_enabled=False, tune_gc=False, poll_interval_s=3600)
    return PikoApp("wf", settings=s, store=MemoryStore(clock), clock=clock)


def rows(app: PikoApp) -> list[RunRecord]:
    return [r for _, r in sorted(app.store.t.runs.items())]  # type: ignore[attr-defined]


def steps(app: PikoApp, workflow: str) -> dict[str, list[str]]:
    """step -> the statuses of its rows, oldest first."""
    out: dict[str, list[str]] = {}
    for r in rows(app):
        if r.job_id.startswith(workflow + "[step:"):
            out.setdefault(r.job_id[len(workflow) + 6:-1], []).append(r.status.value)
    return out


async def settle(clock: FakeClock, seconds: float = 0) -> None:
    await advance(clock, seconds)
    for _ in range(3):
        await asyncio.sleep(0.01)
        await advance(clock, 0)


def test_a_diamond_runs_each_step_once_after_its_dependencies_with_their_results() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        seen: list[tuple[str, Any, Any]] = []
        wf = app.workflow("etl", interval=EVERY_60S)

        @wf.step("extract")
        async def extract(ctx: dict[str, Any], scheduled_time: datetime) -> list[int]:
            seen.append(("extract", ctx["upstream"], dict(ctx["workflow"])))
            ctx["workflow"]["source"] = "orders"
            return [1, 2, 3]

        @wf.step("clean", after=["extract"])
        async def clean(ctx: dict[str, Any], scheduled_time: datetime) -> int:
            seen.append(("clean", ctx["upstream"], dict(ctx["workflow"])))
            return sum(ctx["upstream"]["extract"])

        @wf.step("audit", after=["extract"])
        async def audit(ctx: dict[str, Any], scheduled_time: datetime) -> str:
            seen.append(("audit", ctx["upstream"], dict(ctx["workflow"])))
            ctx["workflow"]["audited"] = True
            return "ok"

        @wf.step("load", after=["clean", "audit"])
        async def load(ctx: dict[str, Any], scheduled_time: datetime) -> None:
            seen.append(("load", ctx["upstream"], dict(ctx["workflow"])))

        async with app:
            await settle(clock, 60)
        by_step = {name: (up, shared) for name, up, shared in seen}
        assert [name for name, _, _ in seen][0] == "extract" and [name for name, _, _ in seen][-1] == "load"
        assert by_step["clean"] == ({"extract": [1, 2, 3]}, {"source": "orders"})
        assert by_step["load"] == ({"clean": 6, "audit": "ok"}, {"source": "orders", "audited": True})
        assert steps(app, "etl") == {"extract": ["SUCCESS"], "clean": ["SUCCESS"], "audit": ["SUCCESS"],
                                     "load": ["SUCCESS"]}
        parent = [r for r in rows(app) if r.job_id == "etl"]
        assert [(r.status, r.scheduled_at) for r in parent] == [(RunStatus.SUCCESS, T0 + timedelta(seconds=60))]
        assert {r.parent_run_id for r in rows(app) if r.job_id.startswith("etl[")} == {parent[0].run_id}

    asyncio.run(scenario())


def test_independent_steps_run_in_parallel_and_fan_in_waits_for_all() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        running: list[int] = []
        peak = [0]
        wf = app.workflow("fan", interval=EVERY_60S)

        @wf.step("start")
        async def start(ctx: dict[str, Any], t: datetime) -> int:
            return 0

        for n in range(5):
            async def part(ctx: dict[str, Any], t: datetime, n: int = n) -> int:
                running.append(n)
                peak[0] = max(peak[0], len(running))
                await asyncio.sleep(0.01)
                running.remove(n)
                return n

            wf.step(f"part{n}", after=["start"])(part)

        @wf.step("total", after=[f"part{n}" for n in range(5)])
        async def total(ctx: dict[str, Any], t: datetime) -> int:
            return sum(ctx["upstream"].values())

        async with app:
            await settle(clock, 60)
        assert peak[0] == 5
        assert steps(app, "fan")["total"] == ["SUCCESS"]
        assert next(r.result for r in rows(app) if r.job_id == "fan[step:total]") == '{"v":10,"w":{}}'

    asyncio.run(scenario())


def test_a_failed_step_fails_its_dependants_as_upstream_failed_and_all_done_still_runs() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        cleaned: list[dict[str, Any]] = []
        wf = app.workflow("nightly", interval=EVERY_60S)

        @wf.step("extract", retries=1)
        async def extract(ctx: dict[str, Any], t: datetime) -> None:
            raise ConnectionError("source is down")

        @wf.step("transform", after=["extract"])
        async def transform(ctx: dict[str, Any], t: datetime) -> None: ...

        @wf.step("load", after=["transform"])
        async def load(ctx: dict[str, Any], t: datetime) -> None: ...

        @wf.step("cleanup", after=["load"], trigger_rule="all_done")
        async def cleanup(ctx: dict[str, Any], t: datetime) -> None:
            cleaned.append(ctx["upstream"])

        async with app:
            await settle(clock, 60)
        assert steps(app, "nightly") == {"extract": ["FAILED", "FAILED"], "transform": ["UPSTREAM_FAILED"],
                                         "load": ["UPSTREAM_FAILED"], "cleanup": ["SUCCESS"]}
        assert cleaned == [{"load": None}]
        parent = next(r for r in rows(app) if r.job_id == "nightly")
        assert parent.status is RunStatus.FAILED and parent.error_type == "WorkflowFailed"
        assert "extract FAILED" in (parent.error_message or "") and "load UPSTREAM_FAILED" in (parent.error_message or "")
        upstream = next(r for r in rows(app) if r.job_id == "nightly[step:transform]")
        assert upstream.error_message == "needs extract FAILED"

    asyncio.run(scenario())


def test_rerun_runs_the_failed_step_and_downstream_and_keeps_upstream_results() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[str] = []
        broken = {"transform"}
        wf = app.workflow("etl", interval={"seconds": 3600, "start_date": "2026-03-01 12:00:00"})

        @wf.step("extract")
        async def extract(ctx: dict[str, Any], t: datetime) -> int:
            calls.append("extract")
            return 41

        @wf.step("transform", after=["extract"])
        async def transform(ctx: dict[str, Any], t: datetime) -> int:
            calls.append("transform")
            if "transform" in broken:
                raise ValueError("bad mapping")
            return ctx["upstream"]["extract"] + 1

        @wf.step("load", after=["transform"])
        async def load(ctx: dict[str, Any], t: datetime) -> int:
            calls.append("load")
            return ctx["upstream"]["transform"]

        async with app:
            await settle(clock, 3600)
            first = next(r for r in rows(app) if r.job_id == "etl")
            assert first.status is RunStatus.FAILED and calls == ["extract", "transform"]
            broken.clear()
            outcome = await app.rerun_workflow(first.run_id)
            assert outcome.status is RunStatus.SUCCESS
            assert calls == ["extract", "transform", "transform", "load"]  # extract's result was kept
            with pytest.raises(StoreError, match="not the newest attempt"):  # idempotent: it was re-run already
                await app.rerun_workflow(first.run_id)
        assert steps(app, "etl") == {"extract": ["SUCCESS"], "transform": ["FAILED", "SUCCESS"],
                                     "load": ["UPSTREAM_FAILED", "SUCCESS"]}
        assert [r.result for r in rows(app) if r.job_id == "etl[step:load]"][-1] == '{"v":42,"w":{}}'

    asyncio.run(scenario())


def test_rerun_from_a_step_runs_it_and_downstream_even_after_success() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        calls: list[str] = []
        wf = app.workflow("etl", interval={"seconds": 3600, "start_date": "2026-03-01 12:00:00"})
        for name, after in (("a", []), ("b", ["a"]), ("c", ["b"]), ("side", ["a"])):
            async def step(ctx: dict[str, Any], t: datetime, name: str = name) -> str:
                calls.append(name)
                return name

            wf.step(name, after=after)(step)

        async with app:
            await settle(clock, 3600)
            first = next(r for r in rows(app) if r.job_id == "etl")
            assert first.status is RunStatus.SUCCESS
            calls.clear()
            outcome = await app.rerun_workflow(first.run_id, ["b"])
        assert outcome.status is RunStatus.SUCCESS
        assert sorted(calls) == ["b", "c"]  # not a (upstream), not side (not downstream of b)

    asyncio.run(scenario())


def test_declaration_errors_name_the_steps() -> None:
    app = PikoApp("bad", settings=Settings(http_enabled=False))
    wf = app.workflow("w", interval={"seconds": 60})

    @wf.step("a", after=["c"])
    async def a(ctx: Any, t: datetime) -> None: ...

    @wf.step("b", after=["a"])
    async def b(ctx: Any, t: datetime) -> None: ...

    with pytest.raises(RegistrationError, match=r"steps form a cycle: c -> b -> a -> c|cycle"):
        @wf.step("c", after=["b"])
        async def c(ctx: Any, t: datetime) -> None: ...

    with pytest.raises(RegistrationError, match="step 'a' is declared twice"):
        @wf.step("a")
        async def a2(ctx: Any, t: datetime) -> None: ...

    with pytest.raises(RegistrationError, match=r"step 'a' runs after unknown step\(s\) 'c'"):
        app.registry.check()
    with pytest.raises(RegistrationError, match="trigger_rule='sometimes'"):
        wf.step("d", trigger_rule="sometimes")(b)


def test_a_500_step_fan_out_and_fan_in_completes_with_one_run_per_step() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        wf = app.workflow("wide", interval=EVERY_60S)

        @wf.step("start")
        async def start(ctx: dict[str, Any], t: datetime) -> int:
            return 1

        for n in range(500):
            async def part(ctx: dict[str, Any], t: datetime, n: int = n) -> int:
                return n + ctx["upstream"]["start"]

            wf.step(f"p{n}", after=["start"])(part)

        @wf.step("end", after=[f"p{n}" for n in range(500)])
        async def end(ctx: dict[str, Any], t: datetime) -> int:
            return sum(ctx["upstream"].values())

        async with app:
            await settle(clock, 60)
        made = steps(app, "wide")
        assert len(made) == 502 and all(v == ["SUCCESS"] for v in made.values())
        assert [r.result for r in rows(app) if r.job_id == "wide[step:end]"] == ['{"v":125250,"w":{}}']

    asyncio.run(scenario())


def test_cancelling_a_workflow_run_cancels_its_running_steps() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        app = make_app(clock)
        wf = app.workflow("slow", interval=EVERY_60S)
        never = asyncio.Event()

        @wf.step("wait")
        async def wait(ctx: dict[str, Any], t: datetime) -> None:
            await never.wait()

        @wf.step("after", after=["wait"])
        async def after(ctx: dict[str, Any], t: datetime) -> None: ...

        async with app:
            await settle(clock, 60)
            parent = next(r for r in rows(app) if r.job_id == "slow")
            assert app.runner.cancel_run(parent.run_id, "ops@desk")  # type: ignore[union-attr]
            await settle(clock, 0)
            parent = next(r for r in rows(app) if r.job_id == "slow")
        assert parent.status is RunStatus.CANCELLED and "ops@desk" in (parent.error_message or "")
        assert steps(app, "slow") == {"wait": ["CANCELLED"]}

    asyncio.run(scenario())
