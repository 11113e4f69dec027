"""`piko backfill` with real SQLite files and real subprocesses (MariaDB where the store matters)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.test_cli import piko

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
