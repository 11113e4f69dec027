"""Reconcile cost at scale: first load and steady-state ticks over 100,000 schedule rows.

Measures the control plane as the app runs it (SQLite store, real kernel, real triggers):
the first tick (read every row, build every trigger, schedule every job), a quiet tick, a
tick after 10 rows were edited by plain SQL, and the memory each schedule costs.

    python -m benchmarks.bench_reconcile [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from piko.clock import SystemClock
from piko.core.configs import ConfigBook
from piko.core.control import ControlPlane
from piko.core.kernel import Kernel
from piko.core.reconcile import ScheduleBook, _cached_trigger
from piko.core.registry import JobSpec, Registry
from piko.store.sqlite import SqliteStore


async def _noop(ctx, scheduled_time):  # pragma: no cover - never called
    return None


def _seed(db: str, n: int) -> None:
    conn = sqlite3.connect(db)
    rows = []
    for i in range(n):
        if i % 2:
            rows.append((f"job{i}", "cron", f"{i % 60} * * * *"))
        else:
            rows.append((f"job{i}", "interval", '{"seconds": %d}' % (60 + i % 600)))
    conn.executemany("INSERT INTO scheduled_job(job_id, schedule_type, schedule_expr) VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()


async def _measure(n: int, ticks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "r.db")
        store = SqliteStore(db)
        await store.open()
        _seed(db, n)
        registry = Registry()
        for i in range(n):
            registry.add(JobSpec(job_id=f"job{i}", func=_noop))
        clock = SystemClock()

        def build() -> tuple[Kernel, ControlPlane]:
            kernel = Kernel(clock, lambda *a: None)
            return kernel, ControlPlane(store=store, registry=registry, clock=clock, book=ScheduleBook(),
                                        configs=ConfigBook(), default_tz="UTC",
                                        schedule=lambda j, t, r: kernel.schedule(j, t), unschedule=kernel.unschedule)

        gc.collect()
        tracemalloc.start()  # memory: a first load under tracemalloc (slow, so not timed)
        base = tracemalloc.get_traced_memory()[0]
        kernel, plane = build()
        await plane.tick()
        gc.collect()
        per_schedule = (tracemalloc.get_traced_memory()[0] - base) / n
        tracemalloc.stop()
        del kernel, plane
        gc.collect()
        _cached_trigger.cache_clear()
        kernel, plane = build()  # time: a cold first load
        t0 = time.perf_counter()
        await plane.tick()
        first_s = time.perf_counter() - t0
        quiet, changed = [], []
        for k in range(ticks):
            t0 = time.perf_counter()
            await plane.tick()
            quiet.append(time.perf_counter() - t0)
            conn = sqlite3.connect(db)
            conn.executemany("UPDATE scheduled_job SET schedule_expr = ? WHERE job_id = ?",
                             [('{"seconds": %d}' % (30 + k), f"job{2 * j + 2 * k}") for j in range(10)])
            conn.commit()
            conn.close()
            t0 = time.perf_counter()
            result = await plane.tick()
            changed.append(time.perf_counter() - t0)
            assert len(result.started) == 10, result
        await store.close()
        return {"first_s": first_s, "quiet_ms": statistics.median(quiet) * 1000,
                "changed_ms": statistics.median(changed) * 1000, "bytes_per_schedule": per_schedule,
                "jobs_scheduled": len(kernel.scheduled_jobs())}


def run(quick: bool = False) -> list[dict]:
    n = 20_000 if quick else 100_000
    m = asyncio.run(_measure(n, 3 if quick else 10))
    case = f"{n:,} schedule rows"
    return [
        {"bench": "reconcile", "case": case, "impl": "piko", "metric": "first load", "value": m["first_s"],
         "unit": "s"},
        {"bench": "reconcile", "case": case, "impl": "piko", "metric": "tick, nothing changed",
         "value": m["quiet_ms"], "unit": "ms"},
        {"bench": "reconcile", "case": case, "impl": "piko", "metric": "tick, 10 rows changed",
         "value": m["changed_ms"], "unit": "ms"},
        {"bench": "reconcile", "case": case, "impl": "piko", "metric": "memory per schedule",
         "value": m["bytes_per_schedule"], "unit": "bytes"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['case']:>22}  {row['metric']:<24} {row['value']:>12.3f} {row['unit']}")
