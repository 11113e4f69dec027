"""Write path: intents/s through the PersistenceWriter against a bare asyncio.Queue.

Each case moves the same pre-built WriteIntents from producer tasks to a sink and waits
until the sink has all of them; the peer, timed in the same run, moves the same objects
through an asyncio.Queue from the same number of producers to one consumer that gets
them one by one and hands them on in batches (the ceiling: no batching policy, no
accounting, no disk). Cases:
- noop sink: memory durability, a sink that does nothing;
- sqlite sink: memory durability, SqlSink upserting into a real SQLite file via SqliteStore;
- journal, noop sink: journal durability (group-committed fsync before enqueue returns),
  with 64 producers so group commit has company; `vs_memory` is its cost against memory mode.

    python benchmarks/bench_writer.py [--quick]
    python benchmarks/bench_writer.py --case journal64 [-n 50000]   # one case, no peer: for profiling
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from piko.persistence.intent import WriteIntent  # noqa: E402
from piko.persistence.sink_base import ResultSink  # noqa: E402
from piko.persistence.sinks import SQLITE_TABLE_DDL, SqlSink  # noqa: E402
from piko.persistence.writer import PersistenceWriter  # noqa: E402
from piko.store.sqlite import SqliteStore  # noqa: E402

BATCH = 500


class CountingSink(ResultSink):
    def __init__(self, name: str = "noop") -> None:
        super().__init__(name)
        self.count = 0

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        self.count += len(batch)


def make_intents(n: int, sink: str) -> list[WriteIntent]:
    return [WriteIntent(sink, str(i), {"i": i, "name": f"item-{i}"}, "bench", 1, None) for i in range(n)]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[p::parts] for p in range(parts)]


async def queue_peer(intents: list[WriteIntent], producers: int, write: Callable[[list[Any]], Awaitable[None]]) -> float:
    """The ceiling: producers -> asyncio.Queue -> one consumer writing batches of BATCH."""
    queue: asyncio.Queue[WriteIntent] = asyncio.Queue(maxsize=10_000)

    async def produce(items: list[WriteIntent]) -> None:
        for item in items:
            await queue.put(item)

    async def consume(total: int) -> None:
        batch: list[WriteIntent] = []
        for _ in range(total):
            batch.append(await queue.get())
            if len(batch) >= BATCH:
                await write(batch)
                batch = []
        if batch:
            await write(batch)

    started = time.perf_counter()
    await asyncio.gather(consume(len(intents)), *(produce(part) for part in split(intents, producers)))
    return len(intents) / (time.perf_counter() - started)


async def through_writer(intents: list[WriteIntent], producers: int, sink: ResultSink,
                         durability: str = "memory") -> float:
    with tempfile.TemporaryDirectory() as spill_dir:
        writer = PersistenceWriter(spill_dir=spill_dir, durability=durability, batch_size=BATCH)
        writer.register_sink(sink)
        await writer.start()

        async def produce(items: list[WriteIntent]) -> None:
            for item in items:
                await writer.enqueue(item)

        started = time.perf_counter()
        await asyncio.gather(*(produce(part) for part in split(intents, producers)))
        await writer.flush(timeout=600)
        rate = len(intents) / (time.perf_counter() - started)
        await writer.stop()
    return rate


async def with_sqlite(run: Callable[[SqlSink], Awaitable[float]]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        with sqlite3.connect(db) as conn:
            conn.execute(SQLITE_TABLE_DDL.format(table="results"))
        store = SqliteStore(str(db))
        await store.open()
        try:
            return await run(SqlSink("sql", "results", store=store))
        finally:
            await store.close()


def row(case: str, value: float, peer_value: float, **extra: Any) -> dict[str, Any]:
    return {"bench": "writer", "case": case, "impl": "piko", "value": round(value), "unit": "intents/s",
            "peer": "asyncio.Queue", "peer_value": round(peer_value), "ratio": round(value / peer_value, 3),
            **extra}


async def run_async(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 200_000
    repeats = 1 if quick else 3
    noop_intents, sql_intents = make_intents(n, "noop"), make_intents(n, "sql")
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, 0.0), value)

    for _ in range(repeats):  # interleaved, so both sides see the same machine
        async def noop_write(batch: list[Any]) -> None:
            return None

        keep("peer_noop", await queue_peer(noop_intents, 1, noop_write))
        keep("noop", await through_writer(noop_intents, 1, CountingSink()))
        keep("peer_sql", await with_sqlite(lambda s: queue_peer(sql_intents, 1, s.write_batch)))
        keep("sql", await with_sqlite(lambda s: through_writer(sql_intents, 1, s)))
        keep("peer_noop64", await queue_peer(noop_intents, 64, noop_write))
        keep("memory64", await through_writer(noop_intents, 64, CountingSink()))
        keep("journal64", await through_writer(noop_intents, 64, CountingSink(), durability="journal"))
    return [
        row("noop sink", best["noop"], best["peer_noop"]),
        row("sqlite sink", best["sql"], best["peer_sql"]),
        row("memory, 64 producers, noop sink", best["memory64"], best["peer_noop64"]),
        row("journal, 64 producers, noop sink", best["journal64"], best["peer_noop64"],
            vs_memory=round(best["journal64"] / best["memory64"], 3)),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(run_async(quick))


CASES = {  # --case NAME: (producers, durability)
    "noop": (1, "memory"), "memory64": (64, "memory"), "journal64": (64, "journal"),
}


def run_case(case: str, n: int) -> float:
    """One writer case alone (no peer, no repeats): what a profiler should look at."""
    producers, durability = CASES[case]
    return asyncio.run(through_writer(make_intents(n, "noop"), producers, CountingSink(), durability))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", choices=sorted(CASES), help="run one case only and print its rate")
    parser.add_argument("-n", type=int, default=50_000, help="intents for --case")
    args = parser.parse_args()
    if args.case:
        print(f"{args.case}: {run_case(args.case, args.n):,.0f} intents/s")
        return
    rows = run(quick=args.quick)
    print(f"{'case':36} {'piko':>12} {'asyncio.Queue':>14} {'ratio':>7}  note")
    for r in rows:
        note = f"journal/memory = {r['vs_memory']}" if "vs_memory" in r else ""
        print(f"{r['case']:36} {r['value']:>12,} {r['peer_value']:>14,} {r['ratio']:>7}  {note}")
    print("(intents/s, best of the repeats; ratio = piko / asyncio.Queue)")


if __name__ == "__main__":
    main()
