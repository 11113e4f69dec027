"""Fault tests with real processes: several `python -m piko run` instances on one store.

Each test starts instances of tests/fixtures/failover_jobs.py (1 s interval jobs) with a
short lease (2 s, renewed every 0.5 s), injects one fault (none, kill -9, SIGSTOP, database
stopped), and then judges only what the database recorded: job_run, piko_lease. Every test
states its pass criterion in its docstring. Subprocesses are always killed in `finally`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests import mysql_server

ROOT = Path(__file__).resolve().parent.parent
JOBS_FILE = ROOT / "tests" / "fixtures" / "failover_jobs.py"
LEASE_S = 2.0
RENEW_S = 0.5
TAKEOVER_BOUND_S = LEASE_S + RENEW_S + 1.0  # the bound: lease + renew + 1 s
STORE_KINDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


# -- reading the store ---------------------------------------------------------------------
class Db:
    """Plain-driver reads of the store the instances share ('?' placeholders for both)."""

    def __init__(self, cli_dsn: str) -> None:
        self.cli_dsn = cli_dsn
        self.is_mysql = cli_dsn.startswith("mysql")

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.is_mysql:
            conn = sqlite3.connect(self.cli_dsn, timeout=10)
            try:
                return conn.execute(statement, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
            finally:
                conn.close()
        import pymysql

        parts = urlsplit(self.cli_dsn)
        conn = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                               user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                               database=parts.path.lstrip("/"), autocommit=True, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute(statement.replace("?", "%s"), params)
                except pymysql.err.ProgrammingError as exc:
                    if exc.args and exc.args[0] == 1146:  # table not created yet
                        return []
                    raise
                return list(cur.fetchall())
        finally:
            conn.close()

    def runs(self) -> list[dict[str, Any]]:
        names = ("run_id", "job_id", "scheduled_time", "status", "attempt", "kind", "instance_id", "fence_token")
        return [dict(zip(names, (*r[:2], _dt(r[2]), *r[3:]), strict=True)) for r in
                self.rows(f"SELECT {', '.join(names)} FROM job_run ORDER BY run_id")]

    def lease(self) -> tuple[str, int]:
        """(holder, token) of the leader lease; ('', 0) before the first campaign."""
        found = self.rows("SELECT holder, token FROM piko_lease WHERE name = 'default'")
        return (str(found[0][0]), int(found[0][1])) if found else ("", 0)


def _dt(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.fixture(params=STORE_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db(str(tmp_path / "piko.db"))
    return Db(str(request.getfixturevalue("mysql_db_dsn")))


# -- the instances -------------------------------------------------------------------------
class Cluster:
    """Instances of the failover jobs file on one store; `close()` leaves no process behind."""

    def __init__(self, db: Db, workdir: Path, jobs_file: Path = JOBS_FILE, **env: str) -> None:
        self.db, self.workdir, self.jobs_file = db, workdir, jobs_file
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PIKO_")}
        self.env.update({"PYTHONPATH": str(ROOT), "PIKO_LEADER_LEASE_S": str(LEASE_S),
                         "PIKO_LEADER_RENEW_INTERVAL_S": str(RENEW_S), "PIKO_POLL_INTERVAL_S": "1",
                         "PIKO_SHUTDOWN_TIMEOUT_S": "3", "PIKO_LOG_LEVEL": "INFO", **env})
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            n = len(self.procs)
            with open(self.workdir / f"i{n}.out", "wb") as out, open(self.workdir / f"i{n}.err", "wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "piko", "run", str(self.jobs_file), "--dsn", self.db.cli_dsn, "--http", "off"],
                    cwd=self.workdir, env=self.env, stdout=out, stderr=err))

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.workdir / f"i{self.procs.index(proc)}.err").read_text(errors="replace")

    def by_holder(self, holder: str) -> subprocess.Popen[bytes]:
        pid = int(holder.split(":")[-2])  # instance ids are host:pid:random
        return next(p for p in self.procs if p.pid == pid)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        """SIGTERM every live instance (resuming stopped ones first) and wait for clean exits."""
        for proc in self.alive():
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(db: Db, jobs_file: Path = JOBS_FILE, **env: str) -> Cluster:
        made.append(Cluster(db, tmp_path, jobs_file, **env))
        return made[-1]

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"within {timeout}s: {what}")


def wait_for_leader(db: Db, min_runs: int = 1, timeout: float = 20) -> tuple[str, int]:
    """Wait until a leader holds the lease and has recorded `min_runs` runs with its token."""
    def ready() -> tuple[str, int] | None:
        holder, token = db.lease()
        if not holder:
            return None
        count = db.rows("SELECT COUNT(*) FROM job_run WHERE fence_token = ?", (token,))[0][0]
        return (holder, token) if count >= min_runs else None
    return wait_for(ready, timeout, f"a leader that recorded {min_runs} run(s)")  # type: ignore[no-any-return]


def wait_mid_second(db: Db) -> None:
    """Sleep until half-way between two fire times, so a fault never lands inside a claim batch."""
    anchor = min(r["scheduled_time"] for r in db.runs())
    epoch = datetime(1970, 1, 1)
    phase = ((time.time() - (anchor - epoch).total_seconds()) % 1.0)
    time.sleep((0.5 - phase) % 1.0)


# -- judging what was recorded -------------------------------------------------------------
def duplicates(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    counts = Counter((r["job_id"], r["scheduled_time"], r["attempt"]) for r in runs)
    return [key for key, n in counts.items() if n > 1]


def missing_fire_times(runs: list[dict[str, Any]], period: timedelta = timedelta(seconds=1)) -> list[str]:
    """Fire times absent between each job's first and last recorded time (any status counts)."""
    times: dict[str, set[datetime]] = defaultdict(set)
    for r in runs:
        times[r["job_id"]].add(r["scheduled_time"])
    gaps = []
    for job_id, seen in times.items():
        at, last = min(seen), max(seen)
        while at < last:
            at += period
            if at not in seen:
                gaps.append(f"{job_id}@{at.isoformat()}")
    return gaps


def tick_runs(db: Db) -> list[dict[str, Any]]:
    return [r for r in db.runs() if r["job_id"].startswith("tick")]


# -- the tests -----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_three_instances_run_each_scheduled_time_exactly_once(db: Db, cluster_factory: Callable[..., Cluster]) -> None:
    """Pass: 3 instances, 4 jobs every 1 s for ~5 s -> every (job_id, scheduled_time) has exactly
    one job_run row, no fire time is missing between a job's first and last row, every row carries
    a fencing token, and all three instances exit cleanly on SIGTERM."""
    cluster = cluster_factory(db, PIKO_TEST_FAILOVER_JOBS="4")
    cluster.start(3)
    wait_for_leader(db)
    wait_for(lambda: len([r for r in tick_runs(db) if r["job_id"] == "tick0"]) >= 5, 20, "5 fire times of tick0")
    assert len(cluster.alive()) == 3
    cluster.stop()
    runs = tick_runs(db)
    assert {r["job_id"] for r in runs} == {"tick0", "tick1", "tick2", "tick3"}
    per_time = Counter((r["job_id"], r["scheduled_time"]) for r in runs)
    assert set(per_time.values()) == {1}, [k for k, n in per_time.items() if n > 1]
    assert missing_fire_times(runs) == []
    assert all(r["fence_token"] is not None for r in runs)
    assert [p.returncode for p in cluster.procs] == [0, 0, 0], [cluster.log(p)[-800:] for p in cluster.procs]


@pytest.mark.timeout(90)
def test_kill_9_of_the_leader_hands_the_lease_on_within_lease_plus_renew_plus_1s(
        db: Db, cluster_factory: Callable[..., Cluster]) -> None:
    """Pass: after `kill -9` of the leader, piko_lease names another holder with token + 1 within
    lease + renew interval + 1 s (3.5 s here); the new term records runs; no (job_id,
    scheduled_time) runs twice and no fire time is missing across the failover."""
    cluster = cluster_factory(db)
    cluster.start(3)
    holder, token = wait_for_leader(db, min_runs=6)
    wait_mid_second(db)
    killed_at = time.monotonic()
    cluster.by_holder(holder).send_signal(signal.SIGKILL)

    def new_term() -> tuple[str, int] | None:
        found = db.lease()
        return found if found[0] not in ("", holder) else None
    new_holder, new_token = wait_for(new_term, 15, "another instance holds the lease", step=0.02)
    takeover_s = time.monotonic() - killed_at
    assert new_token == token + 1
    assert takeover_s <= TAKEOVER_BOUND_S, f"takeover took {takeover_s:.2f}s"
    wait_for(lambda: db.rows("SELECT COUNT(*) FROM job_run WHERE fence_token = ?", (new_token,))[0][0] >= 6,
             10, "the new leader records runs")
    cluster.stop()
    runs = tick_runs(db)
    assert duplicates(runs) == []
    assert missing_fire_times(runs) == []
    assert {r["fence_token"] for r in runs} == {token, new_token}


def _sigstop_leader_past_its_lease(db: Db, cluster: Cluster) -> tuple[str, int, int]:
    """SIGSTOP the leader until another term recorded a run, 0.5 s more, then SIGCONT and run 2 s.

    Returns (old holder, old token, run_id of the first row recorded in the new term)."""
    holder, token = wait_for_leader(db, min_runs=4)
    stopped = cluster.by_holder(holder)
    wait_mid_second(db)
    stopped.send_signal(signal.SIGSTOP)
    try:
        _, new_token = wait_for(lambda: db.lease() if db.lease()[0] not in ("", holder) else None,
                                LEASE_S + RENEW_S + 5, "a takeover while the leader is stopped", step=0.02)
        first_new = wait_for(lambda: db.rows("SELECT MIN(run_id) FROM job_run WHERE fence_token = ?",
                                             (new_token,))[0][0], 10, "a run in the new term")
        time.sleep(0.5)
    finally:
        stopped.send_signal(signal.SIGCONT)
    time.sleep(1.5)  # the resumed process wakes to due timers, pending retries and a failing renew
    assert stopped.poll() is None, "the resumed leader crashed"
    cluster.stop()
    assert new_token == token + 1
    return holder, token, int(first_new)


@pytest.mark.timeout(90)
def test_sigstopped_leader_records_nothing_with_its_old_token_after_the_new_term_began(
        db: Db, cluster_factory: Callable[..., Cluster]) -> None:
    """Pass: a leader stopped past its lease and resumed after a takeover writes nothing in the old
    term once the new term began (every row with the old fence_token precedes the new term's first
    row; the resumed instance records no run after it), steps down (says so in its log), and no
    (job_id, scheduled_time) runs twice."""
    cluster = cluster_factory(db)
    cluster.start(2)
    holder, token, first_new = _sigstop_leader_past_its_lease(db, cluster)
    runs = db.runs()
    assert duplicates(runs) == []
    assert [r for r in runs if r["fence_token"] == token and r["run_id"] > first_new] == []
    assert [r for r in runs if r["instance_id"] == holder and r["run_id"] > first_new] == []
    assert missing_fire_times(runs) == []
    log = cluster.log(cluster.by_holder(holder))
    assert f"term {token} ran out" in log or "held by another instance" in log, log[-2000:]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the runner bug is the same on every store
def test_sigstopped_leader_cannot_record_a_pending_retry_after_the_new_term_began(
        db: Db, cluster_factory: Callable[..., Cluster]) -> None:
    """Pass: with a job that fails and retries 0.75-1.5 s later, a leader stopped past its lease
    and resumed after a takeover records no retry (fenced or not) once the new term began: its
    pending retries are refused as LeaseLost. Every row carries a fencing token."""
    cluster = cluster_factory(db, PIKO_TEST_FAILOVER_FLAKY="1", PIKO_TEST_FAILOVER_JOBS="1")
    cluster.start(2)
    holder, token, first_new = _sigstop_leader_past_its_lease(db, cluster)
    runs = db.runs()
    assert duplicates(runs) == []
    assert [r for r in runs if r["instance_id"] == holder and r["run_id"] > first_new] == []
    assert all(r["fence_token"] is not None for r in runs), [r for r in runs if r["fence_token"] is None]


@pytest.mark.mysql
@pytest.mark.timeout(120)
def test_database_down_longer_than_the_lease_then_back_resumes_leadership_and_firing_without_loss(
        mysql_dsn: str | None, cluster_factory: Callable[..., Cluster], request: pytest.FixtureRequest) -> None:
    """Pass: MariaDB stopped for lease + 2 s (4 s) under 2 instances, then started -> both processes
    are still running, a leader holds the lease again, runs are recorded after the restart, no
    (job_id, scheduled_time) runs twice and no fire time is missing (the outage's fires are
    recorded late, as runs or MISSED rows: a fire whose claim failed is requeued and offered again)."""
    mysql_server.require_mysql(mysql_dsn)
    if not mysql_server.owns_server():
        pytest.skip("needs the test-started MariaDB sandbox (a PIKO_TEST_MYSQL_DSN server is not stopped)")
    db = Db(str(request.getfixturevalue("mysql_db_dsn")))
    cluster = cluster_factory(db)
    cluster.start(2)
    _, token = wait_for_leader(db, min_runs=6)
    wait_mid_second(db)
    mysql_server.sandbox("stop")
    try:
        time.sleep(LEASE_S + 2.0)
        assert len(cluster.alive()) == 2, "an instance died while the database was down"
    finally:
        mysql_server.sandbox("start")
    restarted_at = datetime.now(timezone.utc).replace(tzinfo=None)
    wait_for(lambda: db.lease()[0] and any(r["scheduled_time"] > restarted_at + timedelta(seconds=1)
                                           for r in tick_runs(db)), 20, "firing resumes after the restart")
    time.sleep(1.5)
    assert len(cluster.alive()) == 2
    holder, new_token = db.lease()
    assert holder and new_token > token
    cluster.stop()
    runs = tick_runs(db)
    assert duplicates(runs) == []
    assert [p.returncode for p in cluster.procs] == [0, 0]
    assert missing_fire_times(runs) == []
