"""`piko schedule`, `config`, `runs`, `jobs`, `db`: real SQLite files and real subprocesses."""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_cli import ROOT, piko


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


# -- no database by accident ------------------------------------------------------------------
COMMANDS_NEEDING_A_DATABASE = [
    ("runs",), ("db", "check"), ("schedule", "j", "--cron", "* * * * *", "--create"), ("config", "j", "{}", "--create"),
    ("trigger", "jobs.py", "j"), ("backfill", "jobs.py", "j", "--start", "2026-01-01", "--end", "2026-01-02")]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_A_DATABASE, ids=lambda a: " ".join(a[:2]))
def test_commands_other_than_run_and_db_init_never_create_a_database(tmp_path, args):
    _jobs_file(tmp_path)
    r = piko(*args, cwd=tmp_path)
    _one_line_refusal(r, f"no piko database at {tmp_path / 'piko.db'}", "piko db init")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["jobs.py"]


def test_jobs_without_a_database_lists_the_schedules_declared_in_code_and_creates_nothing(tmp_path):
    _jobs_file(tmp_path)
    r = piko("jobs", "jobs.py", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("j: cron '0 * * * *' -> next: "), (r.stdout, r.stderr)
    assert f"no database at {tmp_path / 'piko.db'} yet" in r.stderr
    assert not (tmp_path / "piko.db").exists()


def _jobs_file(folder: Path) -> None:
    (folder / "jobs.py").write_text("from piko import PikoApp\napp = PikoApp('t')\n"
                                    "@app.job('j', cron='0 * * * *')\nasync def j(ctx, t):\n    pass\n")


# -- read-only storage --------------------------------------------------------------------------
def test_read_commands_open_an_older_schema_read_only_and_refuse_instead_of_migrating_it(tmp_path):
    from piko.store.schema import SCHEMA_TABLE, latest_version, migrations, render

    newest = latest_version("sqlite")
    db = tmp_path / "piko.db"
    conn = sqlite3.connect(db)  # the database an older piko left: every migration but the newest
    conn.execute(render(SCHEMA_TABLE, "sqlite"))
    for mig in migrations("sqlite")[:-1]:
        for statement in (*mig.statements, *mig.optional):
            conn.execute(statement)
        conn.execute("INSERT INTO piko_schema(version, description) VALUES (?, ?)", (mig.version, mig.description))
    conn.commit()
    conn.close()
    for args in (("runs",), ("db", "check")):
        _one_line_refusal(piko(*args, cwd=tmp_path), f"schema version {newest - 1}, older than this piko reads "
                                                     f"({newest})", "piko db init")
    assert _rows(db, "SELECT MAX(version) FROM piko_schema") == [(newest - 1,)]  # nothing migrated
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    assert piko("runs", cwd=tmp_path).returncode == 0


NOBODY = 65534


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@functools.lru_cache(maxsize=1)
def _unprivileged_python() -> str | None:
    """An interpreter (3.10+) that user nobody may run: the venv's may live under /root (mode 700)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        try:
            probe = subprocess.run([candidate, "-c", "import sys, sqlite3; assert sys.version_info >= (3, 10)"],
                                   preexec_fn=_as_nobody, capture_output=True, timeout=30) if candidate else None
        except OSError:  # not executable for nobody
            continue
        if probe is not None and probe.returncode == 0:
            return candidate
    return None


def piko_unprivileged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a user that file permissions apply to (root ignores them)."""
    if os.geteuid() != 0:
        return piko(*args, cwd=cwd)
    python = _unprivileged_python()
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
    return subprocess.run([python, "-m", "piko", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30, preexec_fn=_as_nobody)


@pytest.fixture
def shared_dir():
    """A folder every user may enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="piko-ro-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


def _database_with_one_run(folder: Path) -> Path:
    _jobs_file(folder)
    assert piko("db", "init", cwd=folder).returncode == 0
    r = piko("trigger", "jobs.py", "j", cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder / "piko.db"


def test_read_commands_work_on_a_database_this_user_may_only_read(shared_dir):
    db = _database_with_one_run(shared_dir)
    db.chmod(0o444)
    shared_dir.chmod(0o555)  # no -wal/-shm file can be created here either
    r = piko_unprivileged("runs", cwd=shared_dir)
    assert r.returncode == 0 and " j " in r.stdout and "SUCCESS" in r.stdout, (r.stdout, r.stderr)
    r = piko_unprivileged("db", "check", cwd=shared_dir)
    assert r.returncode == 0 and "schema version" in r.stdout and "read-only" in r.stdout, (r.stdout, r.stderr)
    r = piko_unprivileged("jobs", "jobs.py", cwd=shared_dir)
    assert r.returncode == 0 and r.stdout.startswith("j: cron"), (r.stdout, r.stderr)
    assert sorted(p.name for p in shared_dir.iterdir()) == ["jobs.py", "piko.db"]


def test_writing_to_a_read_only_database_says_which_file_and_why_in_one_line(shared_dir):
    db = _database_with_one_run(shared_dir)
    db.chmod(0o444)
    for args in (("trigger", "jobs.py", "j"), ("schedule", "j", "--disable"), ("run", "jobs.py", "--http", "off")):
        r = piko_unprivileged(*args, cwd=shared_dir)
        if args[0] == "run":  # its banner (where the data lives, how to stop) comes first
            r.stderr = r.stderr.splitlines()[-1]
        _one_line_refusal(r, f"cannot write SQLite file {db}: permission denied: the file is not writable by user "
                             f"nobody (uid 65534): give this user write access", "piko runs, piko jobs")


def test_a_database_in_a_folder_this_user_cannot_write_says_so(shared_dir):
    db = _database_with_one_run(shared_dir)
    db.chmod(0o666)  # the file is writable, its folder is not: SQLite cannot create the -wal file
    shared_dir.chmod(0o555)
    _one_line_refusal(piko_unprivileged("schedule", "j", "--disable", cwd=shared_dir), f"SQLite file {db}",
                      f"cannot create its -wal and -shm files in {shared_dir}", "folder is not writable")
    db.unlink()
    _one_line_refusal(piko_unprivileged("db", "init", cwd=shared_dir), f"cannot write SQLite file {db}",
                      f"SQLite cannot create it in {shared_dir}", "permission denied")


def test_jobs_shortens_long_expressions_shows_disabled_jobs_without_fire_times_and_invalid_rows(tmp_path):
    (tmp_path / "jobs.py").write_text(
        "from piko import PikoApp\napp = PikoApp('t')\n"
        + "".join(f"@app.job('{j}', cron='0 * * * *')\nasync def {j}(ctx, t):\n    pass\n"
                  for j in ("long", "off", "bad")))
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    every_minute = ",".join(str(m) for m in range(60)) + " * * * *"  # valid, 170 characters
    conn = sqlite3.connect(tmp_path / "piko.db")
    conn.executemany("INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr, enabled) VALUES (?, ?, ?, ?)",
                     [("long", "cron", every_minute, 1), ("off", "cron", "*/5 * * * *", 0),
                      ("bad", "cron", "61 * * * *", 1)])
    conn.commit()
    conn.close()
    r = piko("jobs", "jobs.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    from piko.errors import TriggerSpecError

    assert lines["long"].startswith(f"cron {TriggerSpecError.preview(every_minute)} -> next: ")
    assert TriggerSpecError.preview(every_minute).endswith("...") and every_minute not in r.stdout
    assert lines["off"] == "cron '*/5 * * * *' [disabled]"
    assert lines["bad"].startswith("cron '61 * * * *' -> INVALID: invalid cron field 'minute': 61")


# -- piko runs --------------------------------------------------------------------------------------
def _runs_fixture(folder: Path, *dsn: str) -> None:
    """Two manual runs (one FAILED with a traceback) and one backfill run."""
    (folder / "jobs.py").write_text(
        "from piko import PikoApp\napp = PikoApp('t')\n"
        "@app.job('ok', cron='0 * * * *', stateful=True)\nasync def ok(ctx, t):\n    pass\n"
        "@app.job('boom')\nasync def boom(ctx, t):\n    raise ValueError('no such table: orders')\n")
    assert piko("db", "init", *dsn, cwd=folder).returncode == 0
    assert piko("trigger", "jobs.py", "ok", *dsn, cwd=folder).returncode == 0
    assert piko("trigger", "jobs.py", "boom", *dsn, cwd=folder).returncode == 1
    _store_traceback(folder, dsn[1] if dsn else f"sqlite:///{folder / 'piko.db'}")
    r = piko("backfill", "jobs.py", "ok", "--start", "2026-01-01T10:00:00Z", "--end", "2026-01-01T11:00:00Z", *dsn,
             cwd=folder)
    assert r.returncode == 0, r.stderr


TRACEBACK = ('Traceback (most recent call last):\n  File "jobs.py", line 7, in boom\n'
             "    raise ValueError('no such table: orders')\nValueError: no such table: orders")


def _store_traceback(folder: Path, dsn: str) -> None:
    """Run 2's traceback, where the runner does not record one yet (the runner's finish path is
    changed on another branch); a traceback already recorded is kept."""
    import asyncio

    from piko.store import make_store
    from tests.store.raw_sql import raw_execute

    async def write() -> None:
        store = make_store(dsn)
        await store.open()
        try:
            quoted = TRACEBACK.replace("'", "''")
            await raw_execute(store, f"UPDATE job_run SET error_traceback = '{quoted}' "
                                     f"WHERE run_id = 2 AND error_traceback IS NULL")
        finally:
            await store.close()
    asyncio.run(write())


def _listed(r) -> list[tuple[str, str, str]]:
    """(job_id, status, kind) of each listed run."""
    assert r.returncode == 0, r.stderr
    return [tuple(line.split()[i] for i in (1, 4, 5)) for line in r.stdout.splitlines()[1:] if line[:7].strip().isdigit()]


def test_runs_filters_by_status_and_kind_in_any_case(tmp_path):
    _runs_fixture(tmp_path)
    assert _listed(piko("runs", cwd=tmp_path)) == [("ok", "SUCCESS", "backfill"), ("boom", "FAILED", "manual"),
                                                   ("ok", "SUCCESS", "manual")]
    assert _listed(piko("runs", "--status", "failed", cwd=tmp_path)) == [("boom", "FAILED", "manual")]
    assert _listed(piko("runs", "ok", "--kind", "MANUAL", cwd=tmp_path)) == [("ok", "SUCCESS", "manual")]
    assert _listed(piko("runs", "--status", "Success", "--limit", "1", cwd=tmp_path)) == [("ok", "SUCCESS", "backfill")]
    none = piko("runs", "--kind", "scheduled", cwd=tmp_path)  # 'scheduled' is read as 'schedule'
    assert none.returncode == 0 and "(no run matches)" in none.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (("--status", "broken"), "use one of PENDING, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCELLED, ABANDONED, MISSED, SKIPPED"),
    (("--kind", "cron"), "use one of schedule, manual, backfill, retry"),
    (("--limit", "0"), "--limit must be at least 1, got 0"),
    (("--limit", "-5"), "--limit must be at least 1, got -5"),
    (("--show", "999"), "no run with id 999"),
    (("boom", "--show", "1"), "--show RUN_ID shows one run"),
])
def test_runs_refuses_bad_filters_naming_what_is_allowed(tmp_path, args, needle):
    _runs_fixture(tmp_path)
    _one_line_refusal(piko("runs", *args, cwd=tmp_path), needle)


def _shown(r) -> dict[str, str]:
    assert r.returncode == 0, r.stderr
    head = r.stdout.split("\ntraceback:")[0]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in head.splitlines())}


def test_runs_show_prints_every_field_the_data_window_and_the_stored_traceback(tmp_path):
    _runs_fixture(tmp_path)
    failed = _shown(r := piko("runs", "--show", "2", cwd=tmp_path))
    assert (failed["job_id"], failed["status"], failed["kind"], failed["attempt"]) == ("boom", "FAILED", "manual", "1")
    assert failed["error"] == "ValueError: no such table: orders" and failed["data window"] == "-"
    assert "traceback:" in r.stdout and "jobs.py" in r.stdout and "raise ValueError('no such table: orders')" in r.stdout
    window = _shown(piko("runs", "--show", "3", cwd=tmp_path))
    assert window["data window"] == "[2026-01-01T10:00:00+00:00, 2026-01-01T11:00:00+00:00)"
    assert window["scheduled"] == "2026-01-01T11:00:00+00:00" and window["duration"].endswith(" s")


def test_runs_tree_shows_a_fire_its_attempts_and_its_pieces_with_statuses(tmp_path):
    (tmp_path / "jobs.py").write_text(
        "from piko import PikoApp\napp = PikoApp('t')\n"
        "@app.task('sq')\nasync def sq(ctx, item):\n    return item * item\n"
        "@app.job('scan', shards=3)\nasync def scan(ctx, t):\n"
        "    if ctx['shard'][0] == 0:\n        await ctx.map('sq', [1, 2])\n"
        "    if ctx['shard'][0] == 2:\n        raise ValueError('shard 2 is broken')\n")
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    assert piko("trigger", "jobs.py", "scan", cwd=tmp_path).returncode == 1  # a shard failed: the fire FAILED
    r = piko("runs", "1", "--tree", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("run 1 scan ") and " FAILED attempt 1 " in lines[0] and "MapFailed" in lines[0]
    assert lines[1] == "  pieces: 3 (1 FAILED, 2 SUCCESS)"
    assert [line.split()[2] for line in lines if line.startswith("  run ")] == ["scan[0/3]", "scan[1/3]", "scan[2/3]"]
    assert "    pieces: 2 (2 SUCCESS)" in lines  # shard 0's own map, one level down
    assert any("sq[scan[0/3]:1#1]" in line for line in lines), lines
    assert "ValueError: shard 2 is broken" in r.stdout
    _one_line_refusal(piko("runs", "scan", "--tree", cwd=tmp_path), "--tree needs a RUN_ID")
    _one_line_refusal(piko("runs", "99", "--tree", cwd=tmp_path), "no run with id 99")


@pytest.mark.mysql
def test_runs_filters_and_show_on_mysql(tmp_path, mysql_db_dsn):
    dsn = ("--dsn", mysql_db_dsn)
    _runs_fixture(tmp_path, *dsn)
    assert _listed(piko("runs", "--status", "FAILED", *dsn, cwd=tmp_path)) == [("boom", "FAILED", "manual")]
    r = piko("runs", "--show", "2", *dsn, cwd=tmp_path)
    assert _shown(r)["error"] == "ValueError: no such table: orders" and "raise ValueError" in r.stdout


def test_every_option_has_help_and_the_help_names_every_status_and_kind():
    """parser.py imports nothing from piko but the version, so its lists of statuses and kinds are
    text: this keeps them equal to RunStatus, RUN_KINDS and RERUNNABLE."""
    import argparse

    from piko.cli.parser import build_parser
    from piko.core.lifecycle import RERUNNABLE
    from piko.core.types import RUN_KINDS, RunStatus

    sub = next(a for a in build_parser("0")._actions if isinstance(a, argparse._SubParsersAction))
    helps = {}
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"piko {name} {action.dest}: no help text"
                helps[(name, action.dest)] = action.help
    assert all(s.value in helps[("runs", "status")] for s in RunStatus)
    assert all(kind in helps[("runs", "kind")] for kind in RUN_KINDS)
    assert all(s.value in helps[("backfill", "rerun_failed")] for s in RERUNNABLE)


def test_an_unreachable_store_exits_1_not_2_as_the_command_itself_was_fine(tmp_path):
    pytest.importorskip("aiomysql")
    r = piko("runs", "--dsn", "mysql://piko:piko@127.0.0.1:1/piko?connect_timeout=2", cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "127.0.0.1" in r.stderr


@pytest.mark.mysql
def test_read_commands_work_for_a_mysql_user_that_may_only_select(tmp_path, mysql_db_dsn):
    """runs, jobs and db check open MySQL read-only: no migration, so a SELECT-only user works."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import pymysql

    _runs_fixture(tmp_path, "--dsn", mysql_db_dsn)
    parts = urlsplit(mysql_db_dsn)
    user = f"ro_{secrets.token_hex(4)}"
    root = pymysql.connect(host=parts.hostname, port=parts.port, user="root", autocommit=True)
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'ro'")
            cur.execute(f"GRANT SELECT ON `{parts.path.lstrip('/')}`.* TO '{user}'@'%'")
        ro_dsn = urlunsplit(parts._replace(netloc=f"{user}:ro@{parts.hostname}:{parts.port}"))
        listed = piko("runs", "--dsn", ro_dsn, cwd=tmp_path)
        assert listed.returncode == 0 and "boom" in listed.stdout, listed.stderr
        check = piko("db", "check", "--dsn", ro_dsn, cwd=tmp_path)
        assert check.returncode == 0 and "(read-only)" in check.stdout, check.stderr
        refused = piko("config", "boom", '{"x": 1}', "--dsn", ro_dsn, cwd=tmp_path)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        root.close()


# -- piko workflow ----------------------------------------------------------------------------------
WORKFLOW_JOBS = """
import os
from piko import PikoApp
app = PikoApp('t')
wf = app.workflow('etl')

@wf.step('extract')
async def extract(ctx, t):
    return 41

@wf.step('transform', after=['extract'])
async def transform(ctx, t):
    if os.path.exists('broken'):
        raise ValueError('bad mapping')
    return ctx['upstream']['extract'] + 1

@wf.step('load', after=['transform'])
async def load(ctx, t):
    return ctx['upstream']['transform']
"""


def test_workflow_show_and_rerun_run_the_failed_step_and_keep_the_rest(tmp_path):
    (tmp_path / "jobs.py").write_text(WORKFLOW_JOBS)
    (tmp_path / "broken").write_text("")
    assert piko("db", "init", cwd=tmp_path).returncode == 0
    assert piko("trigger", "jobs.py", "etl", cwd=tmp_path).returncode == 1
    shown = piko("workflow", "show", "1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("workflow etl at ") and ": FAILED (run 1, attempt 1" in lines[0]
    order = [line.split()[0] for line in lines[2:]]
    assert order == ["extract", "transform", "load"]
    assert "UPSTREAM_FAILED" in lines[-1] and "after transform" in lines[-1]
    _one_line_refusal(piko("workflow", "rerun", "1", cwd=tmp_path), "name the jobs file")
    (tmp_path / "broken").unlink()
    rerun = piko("workflow", "rerun", "1", "jobs.py", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip().endswith(": SUCCESS")
    again = piko("workflow", "rerun", "1", "jobs.py", cwd=tmp_path)
    assert again.returncode != 0 and "not the newest attempt" in again.stderr
    shown = piko("workflow", "show", "1", "jobs.py", cwd=tmp_path).stdout.splitlines()
    assert ": SUCCESS (run " in shown[0] and "attempt 2 of this time" in shown[0]
    assert [line.split()[:2] for line in shown[1:]] == [["extract", "SUCCESS"], ["transform", "SUCCESS"],
                                                        ["load", "SUCCESS"]]
    assert "attempt 2" in shown[2] and "attempt" not in shown[1].split("run")[0]
    bad = piko("workflow", "rerun", "1", "jobs.py", "--from", "nope", cwd=tmp_path)
    assert bad.returncode != 0 and "no step 'nope'" in bad.stderr
