"""Fault test: MariaDB stopped for 15 s under a running instance with runs in flight.

Judged only by what the database recorded against what the handlers did (a side-effect
file): every completed handler has its outcome recorded, no row is left RUNNING after
SIGTERM, and the stateful job's watermark reached the last window it completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests import mysql_server
from tests.test_failover import ROOT, Cluster, Db, cluster_factory, wait_for  # noqa: F401  (a fixture)

OUTAGE_JOBS = ROOT / "tests" / "fixtures" / "outage_jobs.py"
OUTAGE_S = 15.0


def count(db: Db, where: str) -> int:
    found = db.rows(f"SELECT COUNT(*) FROM job_run WHERE {where}")
    return int(found[0][0]) if found else 0  # no table before the first start


def completed(log: Path) -> dict[str, set[datetime]]:
    done: dict[str, set[datetime]] = {"slow": set(), "etl": set()}
    if log.exists():
        for line in log.read_text().splitlines():
            job_id, at = line.split(" ", 1)
            done[job_id].add(datetime.fromisoformat(at).astimezone(timezone.utc).replace(tzinfo=None))
    return done


@pytest.mark.mysql
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_15s_database_outage_with_runs_in_flight_loses_no_outcome(
        mysql_dsn: str | None, cluster_factory: Callable[..., Cluster], request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    """Pass: the server stops while a `slow` run is RUNNING and stays down 15 s; after it is back
    and the instance got SIGTERM, every handler that completed has a SUCCESS row for its time, no
    row is RUNNING, and etl's watermark is the end of the newest window it completed."""
    mysql_server.require_mysql(mysql_dsn)
    if not mysql_server.owns_server():
        pytest.skip("needs the test-started MariaDB sandbox (a PIKO_TEST_MYSQL_DSN server is not stopped)")
    db = Db(str(request.getfixturevalue("mysql_db_dsn")))
    log = tmp_path / "done.log"
    cluster = cluster_factory(db, OUTAGE_JOBS, PIKO_TEST_OUTAGE_LOG=str(log), PIKO_SHUTDOWN_TIMEOUT_S="20",
                              PIKO_LEADER_LEASE_S="30", PIKO_LEADER_RENEW_INTERVAL_S="5")
    cluster.start(1)
    wait_for(lambda: count(db, "status = 'SUCCESS'") >= 4, 30, "the first runs")
    wait_for(lambda: count(db, "job_id = 'slow' AND status = 'RUNNING'"), 10, "a slow run in flight", step=0.01)
    mysql_server.sandbox("stop")
    try:
        time.sleep(OUTAGE_S)
        assert cluster.alive(), "the instance died while the database was down"
    finally:
        mysql_server.sandbox("start")
    back_at = time.time()
    wait_for(lambda: count(db, "status = 'SUCCESS' AND job_id = 'slow' AND finished_at > FROM_UNIXTIME(?)"
                     .replace("?", str(int(back_at)))), 30, "runs recorded after the outage")
    time.sleep(6.0)  # runs after the outage, and the last retry of what waited (backoff capped at 5 s)
    cluster.stop()
    assert [p.returncode for p in cluster.procs] == [0], cluster.log(cluster.procs[0])[-3000:]
    rows = db.rows("SELECT job_id, scheduled_time, status FROM job_run")
    assert not [r for r in rows if r[2] == "RUNNING"], cluster.log(cluster.procs[0])[-3000:]
    done = completed(log)
    succeeded = {(job_id, at) for job_id, at, status in rows if status == "SUCCESS"}
    lost = sorted((job_id, at) for job_id in done for at in done[job_id] if (job_id, at) not in succeeded)
    assert lost == [], cluster.log(cluster.procs[0])[-3000:]
    mark = db.rows("SELECT last_data_time FROM scheduled_job WHERE job_id = 'etl'")[0][0]
    assert mark == max(done["etl"])
