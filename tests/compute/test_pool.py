"""The worker pool under failure: deaths, timeouts, cancellation, shutdown, loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from piko.compute.manager import CpuManager, OffloadTimeout, WorkerDiedError
from piko.errors import OffloadError
from tests.compute import workfns
from tests.compute.liveness import is_alive

pytestmark = pytest.mark.timeout(60)


async def _until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- deaths --------------------------------------------------------------------------------


async def test_a_killed_worker_fails_only_its_own_call_and_is_replaced():
    async with CpuManager(2) as cm:
        await cm.warm_up()
        survivor = asyncio.ensure_future(cm.submit(workfns.sleep_then, 0.3, "ok"))
        await asyncio.sleep(0.05)  # the survivor is running on one worker
        with pytest.raises(WorkerDiedError, match=r"kill_self died: killed by signal SIGKILL") as info:
            await cm.submit(workfns.kill_self)
        assert info.value.exitcode == -9
        assert await survivor == "ok"
        await _until(lambda: len(cm.pids()) == 2)
        assert info.value.pid not in cm.pids()
        assert await cm.map_reduce(workfns.square, range(6)) == [0, 1, 4, 9, 16, 25]


async def test_os_exit_names_the_exit_code():
    async with CpuManager(1) as cm:
        with pytest.raises(WorkerDiedError, match="exited with code 3"):
            await cm.submit(workfns.exit_hard, 3)
        assert await cm.submit(workfns.square, 4) == 16


async def test_a_worker_dying_inside_map_reduce_fails_the_call_with_the_chunk_named():
    async with CpuManager(2) as cm:
        with pytest.raises(WorkerDiedError, match=r"die_on \(chunk 2, items 4-5\).*exited with code 7"):
            await cm.map_reduce(workfns.die_on, range(8), chunksize=2)
        assert await cm.map_reduce(workfns.die_on, range(5)) == [0, 1, 2, 3, 4]


# -- timeouts ------------------------------------------------------------------------------


async def test_a_timeout_stops_the_call_and_replaces_its_stuck_worker():
    async with CpuManager(1) as cm:
        old_pid = await cm.submit(workfns.pid)
        started = time.monotonic()
        with pytest.raises(
            OffloadTimeout, match=r"sleep_then did not finish within 0.2s; its worker was killed"
        ):
            await cm.submit(workfns.sleep_then, 30, timeout=0.2)
        assert time.monotonic() - started < 5
        await _until(lambda: not is_alive(old_pid))
        assert await cm.submit(workfns.pid) != old_pid


async def test_offload_timeout_is_a_timeout_error():
    assert issubclass(OffloadTimeout, TimeoutError) and issubclass(OffloadTimeout, OffloadError)


async def test_a_call_still_queued_at_its_timeout_never_runs():
    async with CpuManager(1) as cm:
        await cm.warm_up()
        busy = asyncio.ensure_future(cm.submit(workfns.sleep_then, 0.3, "first"))
        await asyncio.sleep(0.05)  # let the first call reach the only worker
        with pytest.raises(OffloadTimeout, match="it never started"):
            await cm.submit(workfns.square, 2, timeout=0.05)
        assert await busy == "first"


async def test_a_map_reduce_timeout_covers_the_whole_call():
    async with CpuManager(2) as cm:
        started = time.monotonic()
        with pytest.raises(OffloadTimeout):
            await cm.map_reduce(workfns.sleep_then, [0.1] * 40, chunksize=1, timeout=0.3)
        assert time.monotonic() - started < 2
        assert await cm.submit(workfns.square, 3) == 9


async def test_a_map_reduce_timeout_reports_the_call_and_how_many_chunks_were_done():
    async with CpuManager(2) as cm:
        await cm.warm_up()
        pids = cm.pids()
        # Two quick chunks finish, then both workers are stuck on 30 s chunks.
        with pytest.raises(
            OffloadTimeout,
            match=r"^map_reduce\(tests\.compute\.workfns\.sleep_then\) timed out after 1s "
            r"with 2 of 6 chunks done; its running chunks' workers were killed",
        ):
            await cm.map_reduce(workfns.sleep_then, [0, 0, 30, 30, 30, 30], chunksize=1, timeout=1)
        await _until(lambda: not any(is_alive(pid) for pid in pids))
        # A generator's length is unknown until it is read to the end.
        with pytest.raises(OffloadTimeout, match=r"with 0 chunks done \(4 sent; the rest of the input"):
            await cm.map_reduce(workfns.sleep_then, (30 for _ in range(10)), chunksize=1, timeout=0.3)
        assert await cm.submit(workfns.square, 3) == 9


# -- cancellation --------------------------------------------------------------------------


async def test_cancelling_a_running_call_kills_and_replaces_its_worker():
    async with CpuManager(1) as cm:
        old_pid = await cm.submit(workfns.pid)
        call = asyncio.ensure_future(cm.submit(workfns.sleep_then, 30))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _until(lambda: not is_alive(old_pid))
        assert await cm.submit(workfns.pid) != old_pid


async def test_cancelling_a_map_reduce_drops_its_queued_chunks():
    async with CpuManager(1) as cm:
        await cm.submit(workfns.square, 1)
        call = asyncio.ensure_future(
            cm.map_reduce(workfns.sleep_then, [0.2] * 20, chunksize=1, concurrency=20)
        )
        await asyncio.sleep(0.05)
        assert len(cm._pool._queue) == 19
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        started = time.monotonic()
        assert await cm.submit(workfns.square, 3) == 9  # not behind 19 queued chunks
        assert time.monotonic() - started < 2
        assert not cm._pool._queue


# -- workers' life ---------------------------------------------------------------------------


async def test_the_initializer_runs_once_in_every_worker(tmp_path):
    async with CpuManager(2, initializer=workfns.write_marker, initargs=(str(tmp_path),)) as cm:
        await cm.warm_up()
        await cm.map_reduce(workfns.square, range(4), chunksize=1)
        assert await cm.submit(workfns.read_markers, str(tmp_path)) == sorted(str(p) for p in cm.pids())


async def test_a_failing_initializer_fails_calls_clearly_instead_of_looping():
    async with CpuManager(1, initializer=workfns.failing_initializer) as cm:
        with pytest.raises(OffloadError, match="initializer tests.compute.workfns.failing_initializer raised"):
            await cm.submit(workfns.square, 2, timeout=20)
        with pytest.raises(OffloadError) as info:  # the next call retries, and fails the same way
            await cm.submit(workfns.square, 2, timeout=20)
        assert "initializer broke" in info.value.__cause__.text


async def test_warm_up_with_a_failing_initializer_says_why_and_logs_the_worker_traceback(caplog):
    caplog.set_level(logging.ERROR, logger="piko.compute")
    async with CpuManager(2, initializer=workfns.failing_initializer) as cm:
        with pytest.raises(
            OffloadError,
            match=r"could not start: the CPU pool's initializer tests\.compute\.workfns\.failing_initializer "
            r"raised in a new CPU worker: RuntimeError: initializer broke",
        ) as info:
            await cm.warm_up()
    assert 'in failing_initializer\n    raise RuntimeError("initializer broke")' in info.value.__cause__.text
    records = [r for r in caplog.records if r.name == "piko.compute" and r.levelno == logging.ERROR]
    assert len(records) == 1  # one attempt, one record, though both workers reported it
    assert "RuntimeError: initializer broke" in records[0].getMessage()
    assert 'raise RuntimeError("initializer broke")' in caplog.text  # the worker's traceback


async def test_max_tasks_per_worker_replaces_a_worker_after_that_many_calls():
    async with CpuManager(1, max_tasks_per_worker=2) as cm:
        pids = [await cm.submit(workfns.pid) for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]


# -- shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_no_worker_process_remains_after_close(start_method):
    cm = CpuManager(2, start_method=start_method)
    await cm.start()
    await cm.map_reduce(workfns.square, range(10))
    pids = cm.pids()
    assert len(pids) == 2 and all(is_alive(p) for p in pids)
    await cm.close(timeout_s=5)
    assert not any(is_alive(p) for p in pids)
    assert multiprocessing.active_children() == []


async def test_close_lets_a_running_call_finish_within_the_budget():
    cm = CpuManager(1)
    await cm.submit(workfns.square, 1)
    call = asyncio.ensure_future(cm.submit(workfns.sleep_then, 0.2, "done"))
    await asyncio.sleep(0.02)
    await cm.close(timeout_s=5)
    assert await call == "done"


async def test_close_stops_a_call_that_outlives_the_budget_and_leaves_no_process():
    cm = CpuManager(1)
    pid = await cm.submit(workfns.pid)
    call = asyncio.ensure_future(cm.submit(workfns.sleep_then, 30))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await cm.close(timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    with pytest.raises(OffloadError, match="closed before this call finished"):
        await call
    assert not is_alive(pid)
    assert multiprocessing.active_children() == []


# -- the event loop stays free ---------------------------------------------------------------


async def test_the_loop_keeps_its_timers_while_the_pool_is_saturated():
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    period = 0.01

    def tick(expected_at: float) -> None:
        now = loop.time()
        lateness.append(now - expected_at)
        handle_box[0] = loop.call_at(now + period, tick, now + period)

    async with CpuManager(2) as cm:
        handle_box = [loop.call_at(loop.time() + period, tick, loop.time() + period)]
        try:
            # Start-up included: spawning runs in a thread, not on the loop.
            results = await cm.map_reduce(workfns.burn_for, [0.05] * 24, chunksize=1)
        finally:
            handle_box[0].cancel()
    assert len(results) == 24
    assert len(lateness) > 20
    assert max(lateness) < 0.1, f"a 10 ms timer was {max(lateness) * 1000:.0f} ms late"


# -- the seed's Resource pattern keeps working -------------------------------------------------


@contextlib.asynccontextmanager
async def _process_pool_resource():
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver"))
    try:
        yield pool
    finally:
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)


async def test_a_user_resource_holding_a_process_pool_executor_works_in_the_loop():
    async with _process_pool_resource() as pool:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(pool, workfns.square, x) for x in range(5)))
    assert results == [0, 1, 4, 9, 16]
    assert multiprocessing.active_children() == []
