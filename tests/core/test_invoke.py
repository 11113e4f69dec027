"""Invoker: a run under a leader term stops at its first resume after the term ended."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from piko.core.invoke import Invoker
from piko.core.registry import JobSpec
from piko.core.resource import ResourcePool
from piko.core.types import Fence, RunStatus

TERM = Fence("default", "me", 7)


def invoker(current: list[Fence | None]) -> Invoker:
    return Invoker(ResourcePool(), [], set(), set(), lambda: current[0])


def ctx() -> dict:
    return {"run_id": 1, "job_id": "j", "scheduled_time": datetime(2026, 3, 1, tzinfo=timezone.utc)}


def test_a_handler_resumed_after_its_term_ended_is_cancelled_before_its_next_line() -> None:
    """A frozen process wakes with the handler's timer due before the step-down timer: the
    guard, not a cancel() from the step-down, must stop the code after the await."""
    steps: list[str] = []
    current: list[Fence | None] = [TERM]

    async def handler(ctx, scheduled_time):
        steps.append("before")
        try:
            await asyncio.sleep(0.01)
            steps.append("after")  # must not run: the term ended while it slept
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup may await: it is not cancelled again
            steps.append("cleanup")
            raise

    async def scenario():
        me = asyncio.current_task()
        run = asyncio.ensure_future(invoker(current).inline(me, JobSpec("j", handler), ctx(), fence=TERM))
        await asyncio.sleep(0)
        current[0] = None  # the term ran out; nobody cancelled anything
        return await run

    outcome = asyncio.run(scenario())
    assert steps == ["before", "cleanup"]
    assert outcome.status is RunStatus.CANCELLED and "lost leadership" in (outcome.error_message or "")


def test_a_new_term_of_the_same_holder_does_not_let_an_old_run_go_on() -> None:
    current: list[Fence | None] = [TERM]
    steps: list[str] = []

    async def handler(ctx, scheduled_time):
        await asyncio.sleep(0.01)
        steps.append("after")

    async def scenario():
        run = asyncio.ensure_future(invoker(current).in_task(JobSpec("j", handler), ctx(), 5.0, fence=TERM))
        await asyncio.sleep(0)
        current[0] = Fence("default", "me", 8)
        return await run

    assert asyncio.run(scenario()).status is RunStatus.CANCELLED and steps == []


def test_while_the_term_holds_the_handler_runs_and_returns_its_value_and_unfenced_runs_are_plain() -> None:
    current: list[Fence | None] = [TERM]

    async def handler(ctx, scheduled_time):
        for _ in range(3):
            await asyncio.sleep(0)
        return 42

    async def scenario():
        fenced = await invoker(current).in_task(JobSpec("j", handler), ctx(), None, fence=TERM)
        current[0] = None
        plain = await invoker(current).in_task(JobSpec("j", handler), ctx(), None, fence=None)
        return fenced, plain

    fenced, plain = asyncio.run(scenario())
    assert (fenced.status, fenced.result, plain.status, plain.result) == (RunStatus.SUCCESS, 42, RunStatus.SUCCESS, 42)
