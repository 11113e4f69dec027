"""`piko schedule`, `config`, `runs`, `jobs`, `db`: real SQLite files and real subprocesses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.test_cli import piko


def _rows(db: Path, statement: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


def _one_line_refusal(r, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_schedule_and_config_refuse_an_unknown_job_id_naming_the_closest_known_ones(tmp_path):
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    assert piko("schedule", "hello_job", "--interval", '{"seconds": 10}', "--create", cwd=tmp_path).returncode == 0
    _one_line_refusal(piko("schedule", "helo_job", "--disable", cwd=tmp_path),
                      "'helo_job' has no scheduled_job row", "did you mean 'hello_job'?", "--create")
    _one_line_refusal(piko("config", "hello_jb", '{"x": 1}', cwd=tmp_path), "did you mean 'hello_job'?")
    _one_line_refusal(piko("schedule", "zzz", "--cron", "* * * * *", cwd=tmp_path), "known job ids: hello_job")
    db = tmp_path / "piko.db"
    assert _rows(db, "SELECT job_id, enabled FROM scheduled_job") == [("hello_job", 1)]
    assert _rows(db, "SELECT job_id FROM job_config") == []
    assert piko("schedule", "hello_job", "--disable", cwd=tmp_path).returncode == 0  # known: no --create needed
    assert piko("config", "hello_job", '{"x": 1}', cwd=tmp_path).returncode == 0
    assert piko("config", "other", '{"y": 2}', "--create", cwd=tmp_path).returncode == 0
    assert piko("config", "other", '{"y": 3}', cwd=tmp_path).returncode == 0  # a job_config row makes it known
    assert _rows(db, "SELECT job_id, config_json FROM job_config ORDER BY job_id") == [
        ("hello_job", '{"x": 1}'), ("other", '{"y": 3}')]
