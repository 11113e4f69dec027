"""CPU offload: speed-up over serial, per-item overhead, and event-loop lag.

Cases (piko's CpuManager against a bare concurrent.futures.ProcessPoolExecutor, same
worker count, same chunksize, both warmed up first so start-up is not measured):
- cpu_speedup: serial time / parallel time for a pure-Python CPU-bound function;
- tiny_item_overhead: microseconds per item for a trivial function, map_reduce vs
  ProcessPoolExecutor.map with the same chunksize;
- submit_roundtrip: microseconds per one-at-a-time submit of a trivial call, vs
  loop.run_in_executor on the executor;
- loop_lag_p99: how late a 10 ms timer fires while the CPU-bound run saturates the pool
  (the executor is driven through run_in_executor, as a job would).

Run: python -m benchmarks.bench_offload [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from piko.compute.manager import CpuManager, context_for


def burn(n: int) -> int:
    """Pure-Python CPU work, roughly n * 10 microseconds."""
    total = 0
    for i in range(n * 200):
        total += i % 7
    return total


def tiny(x: int) -> int:
    return x + 1


class _LagProbe:
    """A call_later ticker that records how late each tick fires."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.lateness_s: list[float] = []
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._schedule(loop, loop.time() + self.period_s)

    def _schedule(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._handle = loop.call_at(at, self._tick, loop, at)

    def _tick(self, loop: asyncio.AbstractEventLoop, expected_at: float) -> None:
        now = loop.time()
        self.lateness_s.append(now - expected_at)
        self._schedule(loop, now + self.period_s)

    def stop(self) -> float:
        """p99 lateness in milliseconds."""
        if self._handle is not None:
            self._handle.cancel()
        data = sorted(self.lateness_s) or [0.0]
        return data[min(len(data) - 1, math.ceil(0.99 * len(data)) - 1)] * 1000


async def _timed(run: Callable[[], Awaitable[Any]], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - started)
    return best


def _row(case: str, value: float, unit: str, peer_value: float) -> dict[str, Any]:
    return {
        "bench": "offload",
        "case": case,
        "impl": "piko",
        "value": round(value, 3),
        "unit": unit,
        "peer": "ProcessPoolExecutor.map",
        "peer_value": round(peer_value, 3),
        "ratio": round(value / peer_value, 3) if peer_value else None,
    }


async def _run(quick: bool) -> list[dict[str, Any]]:
    workers = os.cpu_count() or 1
    n_cpu, n_tiny, repeat = (200, 20_000, 2) if quick else (800, 100_000, 3)
    cpu_items = [200] * n_cpu  # ~2 ms each
    tiny_chunksize = 500
    loop = asyncio.get_running_loop()

    started = time.perf_counter()
    for item in cpu_items:
        burn(item)
    serial_s = time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context_for(None))
    async with CpuManager(workers) as cm:
        await cm.warm_up()
        await loop.run_in_executor(None, lambda: list(executor.map(tiny, range(workers * 4))))

        probe = _LagProbe()
        probe.start()
        piko_cpu_s = await _timed(lambda: cm.map_reduce(burn, cpu_items), repeat)
        piko_lag_ms = probe.stop()

        chunk = max(1, math.ceil(len(cpu_items) / (4 * workers)))
        probe = _LagProbe()
        probe.start()
        peer_cpu_s = await _timed(
            lambda: loop.run_in_executor(None, lambda: list(executor.map(burn, cpu_items, chunksize=chunk))),
            repeat,
        )
        peer_lag_ms = probe.stop()
        rows.append(_row("cpu_speedup", serial_s / piko_cpu_s, "x vs serial", serial_s / peer_cpu_s))
        rows.append(_row("loop_lag_p99", piko_lag_ms, "ms", peer_lag_ms))

        items = range(n_tiny)
        piko_tiny_s = await _timed(lambda: cm.map_reduce(tiny, items, chunksize=tiny_chunksize), repeat)
        peer_tiny_s = await _timed(
            lambda: loop.run_in_executor(
                None, lambda: list(executor.map(tiny, items, chunksize=tiny_chunksize))
            ),
            repeat,
        )
        rows.append(
            _row("tiny_item_overhead", piko_tiny_s / n_tiny * 1e6, "us/item", peer_tiny_s / n_tiny * 1e6)
        )

        calls = 200 if quick else 1000
        piko_rt = await _timed(lambda: _sequential(lambda: cm.submit(tiny, 1), calls), 1)
        peer_rt = await _timed(lambda: _sequential(lambda: loop.run_in_executor(executor, tiny, 1), calls), 1)
        row = _row("submit_roundtrip", piko_rt / calls * 1e6, "us/call", peer_rt / calls * 1e6)
        row["peer"] = "loop.run_in_executor(ProcessPoolExecutor)"
        rows.append(row)
    await loop.run_in_executor(None, executor.shutdown)
    for row in rows:
        row["workers"] = workers
    return rows


async def _sequential(call: Callable[[], Awaitable[Any]], times: int) -> None:
    for _ in range(times):
        await call()


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"workers={rows[0]['workers']} cores={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'case':<20} {'piko':>10} {'peer':>10} {'piko/peer':>10}  unit / peer")
    for r in rows:
        print(
            f"{r['case']:<20} {r['value']:>10} {r['peer_value']:>10} {r['ratio']!s:>10}  {r['unit']} / {r['peer']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    _print_table(run(quick=parser.parse_args().quick))
