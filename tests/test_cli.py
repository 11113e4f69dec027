"""The CLI and signals, with real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def piko(*args: str, cwd: Path, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "piko", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def start_run(tmp_path: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PIKO_LEADER_ENABLED": "false", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "piko", "run", str(FIXTURES / "signal_jobs.py"),
                             "--http", "off", *extra], cwd=tmp_path, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting {prefix!r}; stderr: {proc.stderr.read()[-2000:]}")


def statuses(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT status FROM job_run ORDER BY run_id")]
    finally:
        conn.close()


def test_sigterm_lets_the_running_job_finish_and_records_it(tmp_path):
    proc = start_run(tmp_path)
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "finished" in out
    assert statuses(tmp_path / "piko.db")[-1] == "SUCCESS"
    assert "RUNNING" not in statuses(tmp_path / "piko.db")


def test_sigterm_past_the_shutdown_budget_cancels_and_records_cancelled(tmp_path):
    proc = start_run(tmp_path, env={"PIKO_TEST_JOB_SECONDS": "60", "PIKO_SHUTDOWN_TIMEOUT_S": "0.3"})
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert statuses(tmp_path / "piko.db") == ["CANCELLED"]


def test_run_prints_where_data_lives_and_how_to_stop(tmp_path):
    proc = start_run(tmp_path)
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert "piko.db" in err and "Ctrl+C" in err


def test_second_signal_exits_at_once(tmp_path):
    proc = start_run(tmp_path, env={"PIKO_TEST_JOB_SECONDS": "60"})
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # past the debounce: a human's second Ctrl+C
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()
    assert proc.returncode != 0


def test_one_signal_delivered_twice_at_once_still_drains(tmp_path):
    """GNU `timeout` signals the child and then its process group: that is one stop, not two."""
    proc = start_run(tmp_path, env={"PIKO_TEST_JOB_SECONDS": "1"})
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert statuses(tmp_path / "piko.db")[-1] == "SUCCESS"


def test_a_restart_after_kill_9_leads_at_once_instead_of_waiting_out_the_lease(tmp_path):
    """The dead instance's lease (30 s) is ended as soon as its pid is seen gone on this host."""
    env = {"PIKO_LEADER_ENABLED": "true", "PIKO_LEADER_LEASE_S": "30", "PIKO_LEADER_RENEW_INTERVAL_S": "10"}
    first = start_run(tmp_path, env=env)
    try:
        wait_for_line(first, "started")
        first.kill()
        first.wait(timeout=10)
        t0 = time.monotonic()
        second = start_run(tmp_path, env=env)
        try:
            wait_for_line(second, "started", timeout=25)
            assert time.monotonic() - t0 < 15  # far below the 30 s lease it would otherwise wait out
        finally:
            second.kill()
            second.communicate(timeout=10)
    finally:
        first.kill()


def test_db_init_and_check_then_runs_lists_recorded_runs(tmp_path):
    from piko.store.schema import latest_version

    r = piko("db", "init", cwd=tmp_path)
    assert r.returncode == 0 and f"schema version {latest_version('sqlite')} " in r.stdout
    r = piko("runs", cwd=tmp_path)
    assert r.returncode == 0 and "no runs recorded" in r.stdout


def test_jobs_lists_schedules_and_next_fire_times(tmp_path):
    r = piko("jobs", str(FIXTURES / "signal_jobs.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("slow: interval") and "next:" in r.stdout


def test_errors_are_one_line_and_nonzero_not_a_traceback(tmp_path):
    r = piko("run", "missing.py", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    r = piko("runs", cwd=tmp_path, env={"PIKO_HTTP_PORT": "notaport"})
    assert r.returncode == 2 and "PIKO_HTTP_PORT" in r.stderr


def test_next_prints_fire_times(tmp_path):
    r = piko("next", "0 2 * * *", "-n", "2", "--tz", "Europe/Berlin", "--after", "2026-01-01T00:00:00Z",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2026-01-01T02:00:00+01:00", "2026-01-02T02:00:00+01:00"]
    bad = piko("next", "61 * * * *", cwd=tmp_path)
    assert bad.returncode == 2 and "61" in bad.stderr


def test_seed_000_api_job_and_job_runner_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(FIXTURES))
    import seed000_jobs

    from piko.core.runner import job_runner

    async def main():
        return await asyncio.gather(*(job_runner.run_job("fetch_stock_price", config={"symbol": f"STK_{i}"})
                                      for i in range(20)))

    outcomes = asyncio.run(main())
    assert {o.status.value for o in outcomes} == {"SUCCESS"}
    assert sorted(s for s, _ in seed000_jobs.SEEN) == sorted(f"STK_{i}" for i in range(20))
    assert statuses(tmp_path / "piko.db") == ["SUCCESS"] * 20


@pytest.mark.parametrize("bad", ["not json", "[1, 2]"])
def test_config_command_rejects_bad_json(tmp_path, bad):
    r = piko("config", "job", bad, cwd=tmp_path)
    assert r.returncode == 2 and "JSON" in r.stderr


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_a_broken_jobs_file_is_one_line_naming_the_file_and_line(tmp_path):
    (tmp_path / "syntax.py").write_text("from piko import PikoApp\napp = PikoApp()\ndef broken(:\n")
    _one_line_error(piko("jobs", "syntax.py", cwd=tmp_path), "syntax.py:3", "syntax error")
    (tmp_path / "missing_dep.py").write_text("import not_a_real_module_xyz\n")
    _one_line_error(piko("run", "missing_dep.py", cwd=tmp_path), "missing_dep.py:1", "not_a_real_module_xyz")
    (tmp_path / "typo.py").write_text("from piko import PikoApp\napp = PikoApp()\n"
                                      "@app.job('j', retires=3)\nasync def j(ctx, t):\n    pass\n")
    _one_line_error(piko("jobs", "typo.py", cwd=tmp_path), "unknown option(s) retires", "retries")


def test_bad_json_arguments_and_read_commands_on_a_missing_database_are_one_line(tmp_path):
    _one_line_error(piko("trigger", str(FIXTURES / "signal_jobs.py"), "slow", "--config", "{bad", cwd=tmp_path),
                    "--config is not valid JSON")
    _one_line_error(piko("next", "{bad", "--type", "interval", cwd=tmp_path), "not valid JSON")
    _one_line_error(piko("db", "check", cwd=tmp_path), "no piko database")
    _one_line_error(piko("runs", cwd=tmp_path), "no piko database")
    assert not (tmp_path / "piko.db").exists()


def test_jobs_and_run_count_jobs_of_the_older_decorator_beside_an_app(tmp_path):
    (tmp_path / "mixed.py").write_text(
        "from piko import PikoApp\nfrom piko.core.registry import job\napp = PikoApp('m')\n"
        "@app.job('new_style', cron='0 * * * *')\nasync def a(ctx, t):\n    pass\n"
        "@job('old_style', cron='30 * * * *')\nasync def b(ctx, t):\n    pass\n")
    r = piko("jobs", "mixed.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "new_style: cron" in r.stdout and "old_style: cron" in r.stdout and "no code registers" not in r.stdout


def _hourly_stateful_jobs_file(tmp_path: Path) -> None:
    assert piko("db", "init", cwd=tmp_path).returncode == 0  # backfill opens a database, never creates one
    (tmp_path / "hourly.py").write_text(
        "from piko import PikoApp\napp = PikoApp('h')\n"
        "@app.job('h', cron='0 * * * *', stateful=True)\nasync def h(ctx, t):\n    pass\n")


def test_backfill_with_no_window_in_range_says_so(tmp_path):
    _hourly_stateful_jobs_file(tmp_path)
    r = piko("backfill", "hourly.py", "h", "--start", "2026-01-01T10:10:00Z", "--end", "2026-01-01T10:20:00Z",
             cwd=tmp_path)
    assert r.returncode == 0 and "no data window ends between" in r.stdout, (r.stdout, r.stderr)


def test_backfill_windows_stay_on_the_schedules_grid_when_start_falls_between_fires(tmp_path):
    _hourly_stateful_jobs_file(tmp_path)
    r = piko("backfill", "hourly.py", "h", "--start", "2026-01-01T10:30:00Z", "--end", "2026-01-01T12:30:00Z",
             cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert lines == ["[1/2] [2026-01-01T10:00:00+00:00, 2026-01-01T11:00:00+00:00): ran: SUCCESS",
                     "[2/2] [2026-01-01T11:00:00+00:00, 2026-01-01T12:00:00+00:00): ran: SUCCESS"]  # no stub


def test_next_reads_a_naive_after_as_a_wall_time_in_the_zone(tmp_path):
    r = piko("next", "0 2 * * *", "-n", "1", "--tz", "Europe/Berlin", "--after", "2026-01-01 01:30", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["2026-01-01T02:00:00+01:00"], (r.stdout, r.stderr)
    bad = piko("next", "* * * * *", "-n", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.mysql
def test_job_runner_serves_one_script_after_another_on_mysql(mysql_db_dsn, monkeypatch, tmp_path):
    """Each asyncio.run() gets its own pooled store, closed when that loop ends (not left to
    the garbage collector, which printed 'Event loop is closed' tracebacks)."""
    import gc
    import warnings

    from piko.core.registry import job
    from piko.core.runner import job_runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIKO_MYSQL__DSN", mysql_db_dsn)
    import piko.compat as app_module

    monkeypatch.setattr(app_module, "_default_app", None)  # a fresh default app reads the DSN

    @job(job_id="twice", cron="* * * * *")
    async def twice(ctx, scheduled_time):
        return ctx["config"].get("n")

    async def main(n):
        return await job_runner.run_job("twice", config={"n": n})

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        first = asyncio.run(main(1))
        second = asyncio.run(main(2))
        gc.collect()
    assert (first.status.value, first.result, second.status.value, second.result) == ("SUCCESS", 1, "SUCCESS", 2)
    assert unraisable == []


def test_next_with_a_type_reads_what_a_row_of_that_type_may_hold(tmp_path):
    after = ["--after", "2026-01-05T00:00:00Z", "-n", "1"]
    for expr in ('*/5 * * * *', '"*/5 * * * *"', '{"cron": "*/5 * * * *"}'):
        r = piko("next", expr, "--type", "cron", *after, cwd=tmp_path)
        assert (r.returncode, r.stdout.strip()) == (0, "2026-01-05T00:05:00+00:00"), (expr, r.stderr)
    none = piko("next", "*/5 * * * *", "-n", "0", cwd=tmp_path)
    assert (none.returncode, none.stdout) == (0, "")  # zero times asked: no "never fires" line
