"""Pieces of a fire across real processes (3 instances, cluster execution, SQLite and MariaDB).

Judged by the effects table (its unique key catches a second execution of a piece, whoever
ran it) and by job_run. Each test states its pass criterion in its docstring.
"""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.test_cluster import STORE_KINDS, Effects, Fleet, count, pid_of
from tests.test_failover import ROOT, Db, wait_for

JOBS = ROOT / "tests" / "fixtures" / "pieces_jobs.py"


@pytest.fixture(params=STORE_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db(str(tmp_path / "piko.db"))
    return Db(str(request.getfixturevalue("mysql_db_dsn")))


@pytest.fixture
def effects(db: Db, tmp_path: Path) -> Effects:
    return Effects(db, tmp_path)


@pytest.fixture
def fleet_of(db: Db, effects: Effects, tmp_path: Path) -> Iterator[type[Fleet]]:
    made: list[Fleet] = []

    def make(**env: str) -> Fleet:
        fleet = Fleet(db, effects, tmp_path, jobs=JOBS, **env)
        made.append(fleet)
        return fleet

    try:
        yield make  # type: ignore[misc]
    finally:
        for fleet in made:
            fleet.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_broadcast_runs_once_per_live_instance_and_shards_spread_and_retry_alone(
        fleet_of: type[Fleet], db: Db, effects: Effects) -> None:
    """Pass: with 2 `piko run` + 1 `piko worker` live, a broadcast fire (after all three beat) ran
    exactly once on each of the 3 instances; an 8-shard fire ran its shards on >= 2 instances,
    each shard once (effects), shard 5 as FAILED then SUCCESS, the others one SUCCESS row each,
    and the fire is SUCCESS; no side effect twice."""
    fleet = fleet_of(PIKO_TEST_PIECES="shapes", PIKO_WORKER_CONCURRENCY="6")  # 8 shards cannot all fit on one
    for kind in ("run", "run", "worker"):
        fleet.start(kind)
    wait_for(lambda: len(db.rows("SELECT instance_id FROM piko_instance")) >= 3, 30, "three instances")
    since = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=2)  # all three live by then
    wait_for(lambda: _done_fires(db, "scan", since) >= 1 and _done_fires(db, "refresh", since) >= 1, 40,
             "a sharded and a broadcast fire after all instances started")
    fleet.stop()
    assert effects.rows("SELECT * FROM dupes") == []
    runs = db.rows("SELECT job_id, scheduled_time, status, instance_id, attempt, parent_run_id FROM job_run")
    fire = min(r[1] for r in runs if r[0] == "refresh" and r[2] == "SUCCESS" and _naive(r[1]) >= since)
    copies = [r for r in runs if r[0].startswith("refresh[@") and r[1] == fire]
    assert len(copies) == 3 and {r[2] for r in copies} == {"SUCCESS"}
    assert sorted(r[3] for r in copies) == sorted(r[0][len("refresh[@"):-1] for r in copies)  # each on its own
    fire = min(r[1] for r in runs if r[0] == "scan" and r[2] == "SUCCESS" and _naive(r[1]) >= since)
    shards = [r for r in runs if r[0].startswith("scan[") and r[1] == fire]
    by_slot: dict[str, list[str]] = defaultdict(list)
    for r in sorted(shards, key=lambda r: r[4]):
        by_slot[r[0]].append(r[2])
    assert by_slot.pop("scan[5/8]") == ["FAILED", "SUCCESS"]
    assert by_slot == {f"scan[{i}/8]": ["SUCCESS"] for i in range(8) if i != 5}
    assert len({r[3] for r in shards}) >= 2, "the shards all ran on one instance"
    done = Counter(r[0] for r in effects.rows("SELECT job_id FROM effects") if r[0].startswith("scan["))
    assert set(done.values()) == {1}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_1000_item_map_survives_kill_9_of_its_parents_instance_and_redoes_no_finished_item(
        fleet_of: type[Fleet], db: Db, effects: Effects) -> None:
    """Pass: `bigmap` maps 1,000 items (0.1 s each, 60 at a time) over 3 instances; its parent's
    instance is killed with SIGKILL when >= 150 items are done; another instance re-runs the parent,
    which returns all 1,000 results complete and in order; every item that was SUCCESS before the
    kill has exactly one side effect (not run again), every item has exactly one SUCCESS row, and
    the only second executions are of items that were RUNNING on the killed instance."""
    start_at = datetime.now(timezone.utc) + timedelta(seconds=6)
    fleet = fleet_of(PIKO_TEST_PIECES="map", PIKO_TEST_MAP_AT=start_at.isoformat(), PIKO_TEST_MAP_ITEMS="1000")
    for kind in ("run", "run", "worker"):
        fleet.start(kind)
    wait_for(lambda: count(db, "SUBSTR(job_id, 1, 9) = 'per_item[' AND status = 'SUCCESS'") >= 150, 60, "150 items done",
             step=0.02)
    parent = db.rows("SELECT instance_id FROM job_run WHERE job_id = 'bigmap' AND status = 'RUNNING'")
    assert parent, "the parent is not running"
    victim = next(p for _, p, _ in fleet.procs if p.pid == pid_of(parent[0][0]))
    fleet.kill(victim, signal.SIGKILL)
    # what the killed instance was running (its rows may be ABANDONED already: a dead local pid is seen at once)
    in_flight = {r[0] for r in db.rows(f"SELECT job_id FROM job_run WHERE SUBSTR(job_id, 1, 9) = 'per_item[' "
                                       f"AND status IN ('RUNNING', 'ABANDONED') AND instance_id = '{parent[0][0]}'")}
    done_before = {r[0] for r in db.rows("SELECT job_id FROM job_run WHERE SUBSTR(job_id, 1, 9) = 'per_item[' "
                                         "AND status = 'SUCCESS'")}
    wait_for(lambda: effects.rows("SELECT scheduled_time FROM effects WHERE job_id = 'bigmap-result'"), 90,
             "the re-run parent's results")
    fleet.stop()
    assert effects.rows("SELECT scheduled_time FROM effects WHERE job_id = 'bigmap-result'") == [("ok",)]
    assert [r[0] for r in db.rows("SELECT status FROM job_run WHERE job_id = 'bigmap' ORDER BY run_id")][-1] \
        == "SUCCESS"
    items = db.rows("SELECT job_id, status FROM job_run WHERE SUBSTR(job_id, 1, 9) = 'per_item['")
    successes = Counter(job_id for job_id, status in items if status == "SUCCESS")
    assert len(successes) == 1000 and set(successes.values()) == {1}
    dupes = {r[0] for r in effects.rows("SELECT job_id FROM dupes")}
    assert not dupes & done_before, sorted(dupes & done_before)[:5]
    assert dupes <= in_flight, sorted(dupes - in_flight)[:5]
    assert len(effects.rows("SELECT job_id FROM effects WHERE SUBSTR(job_id, 1, 9) = 'per_item['")) == 1000


def _naive(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value)).replace(tzinfo=None)


def _done_fires(db: Db, job_id: str, since: datetime) -> int:
    return sum(1 for (at,) in db.rows(f"SELECT scheduled_time FROM job_run WHERE job_id = '{job_id}' "
                                      "AND status = 'SUCCESS'") if _naive(at) >= since)
