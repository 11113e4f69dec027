"""The Dask backend (compute/dask_backend.py) on a real LocalCluster, next to the local pool.

The cluster (2 worker processes, one thread each, `allowed-failures` 1: a lost task is rerun
once) starts once for the module. Tests marked `dask` skip with the reason when distributed
is not installed, and fail under CI=true, where a missing package must not pass as green.
Functions sent to Dask are top-level ones from tests/compute/workfns.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import functools
import importlib.util
import operator
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piko.compute.calls import current_job
from piko.compute.manager import (
    CpuManager,
    OffloadTimeout,
    RemoteError,
    RemoteTraceback,
    UnpicklableCallError,
)
from piko.compute.worker import WorkerDiedError
from piko.errors import OffloadError
from tests.compute import workfns
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None


def require_distributed() -> None:
    if HAS_DISTRIBUTED:
        return
    message = "the Dask backend tests need the distributed package: pip install 'piko[dask]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing package fails the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module", autouse=True)
def _pickling_left_as_found() -> Iterator[None]:
    """Importing distributed registers tblib's pickling for every exception class in the
    process (copyreg); later tests of the local pool's wire, which run calls in this very
    process, expect plain pickle. The registrations go when this module is done."""
    saved = dict(copyreg.dispatch_table)
    yield
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(saved)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a LocalCluster that lives as long as this module's tests."""
    require_distributed()
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def executor(address: str, **options):
    from piko.compute.dask_backend import DaskExecutor

    return DaskExecutor(address, **options)


def markers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- the same answers as the local pool ------------------------------------------------------


@pytest.mark.dask
async def test_submit_and_map_reduce_give_the_local_pools_results(scheduler):
    async def answers(backend) -> list:
        return [
            await backend.submit(workfns.add, 2, 3, scale=4),
            await backend.map_reduce(workfns.square, range(100)),
            await backend.map_reduce(workfns.square, (x for x in range(50)), chunksize=7),
            await backend.map_reduce(workfns.square, list(range(30)), reduce_fn=operator.add, concurrency=1),
            await backend.map_reduce(workfns.square, []),
        ]

    async with CpuManager(2) as local, executor(scheduler) as dask:
        assert await answers(dask) == await answers(local)


@pytest.mark.dask
async def test_errors_come_back_as_the_local_pool_raises_them(scheduler):
    async def failures(backend) -> list:
        seen = []
        for call in (backend.map_reduce(workfns.fail_at_37, range(50), chunksize=10),
                     backend.submit(workfns.raise_value_error, "boom"),
                     backend.submit(workfns.system_exit),
                     backend.submit(workfns.return_lambda)):
            with pytest.raises(Exception) as info:
                await call
            cause = info.value.__cause__
            seen.append((type(info.value), str(info.value), getattr(info.value, "__notes__", None),
                         type(cause), getattr(cause, "item_index", None)))
        return seen

    async with CpuManager(2) as local, executor(scheduler) as dask:
        on_dask = await failures(dask)
        assert on_dask == await failures(local)
    item_error, value_error, system_exit, lambda_result = on_dask
    assert item_error[:2] == (ValueError, "bad item 37") and item_error[3:] == (RemoteTraceback, 7)
    if sys.version_info >= (3, 11):
        assert item_error[2] == ["in map_reduce(tests.compute.workfns.fail_at_37) chunk 3, items 30-39: item 37 "
                                 "raised"]
    assert value_error[0] is ValueError and system_exit[0] is RemoteError and lambda_result[0] is UnpicklableCallError


@pytest.mark.dask
async def test_unpicklable_calls_are_refused_before_anything_is_sent():
    require_distributed()
    dask = executor(f"tcp://127.0.0.1:{closed_port()}", connect_timeout_s=0.2)  # never reached: nothing is sent
    with pytest.raises(UnpicklableCallError, match="lambda"):
        await dask.submit(lambda: 1)
    with pytest.raises(UnpicklableCallError, match="lambda"):
        await dask.map_reduce(lambda x: x, [1, 2])
    with pytest.raises(TypeError, match="chunksize must be an int"):
        await dask.map_reduce(workfns.square, [1], chunksize=1.5)


# -- timeouts, cancellation, lost workers ----------------------------------------------------


@pytest.mark.dask
async def test_a_timeout_fails_the_call_and_releases_its_queued_chunks(scheduler, tmp_path):
    async with executor(scheduler) as dask:
        started = time.monotonic()
        with pytest.raises(OffloadTimeout, match=r"sleep_then did not finish within 0.2s on the Dask cluster"):
            await dask.submit(workfns.sleep_then, 0.6, timeout=0.2)
        assert time.monotonic() - started < 0.55
        sleepy = functools.partial(workfns.mark_then_sleep, str(tmp_path), 0.4)
        with pytest.raises(OffloadTimeout, match=r"timed out after 0.5s with \d of 12 chunks done; queued chunks "
                                                 r"were released unrun"):
            await dask.map_reduce(sleepy, range(12), chunksize=1, concurrency=4, timeout=0.5)
        await asyncio.sleep(0.6)  # chunks running at the timeout end; nothing else starts
        ran = markers(tmp_path)
        await asyncio.sleep(0.5)
        assert markers(tmp_path) == ran and len(ran) <= 6


@pytest.mark.dask
async def test_cancelling_the_caller_releases_its_pending_chunks(scheduler, tmp_path):
    async with executor(scheduler) as dask:
        sleepy = functools.partial(workfns.mark_then_sleep, str(tmp_path), 0.3)
        call = asyncio.ensure_future(dask.map_reduce(sleepy, range(20), chunksize=1))
        await wait_until(lambda: markers(tmp_path), timeout=10)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.4)
        ran = markers(tmp_path)
        await asyncio.sleep(0.6)
        assert markers(tmp_path) == ran and len(ran) <= 6, ran
        assert await dask.submit(workfns.square, 9) == 81  # the cluster is free for the next call


@pytest.mark.dask
async def test_calls_after_a_failed_map_reduce_still_get_their_results(scheduler):
    """Pass: a map_reduce whose chunk fails cancels its other chunks while their results may be
    on the way; Dask's client fetches results for all waiting calls in one shared gather, and a
    cancel that reached it left every later call of the client ending CancelledError (CI saw
    it). Each round: a failing map_reduce, then calls that must all answer."""
    async with executor(scheduler) as dask:
        for _ in range(8):
            with pytest.raises(ValueError, match="bad item 37"):
                await dask.map_reduce(workfns.fail_at_37, range(200), chunksize=3)
            answers = await asyncio.gather(dask.submit(workfns.add, 2, 3), dask.map_reduce(workfns.square, range(20)))
            assert answers == [5, [x * x for x in range(20)]]


@pytest.mark.dask
async def test_a_worker_killed_mid_chunk_is_rerun_by_dask_and_the_call_succeeds(scheduler, tmp_path):
    async with executor(scheduler) as dask:
        sleepy = functools.partial(workfns.mark_then_sleep, str(tmp_path), 0.5)
        call = asyncio.ensure_future(dask.map_reduce(sleepy, range(4), chunksize=1))
        await wait_until(lambda: markers(tmp_path), timeout=10)
        item, pid, _ = markers(tmp_path)[0].split("-")
        os.kill(int(pid), signal.SIGKILL)
        assert await asyncio.wait_for(call, 30) == [0, 1, 2, 3]
        assert sum(m.startswith(f"{item}-") for m in markers(tmp_path)) == 2  # killed once, run again


@pytest.mark.dask
async def test_a_chunk_that_keeps_killing_its_worker_fails_naming_the_chunk(scheduler):
    async with executor(scheduler) as dask:
        with pytest.raises(WorkerDiedError, match=r"the Dask workers running tests.compute.workfns.die_on \(chunk 2, "
                                                  r"items 4-5\) died 2 time\(s\) in a row .*allowed-failures is 1"):
            await asyncio.wait_for(dask.map_reduce(workfns.die_on, range(8), chunksize=2), 30)
        assert await dask.submit(workfns.square, 3) == 9  # restarted workers take calls again


@pytest.mark.dask
async def test_calls_inside_a_job_hold_at_most_per_job_cap_workers(scheduler):
    async with executor(scheduler, per_job_cap=1) as dask:
        token = current_job.set("capped")
        try:
            started = time.monotonic()
            await asyncio.gather(*(dask.submit(workfns.sleep_then, 0.3) for _ in range(2)))
            assert time.monotonic() - started >= 0.6  # one after the other, though two workers are free
        finally:
            current_job.reset(token)


@pytest.mark.dask
async def test_close_cancels_what_is_still_out_after_its_budget_and_the_next_call_connects_again(scheduler):
    dask = executor(scheduler)
    await dask.start()
    call = asyncio.ensure_future(dask.submit(workfns.sleep_then, 0.8))
    await asyncio.sleep(0.1)
    await dask.close(0.2)
    with pytest.raises(OffloadError, match=r"Dask cancelled tests.compute.workfns.sleep_then \(the backend was "
                                           r"closing"):
        await call
    assert await dask.submit(workfns.square, 4) == 16
    await dask.close()


# -- reaching the cluster ----------------------------------------------------------------------


@pytest.mark.dask
async def test_an_unreachable_scheduler_is_one_error_naming_its_address():
    require_distributed()
    from piko.compute.dask_backend import DaskUnavailable

    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(DaskUnavailable, match=rf"cannot reach the Dask scheduler at {address} "):
        await executor(address, connect_timeout_s=0.5).start()
    assert time.monotonic() - started < 5


@pytest.mark.dask
def test_piko_run_with_an_unreachable_scheduler_exits_2_with_one_line_naming_it(tmp_path):
    require_distributed()
    address = f"tcp://127.0.0.1:{closed_port()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
           "PIKO_CPU_BACKEND": "dask", "PIKO_DASK_SCHEDULER": address, "PIKO_DASK_CONNECT_TIMEOUT_S": "0.5",
           "PIKO_LEADER_ENABLED": "false"}
    r = subprocess.run([sys.executable, "-m", "piko", "run", str(ROOT / "tests/fixtures/signal_jobs.py"), "--http",
                        "off"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in r.stderr.splitlines() if line.startswith("piko: error:")]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    assert f"cannot reach the Dask scheduler at {address} " in errors[0]


@pytest.mark.dask
async def test_an_app_with_cpu_backend_dask_offloads_its_jobs_to_the_cluster(scheduler, db_path):
    from piko import PikoApp
    from piko.compute.dask_backend import DaskExecutor
    from piko.settings import Settings

    app = PikoApp("dask", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False,
                                            cpu_backend="dask", dask_scheduler=scheduler))

    @app.job("squares")
    async def squares(ctx, scheduled_time):
        return await app.cpu_manager.map_reduce(workfns.square, range(10), reduce_fn=operator.add)

    async with app:
        assert isinstance(app.cpu_manager, DaskExecutor) and app.cpu_manager._client is not None
        outcome = await app.run_job("squares")
    assert (outcome.status.value, outcome.result) == ("SUCCESS", 285)
    assert app.cpu_manager._client is None  # stopped with the app; the cluster stays


# -- without distributed ---------------------------------------------------------------------


def test_without_distributed_the_error_names_the_extra_to_install(monkeypatch, db_path):
    from piko import PikoApp
    from piko.compute.dask_backend import DaskUnavailable
    from piko.settings import Settings

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    app = PikoApp(settings=Settings(db_path=db_path, cpu_backend="dask", dask_scheduler="tcp://127.0.0.1:8786"))
    with pytest.raises(DaskUnavailable, match=r"needs the distributed package.*pip install 'piko\[dask\]'"):
        app.cpu_manager  # noqa: B018 - building the backend is what fails


def test_nothing_imports_dask_unless_the_dask_backend_connects():
    code = ("import sys; import piko, piko.app, piko.cli, piko.compute.manager, piko.compute.dask_backend\n"
            "from piko.settings import Settings\n"
            "app = piko.PikoApp(settings=Settings(cpu_backend='dask', dask_scheduler='tcp://127.0.0.1:8786'))\n"
            "try:\n    app.cpu_manager\nexcept piko.PikoError:\n    pass  # distributed is not installed here\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask', 'tornado')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
