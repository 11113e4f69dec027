"""The examples run as their headers say: `python -m piko run examples/X.py`, as real processes.

Each example gets a fresh directory and SQLite file. Before it starts, its jobs' schedule
rows are written with a 1 s interval (the stored row wins over the code's schedule, as the
README says), so a few seconds show several runs without changing the examples. All the
SQLite examples start together (module fixture); each test then drives its own (a config
change, a restart) and judges what the database and the example's output files recorded.
The MySQL failover example runs only when a server is available (tests/mysql_server.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.test_failover import Db

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SETTINGS = EXAMPLES / "piko.toml"
EVERY_SECOND = '{"seconds": 1}'
WAIT_S = 30.0  # generous: the examples share 2 cores with each other and with the rest of the machine


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIKO_")}
    env.update({"PYTHONPATH": str(ROOT), "PIKO_HTTP_ENABLED": "false", "PIKO_LOG_LEVEL": "INFO", **extra})
    return env


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"within {timeout}s: {what}")


def utc(value: str) -> datetime:
    """A stored (naive UTC) or ISO time as a naive UTC datetime, for comparing the two."""
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


class Example:
    """One example in its own directory: `piko` commands there, its processes, its database."""

    def __init__(self, name: str, workdir: Path, jobs: tuple[str, ...], *, settings: bool = False,
                 **env: str) -> None:
        self.file, self.dir, self.jobs = EXAMPLES / f"{name}.py", workdir, jobs
        self.dir.mkdir()
        self.settings = ["--settings", str(SETTINGS)] if settings else []
        self.db_file = self.dir / ("office.db" if settings else "piko.db")  # office.db: examples/piko.toml's
        store = {} if settings or "PIKO_MYSQL_DSN" in env else {"PIKO_DB_PATH": str(self.db_file)}
        self.env = _env(**store, **env)
        self.procs: list[subprocess.Popen[bytes]] = []

    def piko(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "piko", *args, *self.settings], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def seed_fast_schedules(self) -> None:
        self.piko("db", "init")
        conn = sqlite3.connect(self.db_file)
        with conn:
            conn.executemany("INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr, enabled, version) "
                             "VALUES (?, 'interval', ?, 1, 1)", [(job, EVERY_SECOND) for job in self.jobs])
        conn.close()

    def start(self, command: str = "run", *args: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.dir / f"p{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "piko", command, str(self.file), *self.settings, *args],
                                    cwd=self.dir, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes] | None = None) -> str:
        return (self.dir / f"p{self.procs.index(proc or self.procs[-1])}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """SIGTERM, a clean exit, and no error in the log."""
        proc = proc or self.procs[-1]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, self.log(proc)[-3000:]
        assert errors(self.log(proc)) == [], self.log(proc)[-3000:]

    def rows(self, statement: str, params: tuple[Any, ...] = (), db: Path | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db or self.db_file, timeout=10)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def runs(self, job_id: str, status: str = "SUCCESS") -> list[tuple[Any, ...]]:
        """(run_id, scheduled_time, kind, instance_id, data_start, data_end) of the job's runs, oldest first."""
        return self.rows("SELECT run_id, scheduled_time, kind, instance_id, data_start, data_end FROM job_run "
                         "WHERE job_id = ? AND status = ? ORDER BY scheduled_time", (job_id, status))

    def wait_for_runs(self, job_id: str, n: int) -> list[tuple[Any, ...]]:
        return wait_for(lambda: len(self.runs(job_id)) >= n and self.runs(job_id), f"{n} SUCCESS runs of {job_id}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or line.startswith("Traceback")]


def pid_of(instance_id: str) -> int:
    return int(instance_id.split(":")[-2])  # instance ids are host:pid:random


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Example]]:
    """Every SQLite example, started at once with 1 s schedules; the cluster one as scheduler + worker."""
    base = tmp_path_factory.mktemp("examples")
    made = {
        "hello": Example("hello", base / "hello", ("hello_job",)),
        "etl_hot_config": Example("etl_hot_config", base / "etl", ("orders_etl",), PIKO_POLL_INTERVAL_S="1"),
        "stateful_catch_up": Example("stateful_catch_up", base / "stateful", ("page_view_rollup",)),
        "resource_injection": Example("resource_injection", base / "resources", ("load_prices",),
                                      TMPDIR=str(base / "scratch")),
        "writer_typed_sink": Example("writer_typed_sink", base / "writer", ("poll_sensors",)),
        "cpu_map_reduce": Example("cpu_map_reduce", base / "cpu", ("prime_census",)),
        "piko_toml": Example("piko_toml", base / "toml", ("office_digest",), settings=True),
        "cluster_workers": Example("cluster_workers", base / "cluster", ("collect_metrics", "render_report")),
        "map": Example("map", base / "map", ("monthly_report",)),
        "shards": Example("shards", base / "shards", ("scan",)),
        "workflow": Example("workflow", base / "workflow", ("daily_etl",)),
        "broadcast": Example("broadcast", base / "broadcast", ("refresh_cache",), DEMO_CACHE_DIR=str(base / "caches")),
    }
    (base / "scratch").mkdir()
    (base / "caches").mkdir()
    try:
        for example in made.values():
            example.seed_fast_schedules()
        for name, example in made.items():
            if name == "cluster_workers":  # as its header says: the scheduler serves 'default' only
                example.start("run", PIKO_EXECUTION="cluster", PIKO_WORKER_QUEUES="default")
                example.start("worker", "--queues", "reports")
            elif name == "broadcast":  # as its header says: two instances in cluster mode
                example.start("run", PIKO_EXECUTION="cluster")
                example.start("worker")
            else:
                example.start()
        yield made
    finally:
        for example in made.values():
            example.close()


# -- the longest scenarios first: the other examples keep running meanwhile ------------------------
def test_stateful_catch_up_runs_the_windows_missed_while_stopped_in_order(examples: dict[str, Example]) -> None:
    """Pass: after a stop of ~3 s and a restart, the missed windows run as kind 'backfill'; the
    SUCCESS windows, all together, tile time without a gap or an overlap, and each has its file."""
    ex = examples["stateful_catch_up"]
    ex.wait_for_runs("page_view_rollup", 2)
    ex.stop()
    time.sleep(3)
    ex.start()
    wait_for(lambda: [r for r in ex.runs("page_view_rollup") if r[2] == "backfill"], "backfill runs")
    first_after_restart = max(r[1] for r in ex.runs("page_view_rollup") if r[2] == "backfill")
    wait_for(lambda: [r for r in ex.runs("page_view_rollup") if r[1] > first_after_restart and r[2] == "schedule"],
             "a scheduled window after the catch-up")
    ex.stop()
    windows = [(utc(r[4]), utc(r[5])) for r in ex.runs("page_view_rollup")]
    assert len(windows) >= 4
    assert all(earlier[1] == later[0] for earlier, later in zip(windows, windows[1:], strict=False)), windows
    stored = {utc(json.loads(p.read_text())["start"]) for p in (ex.dir / "rollups").glob("*.json")}
    assert stored == {start for start, _ in windows}


def test_etl_picks_up_a_new_config_while_running_and_refuses_an_invalid_one(examples: dict[str, Example]) -> None:
    """Pass: runs report in EUR until `piko config` stores USD, later runs in USD; a config that
    its class refuses is logged and the job keeps running with the last good one."""
    ex = examples["etl_hot_config"]
    output = ex.dir / "order_totals.jsonl"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    ex.wait_for_runs("orders_etl", 1)
    assert {line["currency"] for line in lines()} == {"EUR"}
    ex.piko("config", "orders_etl", '{"currency": "USD", "min_amount": 25}')
    wait_for(lambda: [line for line in lines() if line["currency"] == "USD"], "a run with the new config")
    ex.piko("config", "orders_etl", '{"currency": "yen"}')
    wait_for(lambda: "job_config rejected" in ex.log(), "the invalid config refused")
    refused_at = len(lines())
    wait_for(lambda: len(lines()) >= refused_at + 4, "two more runs")
    assert {line["currency"] for line in lines()[refused_at:]} == {"USD"}
    proc = ex.procs[-1]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 0
    unexpected = [line for line in errors(ex.log()) if "currency must be one of" not in line]
    assert unexpected == []


def test_hello_runs_its_job(examples: dict[str, Example]) -> None:
    ex = examples["hello"]
    ex.wait_for_runs("hello_job", 2)
    ex.stop()
    assert "hello from run" in ex.log()


def test_resources_are_opened_for_each_run_and_closed_after_it(examples: dict[str, Example]) -> None:
    """Pass: each SUCCESS run committed its 3 prices through the injected connection, and every
    run's scratch directory is gone once the example stopped."""
    ex = examples["resource_injection"]
    ex.wait_for_runs("load_prices", 2)
    ex.stop()
    successes = {r[0] for r in ex.runs("load_prices")}
    loaded = ex.rows("SELECT run_id, COUNT(*) FROM price GROUP BY run_id", db=ex.dir / "warehouse.db")
    assert dict(loaded) == dict.fromkeys(successes, 3)
    assert list((ex.dir.parent / "scratch").iterdir()) == []


def test_writer_delivers_every_reading_in_batches_through_the_typed_sink(examples: dict[str, Example]) -> None:
    """Pass: readings.csv holds exactly 50 rows for each SUCCESS run and no others, alerts.csv only
    readings above 28 C, and the sink's log shows writes of more than one row."""
    ex = examples["writer_typed_sink"]
    ex.wait_for_runs("poll_sensors", 2)
    ex.stop()
    out = ex.dir / "sensor_data"
    readings = list(csv.reader((out / "readings.csv").open()))
    per_time: dict[datetime, int] = {}
    for _, at, _ in readings:
        per_time[utc(at)] = per_time.get(utc(at), 0) + 1
    assert per_time == {utc(r[1]): 50 for r in ex.runs("poll_sensors")}
    hot = {(sensor, at) for sensor, at, celsius in readings if float(celsius) > 28}
    alerts = list(csv.reader((out / "alerts.csv").open())) if (out / "alerts.csv").exists() else []
    assert {(sensor, at) for sensor, at, _ in alerts} == hot
    batches = [int(n) for n in re.findall(r"readings\.csv: (\d+) rows in one write", ex.log())]
    assert batches and max(batches) > 1


def test_cpu_map_reduce_counts_the_primes_in_worker_processes(examples: dict[str, Example]) -> None:
    ex = examples["cpu_map_reduce"]
    ex.wait_for_runs("prime_census", 2)
    ex.stop()
    assert "17984 primes below 200000" in ex.log()  # pi(200,000)


def test_piko_toml_decides_the_store_the_time_zone_and_the_shutdown_budget(examples: dict[str, Example]) -> None:
    """Pass: with --settings examples/piko.toml (and no PIKO_DB_PATH) the runs are in ./office.db,
    the scheduled times are Berlin time, and shutdown allows the file's 20 s."""
    ex = examples["piko_toml"]
    ex.wait_for_runs("office_digest", 2)
    ex.stop()
    assert not (ex.dir / "piko.db").exists()
    assert re.search(r"office digest for .* CES?T", ex.log()), ex.log()[-2000:]
    assert "running jobs get up to 20s" in ex.log()


def test_cluster_reports_run_only_on_the_worker_serving_their_queue(examples: dict[str, Example]) -> None:
    """Pass: every SUCCESS run of render_report (queue 'reports') ran in the `piko worker`
    process, every run of collect_metrics in the scheduler, which serves only 'default'."""
    ex = examples["cluster_workers"]
    scheduler, worker = ex.procs
    ex.wait_for_runs("render_report", 2)
    ex.wait_for_runs("collect_metrics", 2)
    ex.stop(scheduler)
    ex.stop(worker)
    assert {pid_of(r[3]) for r in ex.runs("render_report")} == {worker.pid}
    assert {pid_of(r[3]) for r in ex.runs("collect_metrics")} == {scheduler.pid}


def _pieces(ex: Example, parent_job: str, status: str = "SUCCESS") -> dict[int, list[tuple[Any, ...]]]:
    """(job_id, status) of the pieces of each `status` run of `parent_job`, by parent run id."""
    return {run[0]: ex.rows("SELECT job_id, status FROM job_run WHERE parent_run_id = ? ORDER BY job_id", (run[0],))
            for run in ex.runs(parent_job, status)}


def _every_fire_had_its_pieces(ex: Example, parent_job: str, count: int, logged: str) -> None:
    """Two SUCCESS runs of parent_job, then a clean stop: `logged` is in the log and each SUCCESS
    run has `count` pieces, all SUCCESS."""
    ex.wait_for_runs(parent_job, 2)
    ex.stop()
    assert logged in ex.log()
    pieces = _pieces(ex, parent_job)
    assert pieces and all(len(rows) == count and {s for _, s in rows} == {"SUCCESS"} for rows in pieces.values()), \
        pieces


def test_map_runs_one_recorded_piece_per_month_and_reduces_them(examples: dict[str, Example]) -> None:
    """Pass: each SUCCESS run of monthly_report has 12 SUCCESS pieces (one per month) and logs the
    reduced total of 12 x 700 orders."""
    _every_fire_had_its_pieces(examples["map"], "monthly_report", 12, "8400 orders over 12 months")


def test_shards_split_each_fire_into_four_runs(examples: dict[str, Example]) -> None:
    """Pass: each SUCCESS fire of scan has exactly the shards 0/4 .. 3/4, all SUCCESS, and together
    they scanned all 10,000 users once."""
    ex = examples["shards"]
    ex.wait_for_runs("scan", 2)
    ex.stop()
    pieces = _pieces(ex, "scan")
    assert pieces and all(rows == [(f"scan[{i}/4]", "SUCCESS") for i in range(4)] for rows in pieces.values()), pieces
    assert set(re.findall(r"shard \d/4 scanned (\d+) users", ex.log())) == {"2500"}


def test_workflow_runs_its_five_steps_in_order(examples: dict[str, Example]) -> None:
    """Pass: each SUCCESS run of daily_etl has its 5 steps SUCCESS, and load saw the upstream results."""
    _every_fire_had_its_pieces(examples["workflow"], "daily_etl", 5, "loaded 5 rows from orders, total 100")


def test_broadcast_runs_each_fire_on_both_instances(examples: dict[str, Example]) -> None:
    """Pass: a fire once both instances are live has one SUCCESS copy per instance, and each
    instance left its marker file."""
    ex = examples["broadcast"]
    scheduler, worker = ex.procs

    def both() -> bool:
        return any(len({job for job, status in rows if status == "SUCCESS"}) == 2
                   for rows in _pieces(ex, "refresh_cache").values())
    wait_for(both, "a fire copied to both instances")
    ex.stop(worker)
    ex.stop(scheduler)
    markers = {p.name for p in (ex.dir.parent / "caches").glob("piko-cache-*.txt")}
    assert markers == {f"piko-cache-{scheduler.pid}.txt", f"piko-cache-{worker.pid}.txt"}


def test_every_example_declares_valid_schedules(tmp_path: Path) -> None:
    """Pass: `piko jobs` (with no database yet: the schedules declared in code) shows next fire
    times for every scheduled job of every example (map tasks and workflow steps say what runs
    them instead); piko_toml's in Berlin time."""
    files = sorted(EXAMPLES.glob("*.py"))
    procs = {f.stem: subprocess.Popen([sys.executable, "-m", "piko", "jobs", str(f)] +
                                      (["--settings", str(SETTINGS)] if f.stem == "piko_toml" else []),
                                      cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for f in files}
    outputs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (name, err)
        scheduled = [line for line in out.splitlines() if ": map task " not in line and ": step of workflow " not in line]
        assert scheduled and all("-> next: " in line for line in scheduled), (name, out)
        outputs[name] = out
    assert len(outputs) >= 9
    assert re.search(r"next: \S+\+0[12]:00", outputs["piko_toml"]), outputs["piko_toml"]


@pytest.mark.mysql
@pytest.mark.timeout(120)
def test_mysql_failover_the_standby_takes_over_after_kill_9(mysql_db_dsn: str, tmp_path: Path) -> None:
    """Pass: two instances of the example on one MySQL database; after `kill -9` of the leader the
    other records the runs; every scheduled time ran at most once, and SUCCESS rows come from both."""
    ex = Example("mysql_failover", tmp_path / "mysql", ("sync_inventory",), PIKO_MYSQL_DSN=mysql_db_dsn,
                 PIKO_LEADER_LEASE_S="2", PIKO_LEADER_RENEW_INTERVAL_S="0.5")
    db = Db(mysql_db_dsn)
    try:
        first = ex.start()
        second = ex.start()

        def leader() -> subprocess.Popen[bytes] | None:
            found = db.rows("SELECT holder FROM piko_lease WHERE name = 'default'")
            holder = str(found[0][0]) if found else ""
            return next((p for p in (first, second) if holder and pid_of(holder) == p.pid), None)

        def successes() -> list[tuple[Any, ...]]:
            return db.rows("SELECT scheduled_time, instance_id FROM job_run WHERE status = 'SUCCESS'")
        wait_for(lambda: successes() and leader(), "a leader that recorded a run")
        killed = leader()
        assert killed is not None
        survivor = second if killed is first else first
        killed.kill()
        killed.wait(timeout=10)  # reaped: the survivor sees its pid gone
        wait_for(lambda: [r for r in successes() if pid_of(r[1]) == survivor.pid], "a run by the new leader")
        ex.stop(survivor)
        times = [r[0] for r in db.rows("SELECT scheduled_time FROM job_run")]
        assert len(times) == len(set(times))
        assert {pid_of(r[1]) for r in successes()} == {killed.pid, survivor.pid}
    finally:
        ex.close()
