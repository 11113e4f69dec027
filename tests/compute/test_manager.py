"""CpuManager's API: results, order, reduce, chunking, errors raised before sending."""

from __future__ import annotations

import functools
import pickle
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


async def test_calls_after_close_are_refused():
    cm = CpuManager(1)
    await cm.start()
    await cm.close()
    with pytest.raises(OffloadError, match="closed"):
        await cm.submit(workfns.square, 2)


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


async def test_concurrency_and_chunksize_below_one_are_refused():
    async with CpuManager(1) as cm:
        with pytest.raises(ValueError, match="at least 1"):
            await cm.map_reduce(workfns.square, [1], concurrency=0)


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
