"""`piko backfill` with real SQLite files and real subprocesses (MariaDB where the store matters)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.test_cli import ROOT, piko

UTC = timezone.utc


def _jobs_file(tmp_path: Path, decorator_args: str, body: str = "pass") -> str:
    (tmp_path / "jobs.py").write_text(
        "import os\nfrom piko import PikoApp\napp = PikoApp('b')\n"
        f"@app.job('j', {decorator_args}, stateful=True)\nasync def j(ctx, t):\n    {body}\n")
    return "jobs.py"


def _window_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "): " in line]


def test_backfill_finds_the_windows_of_an_interval_row_created_after_them(tmp_path):
    """The row's created_at sets only the phase: a range a day before the row existed has windows."""
    target = _jobs_file(tmp_path, 'interval={"seconds": 30}')
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    conn = sqlite3.connect(tmp_path / "piko.db")
    conn.execute("INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr) "
                 "VALUES ('j', 'interval', '{\"seconds\": 30}')")  # created_at: the database's now
    conn.commit()
    conn.close()
    day_ago = (datetime.now(UTC) - timedelta(hours=20)).replace(second=0, microsecond=0, tzinfo=None)
    r = piko("backfill", target, "j", "--start", day_ago.isoformat(),
             "--end", (day_ago + timedelta(minutes=2)).isoformat(), cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = _window_lines(r.stdout)
    assert len(lines) == 4 and all("SUCCESS" in line for line in lines), r.stdout


def test_backfill_before_a_schedules_start_says_when_its_first_fire_is(tmp_path):
    target = _jobs_file(tmp_path, 'cron={"minute": 0, "start_date": "2026-06-01 00:00:00"}')
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    r = piko("backfill", target, "j", "--start", "2026-05-01T00:00:00", "--end", "2026-05-02T00:00:00", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no data window ends between" in r.stdout and "first fire is at 2026-06-01T00:00:00" in r.stdout


def _failing_hourly(tmp_path: Path) -> str:
    """Hourly windows that fail with ValueError('boom') while ./fail exists (slow with ./slow)."""
    return _jobs_file(tmp_path, "cron='0 * * * *'",
                      "if os.path.exists('slow'):\n        import asyncio; await asyncio.sleep(0.5)\n"
                      "    if os.path.exists('fail'):\n        raise ValueError('boom')")


RANGE = ("--start", "2026-01-01T10:00:00Z", "--end", "2026-01-01T13:00:00Z")


def _runs(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT scheduled_time, attempt, kind, status FROM job_run ORDER BY run_id").fetchall()
    finally:
        conn.close()


def test_backfill_reports_each_window_and_reruns_failed_ones_only_when_asked(tmp_path):
    target = _failing_hourly(tmp_path)
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    (tmp_path / "fail").touch()
    r = piko("backfill", target, "j", *RANGE, cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert _window_lines(r.stdout) == [
        "[1/3] [2026-01-01T10:00:00+00:00, 2026-01-01T11:00:00+00:00): ran: FAILED (ValueError: boom)",
        "[2/3] [2026-01-01T11:00:00+00:00, 2026-01-01T12:00:00+00:00): ran: FAILED (ValueError: boom)",
        "[3/3] [2026-01-01T12:00:00+00:00, 2026-01-01T13:00:00+00:00): ran: FAILED (ValueError: boom)"]
    assert r.stdout.splitlines()[-1] == "3 windows: 3 failed"

    (tmp_path / "fail").unlink()
    r = piko("backfill", target, "j", *RANGE, cwd=tmp_path)
    assert r.returncode == 1 and all(line.endswith("): already FAILED: use --rerun-failed")
                                     for line in _window_lines(r.stdout)), r.stdout
    assert r.stdout.splitlines()[-1] == "3 windows: 3 already failed (use --rerun-failed)"

    r = piko("backfill", target, "j", *RANGE, "--rerun-failed", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert all(line.endswith("): re-ran: SUCCESS (attempt 2)") for line in _window_lines(r.stdout)), r.stdout
    assert r.stdout.splitlines()[-1] == "3 windows: 3 re-ran"
    assert [(a, k, s) for _, a, k, s in _runs(tmp_path / "piko.db")] == \
        [(1, "backfill", "FAILED")] * 3 + [(2, "backfill", "SUCCESS")] * 3

    r = piko("backfill", target, "j", "--start", "2026-01-01T10:00:00Z", "--end", "2026-01-01T14:00:00Z",
             "--rerun-failed", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert [line.split(": ", 1)[1] for line in _window_lines(r.stdout)] == \
        ["already done (SUCCESS)"] * 3 + ["ran: SUCCESS"]
    assert r.stdout.splitlines()[-1] == "4 windows: 1 ran, 3 already done"


def test_backfill_reruns_missed_windows_and_leaves_running_ones_alone(tmp_path):
    target = _failing_hourly(tmp_path)
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    conn = sqlite3.connect(tmp_path / "piko.db")
    for at, status in (("2026-01-01 11:00:00.000000", "MISSED"), ("2026-01-01 12:00:00.000000", "RUNNING")):
        conn.execute("INSERT INTO job_lock (job_id, scheduled_time, instance_id, locked_at) "
                     "VALUES ('j', ?, 'other', ?)", (at, at))
        conn.execute("INSERT INTO job_run (job_id, scheduled_time, status, attempt, kind, instance_id, started_at) "
                     "VALUES ('j', ?, ?, 1, 'schedule', 'other', ?)", (at, status, at))
    conn.commit()
    conn.close()
    r = piko("backfill", target, "j", *RANGE, "--rerun-failed", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    texts = [line.split(": ", 1)[1] for line in _window_lines(r.stdout)]
    assert texts[0] == "re-ran: SUCCESS (attempt 2)" and texts[2] == "ran: SUCCESS"
    assert texts[1].startswith("running elsewhere (attempt 1 on other, since 2026-01-01T12:00:00")
    assert r.stdout.splitlines()[-1] == "3 windows: 1 ran, 1 re-ran, 1 running elsewhere"


def _race_two_reruns(tmp_path: Path, *dsn: str) -> None:
    target = _failing_hourly(tmp_path)
    assert piko("db", "init", *dsn, cwd=tmp_path).returncode == 0
    (tmp_path / "fail").touch()
    assert piko("backfill", target, "j", *RANGE, *dsn, cwd=tmp_path).returncode == 1
    (tmp_path / "fail").unlink()
    (tmp_path / "slow").touch()  # each re-run takes 0.5 s: the two backfills overlap
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "piko", "backfill", target, "j", *RANGE, *dsn,
                               "--rerun-failed"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    lines = [line.split(": ", 1)[1] for out, _ in outs for line in _window_lines(out)]
    assert len([t for t in lines if t.startswith("re-ran: SUCCESS (attempt 2)")]) == 3, outs
    assert all(t.startswith(("re-ran", "running elsewhere", "already done")) for t in lines), outs


def test_two_backfills_rerunning_the_same_failed_windows_run_each_once(tmp_path):
    _race_two_reruns(tmp_path)
    assert sorted(a for _, a, _, _ in _runs(tmp_path / "piko.db")) == [1, 1, 1, 2, 2, 2]


@pytest.mark.mysql
def test_two_backfills_rerunning_the_same_failed_windows_run_each_once_on_mysql(tmp_path, mysql_db_dsn):
    _race_two_reruns(tmp_path, "--dsn", mysql_db_dsn)
    r = piko("runs", "--dsn", mysql_db_dsn, "--limit", "50", cwd=tmp_path)
    assert r.returncode == 0 and len([line for line in r.stdout.splitlines() if " j " in line]) == 6, r.stdout
