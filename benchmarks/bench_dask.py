"""CPU offload on Dask: what `cpu_backend = "dask"` costs and gains against the local pool,
on the same machine, the same work, the same number of worker processes.

Cases (the local pool is "piko", a Dask LocalCluster of single-threaded worker processes,
driven through piko's Dask backend, is the "peer"; both warmed up first):
- cpu_speedup: serial time / parallel time for ~2 ms pure-Python items (default chunks);
- tiny_item_overhead: microseconds per item of a trivial function, chunksize 500;
- submit_roundtrip: microseconds per one-at-a-time submit of a trivial call.
Without distributed the Dask side is skipped with a message (pip install 'piko[dask]').
Dask's figures include its scheduler hop; a real cluster adds the network on top.

Run: python -m benchmarks.bench_dask [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.bench_offload import burn, tiny
from piko.compute.manager import CpuManager

PEER = "cpu_backend=dask (LocalCluster, same machine)"
SKIPPED = "distributed is not installed, so the Dask side was not measured: pip install 'piko[dask]'"


async def _best_of(run: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """The shortest of `repeat` runs, in seconds (the least disturbed by other work)."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - started)
    return best


async def _one_by_one(backend: Any, calls: int) -> None:
    for _ in range(calls):
        await backend.submit(tiny, 1)


async def _measure(backend: Any, quick: bool) -> dict[str, float]:
    """Seconds for each case on one backend (same inputs whichever it is)."""
    n_cpu, n_tiny, repeat = (200, 20_000, 2) if quick else (800, 100_000, 3)
    calls = 100 if quick else 300  # Dask's ~10 ms per round trip makes more calls slow, not more exact
    cpu_items, tiny_items = [200] * n_cpu, range(n_tiny)
    await backend.map_reduce(tiny, range(100))  # warm: workers started, modules imported
    return {
        "cpu": await _best_of(lambda: backend.map_reduce(burn, cpu_items), repeat),
        "tiny": await _best_of(lambda: backend.map_reduce(tiny, tiny_items, chunksize=500), repeat) / n_tiny,
        "submit": await _best_of(lambda: _one_by_one(backend, calls), 1) / calls,
    }


def _serial_s(quick: bool) -> float:
    started = time.perf_counter()
    for item in [200] * (200 if quick else 800):
        burn(item)
    return time.perf_counter() - started


async def _on_dask(workers: int, quick: bool) -> dict[str, float]:
    from distributed import LocalCluster

    from piko.compute.dask_backend import DaskExecutor

    async with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, asynchronous=True,
                            dashboard_address=None) as cluster:
        async with DaskExecutor(cluster.scheduler_address) as dask:
            return await _measure(dask, quick)


def _row(case: str, unit: str, local: float, dask: float | None) -> dict[str, Any]:
    row = {"bench": "dask", "case": case, "impl": "piko local pool", "value": round(local, 3), "unit": unit,
           "peer": PEER, "peer_value": None if dask is None else round(dask, 3)}
    if dask is not None and local and dask:  # > 1: the local pool is better by that factor
        row["ratio"] = round(dask / local if unit.startswith("us") else local / dask, 3)
    return row


async def _run(quick: bool) -> list[dict[str, Any]]:
    workers = os.cpu_count() or 1
    serial_s = _serial_s(quick)
    async with CpuManager(workers) as cm:
        await cm.warm_up()
        local = await _measure(cm, quick)
    has_dask = importlib.util.find_spec("distributed") is not None
    dask = await _on_dask(workers, quick) if has_dask else None
    rows = [
        _row("cpu_speedup", "x vs serial", serial_s / local["cpu"], dask and serial_s / dask["cpu"]),
        _row("tiny_item_overhead", "us/item", local["tiny"] * 1e6, dask and dask["tiny"] * 1e6),
        _row("submit_roundtrip", "us/call", local["submit"] * 1e6, dask and dask["submit"] * 1e6),
    ]
    for row in rows:
        row["workers"] = workers
    if dask is None:
        rows.append({"bench": "dask", "case": "Dask LocalCluster", "skipped": SKIPPED})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"workers={rows[0]['workers']} cores={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'case':<20} {'local':>10} {'dask':>10} {'dask/local':>11}  unit")
    for r in rows:
        if "skipped" in r:
            print(f"dask: skipped: {r['skipped']}")
            continue
        dask = r["peer_value"]
        ratio = f"{dask / r['value']:.3g}" if dask is not None and r["value"] else "-"
        print(f"{r['case']:<20} {r['value']:>10} {dask if dask is not None else '-':>10} {ratio:>11}  {r['unit']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    _print_table(run(quick=parser.parse_args().quick))
