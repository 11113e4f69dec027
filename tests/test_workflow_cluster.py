"""A workflow taken over after kill -9 of its instance: 2 `piko run` instances, cluster execution.

Judged by the effects table (unique key per step: a second execution is caught there) and job_run.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.test_cluster import STORE_KINDS, Effects, Fleet, count, fleet_effects, pid_of
from tests.test_failover import ROOT, Db, wait_for

JOBS = ROOT / "tests" / "fixtures" / "workflow_jobs.py"
STEPS = ["start", *(f"part{n}" for n in range(12)), "total"]


@pytest.fixture(params=STORE_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db(str(tmp_path / "piko.db"))
    return Db(str(request.getfixturevalue("mysql_db_dsn")))


@pytest.fixture
def fleet(db: Db, tmp_path: Path) -> Iterator[Fleet]:
    start_at = datetime.now(timezone.utc) + timedelta(seconds=5)
    made = Fleet(db, Effects(db, tmp_path), tmp_path, jobs=JOBS, PIKO_TEST_FLOW_AT=start_at.isoformat(),
                 PIKO_TEST_STEP_S="1.5")
    try:
        yield made
    finally:
        made.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_9_of_the_workflows_instance_mid_run_leaves_a_workflow_another_instance_finishes(
        fleet: Fleet, db: Db) -> None:
    """Pass: the instance running the workflow run is killed with SIGKILL while its 12 parallel
    steps run; the other instance takes the workflow over and it ends SUCCESS with the complete
    upstream results; every step has exactly one SUCCESS row; a step that was SUCCESS before the
    kill ran once (one side effect); only steps running on the killed instance may have run twice."""
    for _ in range(2):
        fleet.start("run")
    wait_for(lambda: count(db, "SUBSTR(job_id, 1, 14) = 'pipeline[step:' AND status = 'RUNNING'") >= 3, 60,
             "parallel steps running", step=0.02)
    parent = db.rows("SELECT instance_id FROM job_run WHERE job_id = 'pipeline' AND status = 'RUNNING'")
    assert parent, "the workflow run is not running"
    victim = next(p for _, p, _ in fleet.procs if p.pid == pid_of(parent[0][0]))
    fleet.kill(victim, signal.SIGKILL)
    in_flight = {r[0] for r in db.rows("SELECT job_id FROM job_run WHERE SUBSTR(job_id, 1, 14) = 'pipeline[step:' "
                                       f"AND status IN ('RUNNING', 'ABANDONED') AND instance_id = '{parent[0][0]}'")}
    done_before = {r[0] for r in db.rows("SELECT job_id FROM job_run WHERE SUBSTR(job_id, 1, 14) = 'pipeline[step:' "
                                         "AND status = 'SUCCESS'")}
    effects = fleet_effects(fleet)
    wait_for(lambda: effects.rows("SELECT scheduled_time FROM effects WHERE job_id = 'pipeline-result'"), 90,
             "the workflow finished by the other instance")
    wait_for(lambda: count(db, "job_id = 'pipeline' AND status = 'SUCCESS'") == 1, 30, "the workflow run SUCCESS")
    fleet.stop()
    assert effects.rows("SELECT scheduled_time FROM effects WHERE job_id = 'pipeline-result'") == [("ok",)]
    statuses = [r[0] for r in db.rows("SELECT status FROM job_run WHERE job_id = 'pipeline' ORDER BY run_id")]
    assert statuses[-1] == "SUCCESS" and "ABANDONED" in statuses
    rows = db.rows("SELECT job_id, status FROM job_run WHERE SUBSTR(job_id, 1, 14) = 'pipeline[step:'")
    successes = Counter(job_id for job_id, status in rows if status == "SUCCESS")
    assert sorted(successes) == sorted(f"pipeline[step:{s}]" for s in STEPS) and set(successes.values()) == {1}
    dupes = {r[0] for r in effects.rows("SELECT job_id FROM dupes")}
    assert not dupes & done_before and dupes <= in_flight, (dupes, in_flight)

