"""Where a journal commit cycle goes: the 64-producer journal case with Journal._commit and
Journal._write timed (a diagnostic, not a benchmark: the timing wrappers cost a little).

    python benchmarks/profiles/journal_cycle.py [--no-fsync] [-n 50000]

Per commit (medians, us): `out` from the commit's start to the write starting in the I/O
thread, `fsync` the write and fdatasync, `back` from there until the commit's waiters are
resolved on the loop, `loop` from then until the next commit starts (the producers' own work:
encode, append, account) and `loop_cpu` the loop thread's CPU time in that span.
--no-fsync replaces fdatasync with nothing: what the rate would be on an infinitely fast disk.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_writer import CountingSink, make_intents, through_writer  # noqa: E402
from piko.persistence import journal  # noqa: E402


def instrument(marks: list[tuple[str, float]]) -> None:
    now = time.perf_counter
    state: dict[str, float] = {}
    write, commit = journal.Journal._write, journal.Journal._commit

    def timed_write(segment: Any, data: bytes, is_durable: bool) -> None:
        state["write_at"] = now()
        write(segment, data, is_durable)
        state["written_at"] = now()

    async def timed_commit(self: Any) -> None:
        started, cpu = now(), time.thread_time()
        if "done_at" in state:
            marks.extend([("loop", started - state["done_at"]), ("loop_cpu", cpu - state["done_cpu"])])
        await commit(self)
        if "write_at" in state:
            marks.extend([("out", state["write_at"] - started), ("fsync", state["written_at"] - state["write_at"]),
                          ("back", now() - state["written_at"])])
        state.clear()
        state["done_at"], state["done_cpu"] = now(), time.thread_time()

    journal.Journal._write = staticmethod(timed_write)  # type: ignore[method-assign]
    journal.Journal._commit = timed_commit  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("-n", type=int, default=50_000)
    args = parser.parse_args()
    if args.no_fsync:
        journal._sync = lambda fd: None
    marks: list[tuple[str, float]] = []
    instrument(marks)
    intents = make_intents(args.n, "noop")
    for _ in range(3):
        marks.clear()
        rate = await through_writer(intents, 64, CountingSink(), durability="journal")
        parts = {k: statistics.median(v for name, v in marks if name == k) * 1e6
                 for k in ("out", "fsync", "back", "loop", "loop_cpu")}
        print(f"{rate:,.0f} intents/s; per commit (median us): "
              + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))


if __name__ == "__main__":
    asyncio.run(main())
