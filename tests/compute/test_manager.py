"""CpuManager's API: results, order, reduce, chunking, errors raised before sending, and
its life across close() and event loops."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import pickle
import sys
import threading

import pytest

from piko.compute.manager import (
    CpuManager,
    RemoteError,
    RemoteTraceback,
    UnpicklableCallError,
    chunked,
    current_job,
    default_chunksize,
    default_workers,
)
from piko.errors import ConfigError, OffloadError
from tests.compute import workfns
from tests.compute.liveness import is_alive

pytestmark = pytest.mark.timeout(60)


# -- pure pieces -------------------------------------------------------------------------


def test_default_workers_leaves_a_core_for_the_loop_but_is_at_least_one():
    assert default_workers() >= 1


def test_default_chunksize_gives_about_four_chunks_per_worker():
    assert default_chunksize(100, 2) == 13  # 8 chunks
    assert default_chunksize(3, 4) == 1
    assert default_chunksize(0, 4) == 1


def test_chunked_keeps_order_and_the_short_tail():
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"per_job_cap": 0}, {"max_tasks_per_worker": -1}])
def test_sizes_below_one_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match="at least 1"):
        CpuManager(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"workers": True}, r"workers must be an int of at least 1 or None, got True \(bool\)"),
        ({"workers": 2.0}, r"workers must be an int .* got 2.0 \(float\)"),
        ({"workers": "2"}, r"workers must be an int .* got '2' \(str\)"),
        ({"per_job_cap": False}, r"per_job_cap must be an int .* got False \(bool\)"),
        ({"max_tasks_per_worker": 1.5}, r"max_tasks_per_worker must be an int .* got 1.5"),
    ],
)
def test_sizes_that_are_not_ints_are_config_errors_naming_the_argument(kwargs, shown):
    with pytest.raises(ConfigError, match=shown):
        CpuManager(**kwargs)


def test_fork_is_refused_as_a_start_method():
    with pytest.raises(ConfigError, match="'fork' is unsafe"):
        CpuManager(start_method="fork")


def test_an_unpicklable_initializer_is_refused_at_construction():
    with pytest.raises(UnpicklableCallError, match="initializer"):
        CpuManager(initializer=lambda: None)


# -- submit ------------------------------------------------------------------------------


async def test_submit_returns_the_result_and_passes_args_and_kwargs():
    async with CpuManager(1) as cm:
        assert await cm.submit(workfns.add, 2, 3, scale=4) == 20


async def test_the_pool_starts_lazily_on_the_first_call():
    async with CpuManager(2) as cm:
        assert cm.pids() == []
        await cm.submit(workfns.square, 3)
        assert len(cm.pids()) == 2


async def test_timeout_is_piko_s_keyword_and_partial_reaches_a_user_timeout():
    async with CpuManager(1) as cm:
        assert await cm.submit(workfns.add, 1, 2, timeout=30) == 3
        assert await cm.submit(functools.partial(workfns.wants_timeout, timeout=7.5)) == 7.5


async def test_a_lambda_is_refused_before_anything_is_sent_and_named():
    async with CpuManager(1) as cm:
        with pytest.raises(UnpicklableCallError, match=r"cannot send .*<lambda>.* cannot be pickled"):
            await cm.submit(lambda x: x, 1)
        assert cm.pids() == []  # nothing started, nothing sent


async def test_a_nested_function_is_refused_and_named():
    def inner(x):
        return x

    async with CpuManager(1) as cm:
        with pytest.raises(UnpicklableCallError, match=r"<locals>\.inner.*module top level"):
            await cm.map_reduce(inner, [1, 2])


async def test_unpicklable_arguments_are_refused_naming_the_function():
    async with CpuManager(1) as cm:
        with pytest.raises(UnpicklableCallError, match=r"arguments of tests\.compute\.workfns\.add"):
            await cm.submit(workfns.add, threading.Lock(), 1)


async def test_an_async_function_is_refused():
    async def job():
        return 1

    async with CpuManager(1) as cm:
        with pytest.raises(UnpicklableCallError, match="async function"):
            await cm.submit(job)


async def test_a_worker_exception_keeps_its_type_and_carries_the_worker_traceback():
    async with CpuManager(1) as cm:
        with pytest.raises(ValueError, match="boom") as info:
            await cm.submit(workfns.raise_value_error, "boom")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "workfns.py" in cause.text and "in raise_value_error" in cause.text


async def test_an_exception_that_cannot_travel_becomes_remote_error_with_its_text():
    async with CpuManager(1) as cm:
        with pytest.raises(RemoteError, match="NeedsTwoArgs: x/y") as info:
            await cm.submit(workfns.raise_needs_two_args)
        assert "raise_needs_two_args" in info.value.__cause__.text
        with pytest.raises(RemoteError, match="SystemExit: 2"):
            await cm.submit(workfns.system_exit)  # must not stop the parent
        assert await cm.submit(workfns.square, 5) == 25


async def test_an_unpicklable_result_is_a_clear_error():
    async with CpuManager(1) as cm:
        with pytest.raises(UnpicklableCallError, match="result of tests.compute.workfns.return_lambda"):
            await cm.submit(workfns.return_lambda)


@pytest.mark.parametrize(
    ("timeout", "error", "shown"),
    [
        (True, TypeError, r"timeout must be a number of seconds or None, got True \(bool\)"),
        ("1", TypeError, r"timeout must be a number of seconds or None, got '1' \(str\)"),
        (-1, ValueError, r"timeout must be a number of seconds of at least 0 or None, got -1"),
        (float("nan"), ValueError, r"timeout must be .* at least 0 or None, got nan"),
    ],
)
async def test_a_bad_submit_timeout_is_refused_before_anything_starts(timeout, error, shown):
    async with CpuManager(1) as cm:
        with pytest.raises(error, match=shown):
            await cm.submit(workfns.square, 2, timeout=timeout)
        assert cm.pids() == []


# -- life across close() and event loops ----------------------------------------------------


async def test_after_close_the_next_call_starts_a_fresh_pool():
    cm = CpuManager(1)
    old = await cm.submit(workfns.pid)
    await cm.close()
    assert not is_alive(old) and cm.pids() == []
    new = await cm.submit(workfns.pid)
    assert new != old and cm.pids() == [new]
    async with cm:  # entered again after a close: usable, and closed again on exit
        assert await cm.submit(workfns.square, 4) == 16
    assert not is_alive(new)
    assert multiprocessing.active_children() == []


async def test_calls_made_while_close_runs_are_refused_and_running_ones_finish():
    cm = CpuManager(1)
    await cm.warm_up()
    running = asyncio.ensure_future(cm.submit(workfns.sleep_then, 0.3, "done"))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(cm.close(timeout_s=10))
    await asyncio.sleep(0)
    with pytest.raises(OffloadError, match=r"closing; it accepts calls again once close\(\) has returned"):
        await cm.submit(workfns.square, 2)
    await closing
    assert await running == "done"


async def test_a_cancelled_close_kills_the_workers_and_leaves_the_manager_usable():
    cm = CpuManager(1)
    pid = await cm.submit(workfns.pid)
    stuck = asyncio.ensure_future(cm.submit(workfns.sleep_then, 30))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(cm.close(timeout_s=30))
    await asyncio.sleep(0.1)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert not is_alive(pid)
    with pytest.raises(OffloadError, match="killed before this call finished"):
        await stuck
    assert await cm.submit(workfns.square, 3) == 9
    await cm.close()
    assert multiprocessing.active_children() == []


def test_one_manager_serves_successive_event_loops_and_kills_the_ended_loop_s_workers():
    cm = CpuManager(1)

    async def use() -> int:
        return await cm.submit(workfns.pid)

    first = asyncio.run(use())
    assert is_alive(first)  # still up (idle) here, so the check below shows who stopped it
    second = asyncio.run(use())
    assert second != first
    assert not is_alive(first)
    asyncio.run(cm.close())  # closing from yet another loop kills them outright
    assert not is_alive(second)
    assert multiprocessing.active_children() == []


def test_a_manager_busy_on_a_loop_in_another_thread_is_refused_not_taken_over():
    cm = CpuManager(1)
    is_holding = threading.Event()
    held: list[object] = []

    async def hold() -> None:
        await cm.warm_up()
        call = asyncio.ensure_future(cm.submit(workfns.sleep_then, 0.5, "held"))
        await asyncio.sleep(0.05)
        is_holding.set()
        held.append(await call)
        await cm.close()

    async def intrude() -> None:
        await cm.submit(workfns.square, 2)

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert is_holding.wait(10)
        with pytest.raises(OffloadError, match="in use by an event loop running in another thread"):
            asyncio.run(intrude())
    finally:
        thread.join(10)
    assert held == ["held"]


# -- map_reduce ----------------------------------------------------------------------------


async def test_map_reduce_returns_results_in_input_order():
    async with CpuManager(2) as cm:
        # Early items sleep longest, so chunks finish out of order.
        items = [0.05, 0.04, 0.03, 0.0, 0.0, 0.0]
        assert await cm.map_reduce(workfns.sleep_then, items, chunksize=1) == [None] * 6
        assert await cm.map_reduce(workfns.square, range(100), chunksize=7) == [x * x for x in range(100)]


async def test_map_reduce_accepts_a_generator_and_an_empty_input():
    async with CpuManager(2) as cm:
        assert await cm.map_reduce(workfns.square, (x for x in range(10))) == [x * x for x in range(10)]
        assert await cm.map_reduce(workfns.square, []) == []


async def test_reduce_folds_the_results_in_input_order():
    async with CpuManager(2) as cm:
        letters = list("abcdefghij")
        assert await cm.map_reduce(str.upper, letters, chunksize=2, reduce_fn=workfns.concat) == "ABCDEFGHIJ"
        total = await cm.map_reduce(workfns.square, range(50), reduce_fn=workfns.concat)
        assert total == sum(x * x for x in range(50))


async def test_items_travel_in_chunks():
    async with CpuManager(2) as cm:
        await cm.start()
        pool = cm._pool
        sizes: list[int] = []
        real_submit = pool.submit

        def counting_submit(payload, label, job, **kw):
            _, (_, chunk), _ = pickle.loads(payload)  # what really goes over the wire
            sizes.append(len(chunk))
            return real_submit(payload, label, job, **kw)

        pool.submit = counting_submit
        await cm.map_reduce(workfns.square, range(100), chunksize=10)
        assert sizes == [10] * 10
        sizes.clear()
        await cm.map_reduce(workfns.square, range(100))  # default: ~4 chunks per worker
        assert sizes == [13] * 7 + [9]


async def test_the_first_failing_item_raises_its_own_error_and_the_pool_stays_usable():
    async with CpuManager(2) as cm:
        with pytest.raises(ValueError, match="bad item 3") as info:
            await cm.map_reduce(workfns.fail_on, range(10), chunksize=2)
        assert "in fail_on" in info.value.__cause__.text
        assert await cm.map_reduce(workfns.square, range(4)) == [0, 1, 4, 9]


async def test_a_failing_item_raises_its_own_error_naming_the_call_its_chunk_and_the_item():
    async with CpuManager(2) as cm:
        with pytest.raises(ValueError, match="bad item 37") as info:
            await cm.map_reduce(workfns.fail_at_37, range(100), chunksize=10)
    assert info.value.__cause__.item_index == 7  # the worker's count, within its chunk
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == [
            "in map_reduce(tests.compute.workfns.fail_at_37) chunk 3, items 30-39: item 37 raised"
        ]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
async def test_an_item_error_that_cannot_travel_is_a_remote_error_with_the_same_note():
    async with CpuManager(1) as cm:
        with pytest.raises(RemoteError, match=r"\(chunk 1, items 3-5\) failed .*SystemExit: 2") as info:
            await cm.map_reduce(functools.partial(workfns.system_exit_on, bad=4), range(9), chunksize=3)
    assert info.value.__notes__ == [
        "in map_reduce(functools.partial(tests.compute.workfns.system_exit_on, ...)) "
        "chunk 1, items 3-5: item 4 raised"
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"concurrency": 0}, ValueError, r"map_reduce: concurrency must be an int of at least 1 or None, got 0"),
        ({"concurrency": 1.5}, TypeError, r"map_reduce: concurrency must be an int .* got 1.5 \(float\)"),
        ({"concurrency": "2"}, TypeError, r"map_reduce: concurrency must be an int .* got '2' \(str\)"),
        ({"concurrency": True}, TypeError, r"map_reduce: concurrency must be an int .* got True \(bool\)"),
        ({"chunksize": 0}, ValueError, r"map_reduce: chunksize must be an int of at least 1 or None, got 0"),
        ({"chunksize": 2.5}, TypeError, r"map_reduce: chunksize must be an int .* got 2.5 \(float\)"),
        ({"chunksize": True}, TypeError, r"map_reduce: chunksize must be an int .* got True \(bool\)"),
        ({"timeout": "5"}, TypeError, r"timeout must be a number of seconds or None, got '5' \(str\)"),
        ({"timeout": -0.5}, ValueError, r"timeout must be a number of seconds of at least 0"),
    ],
)
async def test_map_reduce_refuses_bad_arguments_before_anything_starts(kwargs, error, shown):
    async with CpuManager(1) as cm:
        with pytest.raises(error, match=shown):
            await cm.map_reduce(workfns.square, range(4), **kwargs)
        assert cm.pids() == []


async def test_per_job_cap_limits_the_workers_one_job_occupies():
    async with CpuManager(2, per_job_cap=1) as cm:
        await cm.submit(workfns.square, 1)  # workers up
        pool = cm._pool
        peak = 0
        real_dispatch = pool._dispatch

        def watching_dispatch():
            nonlocal peak
            real_dispatch()
            peak = max(peak, pool._running["job-a"])

        pool._dispatch = watching_dispatch
        token = current_job.set("job-a")
        try:
            capped = await cm.map_reduce(workfns.sleep_then, [0.02] * 6, chunksize=1, concurrency=6)
        finally:
            current_job.reset(token)
        assert capped == [None] * 6
        assert peak == 1
        # Outside a job there is no cap: both workers are used.
        await cm.map_reduce(workfns.sleep_then, [0.05] * 4, chunksize=1)
        assert pool._running.get(None, 0) == 0
