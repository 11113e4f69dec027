"""The run ledger's ceiling: claim + finish per run through a store alone (no kernel, runner or handler).

Bursts of B claims (one lock row and one RUNNING row each, one store call), then their B
finishes (one store call), as the runner sends them under load; runs/s = runs / wall time.
- SQLite: piko's SqliteStore on a fresh file; the ceiling beside it is SQLite itself writing
  the same rows into the same schema (same indexes, WAL, synchronous=NORMAL) with prepared
  `executemany` and no piko code: what the engine allows on this machine, so the gap between
  the two is piko's Python per run;
- MySQL: piko's MysqlStore, one instance, on MariaDB (bench_mysql.py's server: a DSN from the
  environment or a throwaway sandbox), else a row saying skipped and why.

    python benchmarks/bench_store.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASE = "claim + finish, bursts of {burst:,}"
RAW = "SQLite alone: the same rows, prepared executemany"


async def _through_store(store: Any, runs: int, burst: int) -> float:
    from piko.core.types import RunClaim, RunFinish, RunStatus

    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    began = time.perf_counter()
    for k in range(runs // burst):
        at = base + timedelta(seconds=k)
        ids = await store.claim_runs([RunClaim(f"job{i}", at, RunStatus.RUNNING, at, "bench") for i in range(burst)])
        await store.finish_runs([RunFinish(run_id, RunStatus.SUCCESS, at, duration_s=0.001) for run_id in ids])
    return runs / (time.perf_counter() - began)


async def _sqlite_store(path: str, runs: int, burst: int) -> float:
    from piko.store.sqlite.store import SqliteStore

    store = SqliteStore(path)
    try:
        await store.open()  # creates the file and the schema
        return await _through_store(store, runs, burst)
    finally:
        await store.close()


def _raw_sqlite(path: str, runs: int, burst: int) -> float:
    """The same lock and run rows, written by sqlite3 alone into the schema piko created."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    first = (conn.execute("SELECT COALESCE(MAX(run_id), 0) FROM job_run").fetchone()[0]) + 1
    began = time.perf_counter()
    for k in range(runs // burst):
        at = f"2027-01-01 {k // 3600:02}:{k // 60 % 60:02}:{k % 60:02}.000000"
        rows = [(f"job{i}", at, at) for i in range(burst)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO job_lock (job_id, scheduled_time, instance_id, locked_at) "
                         "VALUES (?, ?, 'bench', ?)", rows)
        conn.executemany("INSERT INTO job_run (job_id, scheduled_time, status, attempt, kind, instance_id, "
                         "started_at) VALUES (?, ?, 'RUNNING', 1, 'schedule', 'bench', ?)", rows)
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE job_run SET status = 'SUCCESS', finished_at = ?, duration_s = 0.001 "
                         "WHERE run_id = ? AND status = 'RUNNING'", [(at, first + i) for i in range(burst)])
        conn.execute("COMMIT")
        first += burst
    took = time.perf_counter() - began
    conn.close()
    return runs / took


async def _mysql_store(dsn: str, runs: int, burst: int) -> float:
    from piko.store.mysql.store import MysqlStore

    store = MysqlStore(dsn)
    try:
        await store.open()
        return await _through_store(store, runs, burst)
    finally:
        await store.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    from benchmarks.bench_mysql import fresh_database, mysql_server

    runs, burst = (10_000 if quick else 30_000), 1000
    case = CASE.format(burst=burst)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="piko-bench-store-") as tmp:
        piko = asyncio.run(_sqlite_store(os.path.join(tmp, "piko.db"), runs, burst))
        asyncio.run(_sqlite_store(os.path.join(tmp, "raw.db"), burst, burst))  # the same schema, for the raw run
        raw = _raw_sqlite(os.path.join(tmp, "raw.db"), runs, burst)
        rows.append({"bench": "store", "case": case + " (SQLite)", "metric": "runs recorded/s", "unit": "runs/s",
                     "better": "higher", "samples": [round(piko)], "peer": None, "peer_samples": [],
                     "ceiling": RAW, "ceiling_samples": [round(raw)],
                     "note": "piko's SqliteStore vs sqlite3 writing the same rows into the same schema"})
        with mysql_server(Path(tmp)) as (dsn, source):
            if dsn is None:
                rows.append({"bench": "store", "case": case + " (MySQL, one instance)", "skipped": source})
                return rows
            with fresh_database(dsn) as db:
                mysql = asyncio.run(_mysql_store(db, runs, burst))
    rows.append({"bench": "store", "case": case + " (MySQL, one instance)", "metric": "runs recorded/s",
                 "unit": "runs/s", "better": "higher", "samples": [round(mysql)], "peer": None, "peer_samples": [],
                 "note": f"piko's MysqlStore on MariaDB ({source})"})
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 runs instead of 30,000")
    args = parser.parse_args()
    for row in run(quick=args.quick):
        print(row)


if __name__ == "__main__":
    _main()
