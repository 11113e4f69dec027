"""Invoker: a run under a leader term stops at its first resume after the term ended; failed and
timed-out runs carry a bounded traceback."""

from __future__ import annotations

import asyncio
import traceback
from datetime import datetime, timezone

from piko.core.invoke import TRACEBACK_MAX_CHARS, Invoker, bounded_traceback
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


def _raise_deep(depth: int) -> None:
    if depth == 0:
        raise ValueError("bad input at the bottom")
    _raise_deeper(depth - 1)


def _raise_deeper(depth: int) -> None:  # two alternating frames: Python prints every one of them
    _raise_deep(depth)


def test_a_failed_run_carries_its_traceback_down_to_the_raising_line_inline_and_in_a_task() -> None:
    async def handler(ctx, scheduled_time):
        _raise_deep(2)

    async def scenario():
        me = asyncio.current_task()
        inline = await invoker([None]).inline(me, JobSpec("j", handler), ctx(), fence=None)
        in_task = await invoker([None]).in_task(JobSpec("j", handler), ctx(), 5.0, fence=None)
        return inline, in_task

    for outcome in asyncio.run(scenario()):
        assert outcome.status is RunStatus.FAILED and outcome.error_type == "ValueError"
        trace = outcome.error_traceback or ""
        assert trace.startswith("Traceback (most recent call last):")
        assert "in handler" in trace and "in _raise_deep" in trace
        assert trace.rstrip().endswith("ValueError: bad input at the bottom")


def test_a_timed_out_run_carries_where_the_handler_was_waiting_when_time_ran_out() -> None:
    async def wait_for_upstream():
        await asyncio.sleep(30)

    async def handler(ctx, scheduled_time):
        await wait_for_upstream()

    outcome = asyncio.run(invoker([None]).in_task(JobSpec("j", handler), ctx(), 0.05, fence=None))
    assert outcome.status is RunStatus.TIMEOUT
    trace = outcome.error_traceback or ""
    assert "in wait_for_upstream" in trace and "await asyncio.sleep(30)" in trace
    assert trace.rstrip().endswith("JobTimeout: job exceeded its timeout of 0.05s")


def test_successful_and_cancelled_runs_carry_no_traceback() -> None:
    async def handler(ctx, scheduled_time):
        await asyncio.sleep(0.01)

    current: list[Fence | None] = [TERM]

    async def scenario():
        ok = await invoker([None]).in_task(JobSpec("j", handler), ctx(), None, fence=None)
        run = asyncio.ensure_future(invoker(current).in_task(JobSpec("j", handler), ctx(), 5.0, fence=TERM))
        await asyncio.sleep(0)
        current[0] = None
        return ok, await run

    ok, cancelled = asyncio.run(scenario())
    assert (ok.status, ok.error_traceback) == (RunStatus.SUCCESS, None)
    assert (cancelled.status, cancelled.error_traceback) == (RunStatus.CANCELLED, None)


def test_a_long_traceback_keeps_its_innermost_lines_and_says_how_much_was_cut() -> None:
    try:
        _raise_deep(400)
    except ValueError as exc:
        caught = exc
    full = "".join(traceback.format_exception(type(caught), caught, caught.__traceback__))
    assert len(full) > 3 * TRACEBACK_MAX_CHARS
    kept = bounded_traceback(caught)
    first, _, rest = kept.partition("\n")
    assert len(kept) <= TRACEBACK_MAX_CHARS
    assert first == f"... ({len(full) - len(rest)} characters cut)"
    assert full.endswith(rest) and rest.startswith("  File ")  # cut at a line start
    assert rest.rstrip().endswith("ValueError: bad input at the bottom")
    assert bounded_traceback(ValueError("short")) == "ValueError: short\n"  # never raised: no frames
    assert bounded_traceback(OSError("mysql://app:hunter2@db/x: refused")) == "OSError: mysql://app:***@db/x: refused\n"
    one_line = bounded_traceback(ValueError("x" * 20000))  # no line start to cut at: cut inside it
    assert len(one_line) <= TRACEBACK_MAX_CHARS and one_line.startswith("... (") and one_line.endswith("xx\n")


def test_the_cancel_event_is_a_threading_event_that_wakes_a_waiting_thread() -> None:
    """Pass: a thread blocked in wait() wakes when the loop side sets the event, however many
    threads wait; clear() and a timed wait() behave as threading.Event's."""
    import threading

    from piko.core.invoke import CancelEvent

    event = CancelEvent()
    assert isinstance(event, threading.Event) and not event.is_set()
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(event.wait(10))) for _ in range(8)]
    for t in waiters:
        t.start()
    event.set()
    for t in waiters:
        t.join(10)
    assert woke == [True] * 8 and event.is_set()
    event.clear()
    assert not event.is_set() and event.wait(0.01) is False


def test_a_cancel_request_sets_the_runs_cancel_event() -> None:
    """Pass: Invoker.cancel() sets the event the handler's ctx holds and the run ends CANCELLED."""
    inv = invoker([None])
    seen: list[bool] = []

    async def scenario():
        started = asyncio.Event()

        async def handler(ctx, scheduled_time):
            started.set()
            try:
                await asyncio.sleep(10)
            finally:
                seen.append(ctx["cancel_event"].is_set())

        task = asyncio.create_task(inv.in_task(JobSpec("j", handler), ctx(), None, fence=None))
        await started.wait()
        assert inv.cancel(1, "ops")
        return await task

    assert asyncio.run(scenario()).status is RunStatus.CANCELLED and seen == [True]
