"""The CPU pool as jobs use it through the app (seed example 5): no worker outlives the app,
and app.cpu_manager keeps working across app restarts and successive asyncio.run() calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from piko import PikoApp
from piko.settings import Settings
from tests.compute.liveness import is_alive
from tests.compute.workfns import square

ROOT = Path(__file__).resolve().parent.parent


def _app(db_path: str) -> PikoApp:
    app = PikoApp("cpu", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False,
                                           cpu_workers=1))

    @app.job("square_it")
    async def square_it(ctx, scheduled_time):
        return await app.cpu_manager.submit(square, 7), app.cpu_manager.pids()

    return app


def test_pool_first_used_inside_a_run_is_shut_down_with_the_app(db_path):
    async def scenario():
        app = PikoApp("cpu", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False,
                                               cpu_workers=2))

        @app.job("io_plus_cpu")
        async def io_plus_cpu(ctx, scheduled_time):
            results = await app.cpu_manager.map_reduce(map_fn=square, items=list(range(100)), concurrency=2)
            assert results == [x * x for x in range(100)]
            assert await app.cpu_manager.submit(square, 21) == 441
            return app.cpu_manager.pids()

        async with app:
            outcome = await app.run_job("io_plus_cpu")
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS", outcome.error_message
    pids = outcome.result
    assert len(pids) >= 1
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []


def test_cpu_manager_works_again_after_the_app_is_stopped_and_started(db_path):
    async def scenario():
        app = _app(db_path)
        cm = app.cpu_manager  # a reference a user holds across the restart
        outcomes = []
        for _ in range(2):
            async with app:
                outcomes.append(await app.run_job("square_it"))
            assert cm.pids() == []
        return outcomes

    first, second = asyncio.run(scenario())
    assert (first.status.value, second.status.value) == ("SUCCESS", "SUCCESS"), second.error_message
    (first_result, first_pids), (second_result, second_pids) = first.result, second.result
    assert first_result == second_result == 49
    assert first_pids != second_pids  # a fresh pool after the restart
    assert not any(is_alive(pid) for pid in first_pids + second_pids)


def test_a_job_run_by_hand_offloads_under_successive_asyncio_runs(db_path):
    app = _app(db_path)  # never started: the seed's `asyncio.run(app.run_job(...))` pattern
    first = asyncio.run(app.run_job("square_it"))
    second = asyncio.run(app.run_job("square_it"))
    try:
        assert (first.status.value, second.status.value) == ("SUCCESS", "SUCCESS"), second.error_message
        (_, first_pids), (result, second_pids) = first.result, second.result
        assert result == 49
        assert not any(is_alive(pid) for pid in first_pids)  # the ended loop's workers were killed
    finally:
        asyncio.run(app.stop())
    assert not any(is_alive(pid) for pid in second_pids)


_SEED_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys
    sys.path.insert(0, {root!r})
    from piko import PikoApp
    from piko.settings import Settings
    from tests.compute.workfns import square

    app = PikoApp("cpu", settings=Settings(db_path=sys.argv[1], http_enabled=False, cpu_workers=2))

    @app.job("squares")
    async def squares(ctx, scheduled_time):
        await app.cpu_manager.map_reduce(square, range(10), chunksize=1)
        return app.cpu_manager.pids()

    if __name__ == "__main__":  # forkserver imports this module again
        outcome = asyncio.run(app.run_job("squares"))
        print(json.dumps(outcome.result), flush=True)
        if sys.argv[2] == "is_killed":
            os.kill(os.getpid(), signal.SIGKILL)  # no atexit hook runs
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["returns", "is_killed"])
def test_no_worker_outlives_an_interpreter_that_never_closed_its_pool(tmp_path, db_path, ending):
    script = tmp_path / "seed.py"
    script.write_text(_SEED_SCRIPT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script), db_path, ending], capture_output=True, text=True,
                          timeout=60)
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(pids) == 2, done.stderr
    deadline = time.monotonic() + 10  # after SIGKILL the fork server must notice first
    while any(is_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their interpreter ({ending})"
        time.sleep(0.05)


def test_a_sigterm_to_the_whole_process_group_lets_a_running_cpu_job_finish(tmp_path):
    """`timeout`, `kill -- -PGID` and systemd signal every process of the group: the CPU
    workers and the fork server must leave stopping to piko, which drains its runs first."""
    import signal
    import sqlite3

    from tests.test_cli import FIXTURES, ROOT, wait_for_line

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIKO_LEADER_ENABLED": "false", "PIKO_CPU_WORKERS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "piko", "run", str(FIXTURES / "cpu_signal_jobs.py"),
                             "--http", "off"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_line(proc, "started")
        time.sleep(0.5)  # the map_reduce is under way in the workers
        os.killpg(proc.pid, signal.SIGTERM)
        wait_for_line(proc, "finished")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with sqlite3.connect(tmp_path / "piko.db") as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM job_run ORDER BY run_id")]
    assert statuses[0] == "SUCCESS" and set(statuses) <= {"SUCCESS", "SKIPPED"}  # fires during it: SKIPPED


def test_a_script_without_a_main_guard_gets_a_clear_error_not_a_hang(tmp_path):
    """Each worker imports the main script again; an unguarded start there must fail loudly."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import asyncio
        from piko import PikoApp
        app = PikoApp("unguarded")
        app.configure(http_enabled=False, leader_enabled=False, cpu_workers=1)

        def double(x):
            return 2 * x

        async def main():
            await app.start()
            try:
                print("got", await app.cpu_manager.submit(double, 21), flush=True)
            except Exception as exc:
                print("raised", type(exc).__name__, exc, flush=True)
            finally:
                await app.stop()

        asyncio.run(main())  # no `if __name__ == "__main__":`
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert "raised OffloadError CPU workers keep dying at start-up" in r.stdout, r.stdout + r.stderr[-2000:]
    assert 'if __name__ == "__main__":' in r.stdout
    assert "called while a CPU worker process imported your script" in r.stderr
