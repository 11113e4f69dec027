"""Footprint: import time and resident memory of piko against APScheduler 3.11.

Every figure comes from a fresh interpreter (a subprocess per sample), so nothing is
cached between samples except the OS page cache (warmed by one unmeasured run):
- import time: perf_counter around the import statement alone (interpreter start-up is
  not counted); `import piko` (lazy exports) and `from piko import PikoApp` (what an app
  needs), against `import apscheduler.schedulers.asyncio` and its AsyncIOScheduler;
- RSS after that import (VmRSS from /proc/self/status);
- an idle app with 10,000 interval jobs (every hour, so none fires) scheduled in memory:
  PikoApp on a fresh SQLite file, http and leader off, against an AsyncIOScheduler with
  its memory job store; its start-up time and its RSS once started.

    python benchmarks/bench_footprint.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER = "APScheduler 3.11"
JOBS = 10_000

IMPORTS = [  # (case, piko's statement, the peer's statement)
    ("import piko", "import piko", "import apscheduler.schedulers.asyncio"),
    ("import the app class", "from piko import PikoApp",
     "from apscheduler.schedulers.asyncio import AsyncIOScheduler"),
]

MEASURE_IMPORT = """
import time
t = time.perf_counter()
{stmt}
elapsed = time.perf_counter() - t
print(elapsed * 1000, rss_mib())
"""

RSS = """
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
"""

IDLE_PIKO = """
import asyncio, os, sys, time
from piko import PikoApp
from piko.settings import Settings

async def main():
    app = PikoApp("idle", settings=Settings(db_path=os.path.join(sys.argv[1], "idle.db"), http_enabled=False,
                                            leader_enabled=False, log_level="WARNING"))
    async def handler(ctx, scheduled_time):
        pass
    t = time.perf_counter()
    for i in range({jobs}):
        app.job(f"job{{i}}", interval={{"hours": 1}})(handler)
    await app.start()
    started = time.perf_counter() - t
    assert len(app.kernel.scheduled_jobs()) == {jobs}
    await asyncio.sleep(0.5)
    print(started, rss_mib())
    os._exit(0)

asyncio.run(main())
"""

IDLE_PEER = """
import asyncio, os, time
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

async def handler():
    pass

async def main():
    t = time.perf_counter()
    scheduler = AsyncIOScheduler(timezone="UTC")
    for i in range({jobs}):
        scheduler.add_job(handler, IntervalTrigger(hours=1, timezone="UTC"), id=f"job{{i}}")
    scheduler.start()
    started = time.perf_counter() - t
    assert len(scheduler.get_jobs()) == {jobs}
    await asyncio.sleep(0.5)
    print(started, rss_mib())
    os._exit(0)

asyncio.run(main())
"""


def measure(code: str, *args: str) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; it prints two floats."""
    out = subprocess.run([sys.executable, "-c", RSS + code, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=_env())
    if out.returncode != 0:
        raise RuntimeError(f"footprint child failed: {out.stderr.strip().splitlines()[-1:]}")
    first, second = out.stdout.split()[-2:]
    return float(first), float(second)


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _peer_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("apscheduler") is None


def _row(case: str, metric: str, unit: str, ours: list[float], peer: list[float] | None) -> dict[str, Any]:
    return {"bench": "footprint", "case": case, "metric": metric, "unit": unit, "better": "lower",
            "impl": "piko", "samples": ours, "peer": PEER if peer is not None else None,
            "peer_samples": peer or []}


def import_rows(samples: int, has_peer: bool) -> list[dict[str, Any]]:
    rows = []
    for case, ours_stmt, peer_stmt in IMPORTS:
        measure(MEASURE_IMPORT.format(stmt=ours_stmt))  # warm the page cache and .pyc files
        if has_peer:
            measure(MEASURE_IMPORT.format(stmt=peer_stmt))
        ours, peer = [], []
        for _ in range(samples):  # interleaved, so both see the same machine
            ours.append(measure(MEASURE_IMPORT.format(stmt=ours_stmt)))
            if has_peer:
                peer.append(measure(MEASURE_IMPORT.format(stmt=peer_stmt)))
        for metric, unit, pick in (("import time", "ms", 0), ("RSS after import", "MiB", 1)):
            row = _row(case, metric, unit, [s[pick] for s in ours], [s[pick] for s in peer] if has_peer else None)
            row["note"] = f"`{ours_stmt}` vs `{peer_stmt}`"
            rows.append(row)
    return rows


def idle_rows(samples: int, has_peer: bool, jobs: int = JOBS) -> list[dict[str, Any]]:
    ours, peer = [], []
    for _ in range(samples):
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(measure(IDLE_PIKO.format(jobs=jobs), tmp))
        if has_peer:
            peer.append(measure(IDLE_PEER.format(jobs=jobs)))
    case = f"idle app, {jobs:,} interval jobs"
    note = "piko: SQLite store, schedules written to it on first start; APScheduler: memory job store"
    rows = [_row(case, "start-up", "s", [t for t, _ in ours], [t for t, _ in peer] if has_peer else None),
            _row(case, "RSS", "MiB", [m for _, m in ours], [m for _, m in peer] if has_peer else None)]
    for row in rows:
        row["note"] = note
    return rows


def run(quick: bool = False, repeat: int | None = None) -> list[dict[str, Any]]:
    import_samples = repeat or (3 if quick else 7)
    idle_samples = repeat or (1 if quick else 3)
    has_peer = not _peer_missing()
    if not has_peer:
        print("peer skipped: apscheduler not installed (pip install '.[bench]')")
    return import_rows(import_samples, has_peer) + idle_rows(idle_samples, has_peer)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None, help="fresh interpreters per figure")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import render_table, summarise

    print(render_table(summarise(run(quick=args.quick, repeat=args.repeat))))


if __name__ == "__main__":
    _main()
