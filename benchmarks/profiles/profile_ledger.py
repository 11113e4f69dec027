"""Where a recorded run's time goes: the store thread, and the event loop, profiled apart.

    python benchmarks/profiles/profile_ledger.py store    # SqliteStore alone: claim + finish, bursts of 1,000
    python benchmarks/profiles/profile_ledger.py loop     # PikoApp on the memory store: the loop's work per run
    python benchmarks/profiles/profile_ledger.py e2e      # PikoApp on SQLite: CPU per recorded run, lateness

`store` profiles the SQLite worker thread (cProfile sees one thread: it is started inside the
thread); `loop` runs N interval jobs every second on MemoryStore, so what remains is the
runner's own Python per run (kernel, claim, task, handler call, metrics, finish); `e2e` is the
benchmark's end-to-end set-up without a profiler (a profiler slows the loop enough to make the
claims time out). The figures in run-ledger.txt were made with these commands.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import math
import os
import pstats
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def profile_store(runs: int, top: int) -> None:
    from benchmarks import bench_store
    from piko.store.sqlite import worker

    profiles: list[cProfile.Profile] = []
    original = worker.SqliteWorker._run

    def profiled(self: Any) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    worker.SqliteWorker._run = profiled  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        rate = asyncio.run(bench_store._sqlite_store(os.path.join(tmp, "p.db"), runs, 1000))
    print(f"SqliteStore, {runs:,} runs (claim + finish, bursts of 1,000), profiled: {rate:,.0f} runs/s")
    pstats.Stats(profiles[0]).sort_stats("tottime").print_stats(top)


async def _app_runs(jobs: int, seconds: float, store: Any, profile: cProfile.Profile | None) -> dict[str, float]:
    from piko import PikoApp
    from piko.settings import Settings

    starts: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_path=os.path.join(tmp, "p.db"), http_enabled=False, leader_enabled=False,
                            misfire_grace_s=600, coalesce=False, log_level="WARNING", poll_interval_s=60)
        app = PikoApp("profile", settings=settings, store=store)
        start = datetime.fromtimestamp(math.floor(time.time()) - 60, timezone.utc).isoformat()

        async def handler(ctx: Any, scheduled_time: datetime) -> None:
            starts.append((scheduled_time.timestamp(), time.time()))

        for i in range(jobs):
            app.job(f"job{i}", interval={"seconds": 1, "start_date": start})(handler)
        await app.start()
        await asyncio.sleep(math.ceil(time.time()) + 0.9 - time.time())  # just before a burst
        first, cpu = len(starts), time.process_time()
        if profile is not None:
            profile.enable()
        await asyncio.sleep(seconds)
        if profile is not None:
            profile.disable()
        cpu, done = time.process_time() - cpu, starts[first:]
        late = sorted((at - scheduled) * 1000 for scheduled, at in done)
        await app.stop()
    return {"runs": len(done), "cpu_us": cpu * 1e6 / max(1, len(done)), "p50": late[len(late) // 2],
            "p99": late[int(len(late) * 0.99)]}


def profile_loop(jobs: int, seconds: float, top: int) -> None:
    from piko.store.memory.store import MemoryStore

    profile = cProfile.Profile()
    got = asyncio.run(_app_runs(jobs, seconds, MemoryStore(), None))
    print(f"memory store, {jobs:,} interval jobs, {seconds:.0f} s, no profiler: {got['runs']:,} runs, "
          f"CPU {got['cpu_us']:.1f} us per run, lateness p50 {got['p50']:.0f} ms, p99 {got['p99']:.0f} ms")
    asyncio.run(_app_runs(jobs, seconds, MemoryStore(), profile))
    pstats.Stats(profile).sort_stats("tottime").print_stats(top)


def end_to_end(jobs: int, seconds: float) -> None:
    got = asyncio.run(_app_runs(jobs, seconds, None, None))
    print(f"SQLite, {jobs:,} interval jobs, {seconds:.0f} s: {got['runs']:,} runs, CPU {got['cpu_us']:.1f} us "
          f"per recorded run (loop and store thread), lateness p50 {got['p50']:.0f} ms, p99 {got['p99']:.0f} ms")


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("store", "loop", "e2e"))
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=30_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.what == "store":
        profile_store(args.runs, args.top)
    elif args.what == "loop":
        profile_loop(args.jobs, args.seconds, args.top)
    else:
        end_to_end(args.jobs, args.seconds)
    os._exit(0)  # no tear-down of a backlog


if __name__ == "__main__":
    _main()
