"""A 500-step fan-out workflow in one process: how long it takes and how late the loop runs.

`fan` = `start` -> 500 parallel steps -> `end` (each waits 0.2 s and returns a number; `end` sums its 500
upstream results), run once in leader mode on a SQLite file, every step a recorded run. While it
runs, a probe task sleeps 10 ms at a time and records how late it wakes: the event loop's lag,
the figure that says whether the scheduler stays responsive (the issue's bound: p99 < 50 ms).
No peer: none of the compared schedulers has workflows.

    python benchmarks/bench_workflow.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piko import PikoApp  # noqa: E402
from piko.settings import Settings  # noqa: E402


def build(path: str, steps: int) -> PikoApp:
    app = PikoApp("bench-wf", settings=Settings(db_path=path, http_enabled=False, leader_enabled=False,
                                                 log_level="WARNING", poll_interval_s=3600))
    wf = app.workflow("fan")

    @wf.step("start")
    async def start(ctx: dict[str, Any], t: Any) -> int:
        return 1

    for n in range(steps):
        async def part(ctx: dict[str, Any], t: Any, n: int = n) -> int:
            await asyncio.sleep(0.2)  # I/O-bound work: the steps overlap
            return n

        wf.step(f"p{n}", after=["start"])(part)

    @wf.step("end", after=[f"p{n}" for n in range(steps)])
    async def end(ctx: dict[str, Any], t: Any) -> int:
        return sum(ctx["upstream"].values())

    return app


async def measure(steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="piko-bench-wf-") as tmp:
        app = build(str(Path(tmp) / "piko.db"), steps)
        lags: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                began = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(max(0.0, time.perf_counter() - began - 0.01))

        async with app:
            task = asyncio.create_task(probe())
            began = time.perf_counter()
            outcome = await app.run_job("fan")
            took = time.perf_counter() - began
            stop.set()
            await task
        assert outcome.status.value == "SUCCESS", outcome
    lags.sort()
    return {"seconds": round(took, 3), "steps_per_s": round((steps + 2) / took, 1),
            "lag_p50_ms": round(statistics.median(lags) * 1000, 2),
            "lag_p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000, 2),
            "lag_max_ms": round(lags[-1] * 1000, 2)}


def run(quick: bool = False) -> list[dict[str, Any]]:
    steps = 200 if quick else 500
    got = asyncio.run(measure(steps))
    return [{"bench": "workflow", "case": f"{steps}-step fan-out, leader mode, SQLite", "impl": "piko",
             "metric": "loop lag p99", "value": got["lag_p99_ms"], "unit": "ms", "better": "lower", **got}]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 steps")
    args = parser.parse_args()
    for row in run(quick=args.quick):
        print(row)


if __name__ == "__main__":
    _main()
